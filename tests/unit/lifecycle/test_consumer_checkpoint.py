"""ShardConsumer: a checkpoint write that fails for good ends the consumer, even while idle."""

from __future__ import annotations

import asyncio
import pytest
from botocore.exceptions import ClientError

from worker.config import Config, StreamSettings, parse_config
from worker.errors import LeaseLostError
from worker.leases.model import Lease
from worker.lifecycle.consumer import ConsumerState, ShardConsumer
from worker.processing.delivery import RouteDelivery
from worker.processing.pipeline import ShardPipeline
from worker.processing.router import Route
from worker.processing.progress import ShardProgress
from tests.unit.fakes import FakeLeaseTable, FakeStreamsClient, client_error, make_record

ARN = "arn:aws:dynamodb:us-east-1:1:table/orders/stream/2024"
SHARD = "shard-1"


class CheckpointFailingLeaseTable(FakeLeaseTable):
    """Every checkpoint write fails with ``error`` (None: it succeeds); each one is logged."""

    def __init__(self, error: Exception | None) -> None:
        super().__init__()
        self.error = error
        self.checkpoints: list[str] = []

    async def checkpoint(self, lease: Lease, sequence_number: str) -> None:
        await asyncio.sleep(0)
        self.checkpoints.append(sequence_number)
        if self.error is not None:
            raise self.error


def make_config() -> Config:
    return parse_config(
        {
            "tables": {"orders": {"name": "orders"}, "events": {"name": "events"}},
            # Idle polls keep going (the shard stays open) at a quick pace.
            "reader": {"idle_poll_seconds": 0.005, "max_idle_poll_seconds": 0.01},
            "processing": {"checkpoint_interval_seconds": 0.01},
            "routes": [{"name": "r", "table": "orders", "handler": "worker.handlers.orders:process_order"}],
        },
        env={},
    )


class UnroutedPipelines:
    """No route matches: every record is finished as soon as it is submitted."""

    def pipeline_for(self, lease: Lease, progress: ShardProgress) -> ShardPipeline:
        def no_delivery(route: Route) -> RouteDelivery:
            raise AssertionError("no route matches, so nothing is delivered")

        return ShardPipeline(routes_for=lambda record: [], delivery_for=no_delivery, progress=progress,
                             max_in_flight=100, hash_key="id", stream_label="orders")


class NoChildren:
    async def children_of(self, stream_arn: str, shard_id: str) -> list[str]:
        return []


def make_consumer(table: FakeLeaseTable, streams: FakeStreamsClient) -> ShardConsumer:
    lease = Lease(stream_arn=ARN, shard_id=SHARD, table="orders", owner="w1", counter=1)
    return ShardConsumer(
        lease,
        streams_client=streams,
        lease_table=table,  # type: ignore[arg-type]
        pipelines=UnroutedPipelines(),
        lineage=NoChildren(),
        config=make_config(),
        stream=StreamSettings(starting_position="TRIM_HORIZON"),
    )


def idle_shard() -> FakeStreamsClient:
    """An open shard with one record: after it, every read is empty."""
    streams = FakeStreamsClient(ARN)
    streams.add_shard(SHARD, records=[make_record(10)])
    return streams


async def run_to_end(consumer: ShardConsumer) -> asyncio.Task[ConsumerState]:
    """Run the consumer; fail if it has not ended on its own within 2 s."""
    task = asyncio.create_task(consumer.run(asyncio.Event()))
    await asyncio.wait({task}, timeout=2)
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        pytest.fail("the consumer went on polling with a dead checkpoint loop")
    return task


async def assert_reader_stopped(streams: FakeStreamsClient) -> None:
    """No GetRecords after the consumer ended: nothing is left polling the shard."""
    reads = len(streams.calls_of("GetRecords"))
    await asyncio.sleep(0.05)
    assert len(streams.calls_of("GetRecords")) == reads


async def test_lease_lost_on_checkpoint_while_idle_stops_the_shard() -> None:
    table = CheckpointFailingLeaseTable(LeaseLostError("fenced"))
    streams = idle_shard()
    consumer = make_consumer(table, streams)

    task = await run_to_end(consumer)

    assert task.result() is ConsumerState.LEASE_LOST
    assert table.checkpoints == ["10"]  # one write, not retried: the lease is someone else's
    assert consumer._checkpointer.checkpointed is None
    await assert_reader_stopped(streams)


async def test_refused_checkpoint_while_idle_fails_the_consumer() -> None:
    # Not retryable and not a lost lease: the consumer ends with the error, like a failure
    # while processing, so that the supervisor counts it and restarts the consumer.
    table = CheckpointFailingLeaseTable(client_error("AccessDeniedException", "UpdateItem"))
    streams = idle_shard()
    consumer = make_consumer(table, streams)

    task = await run_to_end(consumer)

    with pytest.raises(ClientError, match="AccessDeniedException"):
        task.result()
    assert table.checkpoints == ["10"]
    await assert_reader_stopped(streams)


async def test_cancelled_idle_consumer_leaves_no_reader_behind() -> None:
    table = CheckpointFailingLeaseTable(None)
    streams = idle_shard()
    consumer = make_consumer(table, streams)
    task = asyncio.create_task(consumer.run(asyncio.Event()))
    async with asyncio.timeout(2):
        while not table.checkpoints or len(streams.calls_of("GetRecords")) < 3:
            await asyncio.sleep(0.005)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert consumer._checkpointer.checkpointed == "10"
    await assert_reader_stopped(streams)
