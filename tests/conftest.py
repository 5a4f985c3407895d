from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import aioboto3
import pytest

from tests.moto_process import MotoServer

# Tests never touch a real account: fixed fake credentials and region.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A real moto server process for the whole session; tests isolate by table-name prefix."""
    server = MotoServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    """A unique name prefix so tests sharing one moto server never see each other's tables."""
    return f"t{uuid.uuid4().hex[:8]}-"


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[dict[str, object]]:
    """Raw aioboto3 clients against the moto server, for test setup and assertions."""
    session = aioboto3.Session(region_name="us-east-1")
    async with (
        session.client("dynamodb", endpoint_url=moto_url) as ddb,
        session.client("dynamodbstreams", endpoint_url=moto_url) as streams,
        session.client("sqs", endpoint_url=moto_url) as sqs,
        session.client("sns", endpoint_url=moto_url) as sns,
        session.client("events", endpoint_url=moto_url) as events,
    ):
        yield {"dynamodb": ddb, "dynamodbstreams": streams, "sqs": sqs, "sns": sns, "events": events}
