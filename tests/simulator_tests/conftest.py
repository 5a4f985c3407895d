from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aioboto3
import pytest
from botocore.config import Config

from worker.local.simulator import Simulator

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

# No SDK retries: injected errors must surface as ClientError on the first attempt.
# NB: botocore's legacy ``max_attempts`` counts *retries* (max_attempts=1 -> 2 attempts);
# ``total_max_attempts`` counts attempts, so 1 means exactly one request.
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=5)


@pytest.fixture
def sim_knobs() -> dict[str, Any]:
    """Override in a test module (or parametrize) to construct the simulator differently."""
    return {}


@pytest.fixture
def sim(sim_knobs: dict[str, Any]) -> Iterator[Simulator]:
    simulator = Simulator(**sim_knobs).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
async def streams(sim: Simulator) -> AsyncIterator[Any]:
    session = aioboto3.Session(region_name="us-east-1")
    async with session.client("dynamodbstreams", endpoint_url=sim.url, config=NO_RETRIES) as client:
        yield client


@pytest.fixture
async def ddb(sim: Simulator) -> AsyncIterator[Any]:
    session = aioboto3.Session(region_name="us-east-1")
    async with session.client("dynamodb", endpoint_url=sim.url, config=NO_RETRIES) as client:
        yield client
