"""moto's in-process mock (``moto.mock_aws``) for the SDK this worker uses, aioboto3.

moto answers botocore's ``before-send`` event with a response whose body is plain bytes;
aiobotocore awaits the body, so moto's answer cannot be used as it is. :func:`attach`
puts an adapter in its place on one aioboto3 session: the same moto backend answers,
wrapped in aiobotocore's response type. Nothing leaves the process and no server is started.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import aioboto3
from aiobotocore.awsrequest import AioAWSResponse
from moto import mock_aws
from moto.core.models import botocore_stubber


class _Body:
    """The raw body aiobotocore reads from (``await raw.read()``)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def read(self, *args: Any) -> bytes:
        return self._body


def _answer(request: Any, **kwargs: Any) -> AioAWSResponse | None:
    if not botocore_stubber.enabled:  # outside mock_aws(): let the request go out as usual
        return None
    response = botocore_stubber.process_request(request)
    if response is None:
        return None
    status, headers, body = response
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body or b"")
    return AioAWSResponse(request.url, status, headers, _Body(data))


def attach(session: aioboto3.Session) -> None:
    """Route every client made from ``session`` afterwards to moto's in-process backend.

    moto's own handler is taken off: every ``before-send`` handler runs (the first answer
    wins), so leaving it on would apply each request twice (an ``ADD`` would add twice).
    """
    events = session._session.get_component("event_emitter")
    events.unregister("before-send", botocore_stubber)
    events.register_first("before-send", _answer)


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
        with mock_aws():
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
