from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import aioboto3
import pytest

from tests.endpoints.selection import EndpointTally, endpoints_for, start_dynamodb_local
from worker.local.moto_process import MotoServer

if TYPE_CHECKING:
    from bench.cluster import Cluster
    from worker.local.simulator import Simulator

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "moto_only(reason): runs on moto only (the reason names the moto-only service or behaviour)"
    )
    config.addinivalue_line("markers", "dynamodb_local_only(reason): runs on DynamoDB Local only")
    config.pluginmanager.register(EndpointTally(), "endpoint-tally")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that asks for ``endpoint_name`` (directly or through ``endpoint_url``/``aws``)
    runs once per endpoint its suite supports (tests/endpoints/selection.py)."""
    if "endpoint_name" in metafunc.fixturenames:
        metafunc.parametrize("endpoint_name", endpoints_for(metafunc), indirect=True, scope="session")


@pytest.fixture(scope="session")
def endpoint_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def dynamodb_local_url() -> Iterator[str]:
    """One DynamoDB Local process (in memory, shared database) for the whole session,
    installed on first use; tests isolate by table-name prefix, as on moto."""
    server = start_dynamodb_local()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def endpoint_url(endpoint_name: str, request: pytest.FixtureRequest) -> str:
    """The DynamoDB endpoint of this run of the test: moto or DynamoDB Local."""
    return str(request.getfixturevalue("moto_url" if endpoint_name == "moto" else "dynamodb_local_url"))


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
async def aws(endpoint_url: str) -> AsyncIterator[dict[str, object]]:
    """Raw aioboto3 clients against the test's endpoint, for test setup and assertions
    (sqs, sns and events exist on moto only)."""
    session = aioboto3.Session(region_name="us-east-1")
    async with (
        session.client("dynamodb", endpoint_url=endpoint_url) as ddb,
        session.client("dynamodbstreams", endpoint_url=endpoint_url) as streams,
        session.client("sqs", endpoint_url=endpoint_url) as sqs,
        session.client("sns", endpoint_url=endpoint_url) as sns,
        session.client("events", endpoint_url=endpoint_url) as events,
    ):
        yield {"dynamodb": ddb, "dynamodbstreams": streams, "sqs": sqs, "sns": sns, "events": events}


@pytest.fixture
def cluster(endpoint_url: str, sim: "Simulator", tmp_path: Path, prefix: str) -> Iterator["Cluster"]:
    """`stream-worker` processes over the test module's ``sim`` fixture (a stream simulator
    started with that module's seed and knobs), leases on ``endpoint_url``; all stopped after."""
    from bench.cluster import running_cluster

    with running_cluster(endpoint_url, sim, tmp_path, prefix) as running:
        yield running
