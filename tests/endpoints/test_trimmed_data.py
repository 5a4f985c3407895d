"""TrimmedDataAccessException: quiet at TRIM_HORIZON (nothing can be lost), loud behind it.

DynamoDB Local raises it on a fresh shard read from TRIM_HORIZON whenever writes to another
table moved its database-wide sequence counter past the shard's start (reproduced below on
the real thing); the stream simulator raises it on demand for the two cases the reader
must tell apart.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aioboto3
import pytest
from botocore.config import Config as BotoConfig
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from worker.local.simulator import Simulator
from worker.config import ReaderConfig
from worker.retrieval.reader import TRIM_HORIZON, ShardReader, StartPosition

pytestmark = pytest.mark.integration

NO_RETRIES = BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"})


def counted(name: str, stream: str) -> float:
    return REGISTRY.get_sample_value(f"stream_worker_{name}_total", {"stream": stream}) or 0.0


def trim_events(logs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(line["log_level"], line["event"]) for line in logs if "trim" in line["event"]]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(seed=3).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
async def sim_streams(sim: Simulator) -> AsyncIterator[Any]:
    async with aioboto3.Session(region_name="us-east-1").client(
        "dynamodbstreams", endpoint_url=sim.url, config=NO_RETRIES
    ) as client:
        yield client


def sim_reader(sim: Simulator, client: Any, table: str, start: StartPosition) -> ShardReader:
    arn = sim.stream_arn(table)
    shard_id = sim.shards(table)[0]["ShardId"]
    return ShardReader(client, stream_arn=arn, shard_id=shard_id, stream_label=table, start=start,
                       config=ReaderConfig())


async def test_trimmed_at_the_horizon_is_retried_quietly(sim: Simulator, sim_streams: Any) -> None:
    table = f"h{uuid.uuid4().hex[:6]}"
    sim.create_stream(table)
    sim.put_record(table, {"pk": "a"}, {"pk": "a"})
    reader = sim_reader(sim, sim_streams, table, TRIM_HORIZON)
    sim.fail_next(2, "TrimmedDataAccessException", operation="GetRecords")
    trimmed, at_horizon = counted("trimmed_data", table), counted("trimmed_at_horizon", table)

    with capture_logs() as logs:
        page = await reader.read_page()

    assert [r["dynamodb"]["Keys"] for r in page.records] == [{"pk": {"S": "a"}}]
    assert counted("trimmed_at_horizon", table) - at_horizon == 2
    assert counted("trimmed_data", table) == trimmed  # the TrimmedData alert's counter stays put
    assert trim_events(logs) == [("info", "renew iterator at trim horizon after trimmed data")] * 2


async def test_trimmed_behind_a_checkpoint_is_an_error_and_counted(sim: Simulator, sim_streams: Any) -> None:
    table = f"c{uuid.uuid4().hex[:6]}"
    sim.create_stream(table)
    first = sim.put_record(table, {"pk": "a"}, {"pk": "a"})
    sim.put_record(table, {"pk": "b"}, {"pk": "b"})
    reader = sim_reader(sim, sim_streams, table, StartPosition.after(first[1]))
    sim.fail_next(1, "TrimmedDataAccessException", operation="GetRecords")
    trimmed, at_horizon = counted("trimmed_data", table), counted("trimmed_at_horizon", table)

    with capture_logs() as logs:
        page = await reader.read_page()

    # By the default policy the reader restarts at the horizon (here: both records retained).
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in page.records] == ["a", "b"]
    assert counted("trimmed_data", table) - trimmed == 1
    assert counted("trimmed_at_horizon", table) == at_horizon
    assert trim_events(logs) == [("error", "restart at trim horizon after trimmed data")]
    # Records were handed out since the restart: a further trim would be the loud kind again.
    assert reader.at_trim_horizon is False


@pytest.mark.dynamodb_local_only("reproduces DynamoDB Local's database-wide sequence counter")
async def test_dynamodb_local_fresh_shard_at_trim_horizon(endpoint_url: str, prefix: str) -> None:
    session = aioboto3.Session(region_name="us-east-1")
    async with (
        session.client("dynamodb", endpoint_url=endpoint_url) as ddb,
        session.client("dynamodbstreams", endpoint_url=endpoint_url) as streams,
    ):
        arns = {}
        for name in ("busy", "quiet"):
            await ddb.create_table(
                TableName=f"{prefix}{name}", BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            )
            arns[name] = (await ddb.describe_table(TableName=f"{prefix}{name}"))["Table"]["LatestStreamArn"]
        shard_id = (await streams.describe_stream(StreamArn=arns["quiet"]))["StreamDescription"]["Shards"][0]["ShardId"]
        reader = ShardReader(streams, stream_arn=arns["quiet"], shard_id=shard_id, stream_label=f"{prefix}quiet",
                             start=TRIM_HORIZON, config=ReaderConfig())
        label = f"{prefix}quiet"
        assert (await reader.read_page()).records == []  # the iterator now waits at the shard's start
        for i in range(3):
            await ddb.put_item(TableName=f"{prefix}busy", Item={"pk": {"S": f"b{i}"}})
        await ddb.put_item(TableName=f"{prefix}quiet", Item={"pk": {"S": "q0"}})

        with capture_logs() as logs:
            page = await reader.read_page()

    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in page.records] == ["q0"]
    assert counted("trimmed_at_horizon", label) == 1
    assert counted("trimmed_data", label) == 0
    assert trim_events(logs) == [("info", "renew iterator at trim horizon after trimmed data")]
