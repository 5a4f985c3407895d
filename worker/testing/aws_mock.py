"""moto's in-process mock (``moto.mock_aws``) for the SDK this worker uses, aioboto3.

moto answers botocore's ``before-send`` event with a botocore response whose body is plain
bytes; aiobotocore awaits the body, so moto's answer cannot be used by an async client as
it is. While :func:`in_process_aws` is active, moto builds its responses with
:class:`_DualResponse` instead, whose body is bytes that can also be awaited: every client,
aioboto3 or boto3, made before or during the mock, by the worker or by a handler (an SQS
client of its own), gets moto's answer. Each request is still answered once, by moto's own
handler. Nothing leaves the process and no server is started.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Generator, Iterator
from unittest import mock

from botocore.awsrequest import AWSResponse
from moto import mock_aws


class _Body(bytes):
    """Response bytes that aiobotocore may also ``await``."""

    def __await__(self) -> Generator[Any, None, bytes]:
        return self._itself().__await__()

    async def _itself(self) -> bytes:
        return bytes(self)


class _DualResponse(AWSResponse):  # type: ignore[misc]  # botocore ships no type hints
    @property
    def content(self) -> bytes:
        return _Body(super().content)


@contextlib.contextmanager
def in_process_aws(region: str) -> Iterator[None]:
    """moto's mock for the duration, with an environment that cannot reach a real endpoint:
    no ``AWS_ENDPOINT_URL`` (a local endpoint would bypass the mock), no ``AWS_PROFILE``
    (a profile missing here would fail the SDK's credential lookup), fake credentials (moto
    sets them), and ``region`` as the default region."""
    names = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_PROFILE", None)
    os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"] = region
    try:
        with mock_aws(), mock.patch("moto.core.botocore_stubber.AWSResponse", _DualResponse):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
