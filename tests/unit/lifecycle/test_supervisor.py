"""ShardSupervisor: a lost lease stops its consumer through the state machine; a crashed
consumer restarts from its checkpoint with the loops' back-off; trimmed data holds a shard."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from worker.errors import TrimmedDataError
from worker.leases.model import Lease
from worker.lifecycle.consumer import ConsumerState
from worker.lifecycle.supervisor import ShardSupervisor
from worker.processing.pipeline import ShardPipeline
from worker.processing.progress import ShardProgress
from worker.supervision import RestartBackoff
from tests.unit.fakes import FakeStreamsClient, make_record
from tests.unit.lifecycle.test_consumer_checkpoint import (
    ARN, SHARD, CheckpointFailingLeaseTable, NoChildren, UnroutedPipelines, make_config,
)


class FlakyPipelines(UnroutedPipelines):
    """``pipeline_for`` raises ``errors`` one by one (a consumer crash each), then works."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.asked: list[Lease] = []

    def pipeline_for(self, lease: Lease, progress: ShardProgress) -> ShardPipeline:
        self.asked.append(lease)
        if self.errors:
            raise self.errors.pop(0)
        return super().pipeline_for(lease, progress)


def make_supervisor(pipelines: UnroutedPipelines) -> tuple[ShardSupervisor, CheckpointFailingLeaseTable, Lease]:
    table = CheckpointFailingLeaseTable(None)
    streams = FakeStreamsClient(ARN)
    streams.add_shard(SHARD, records=[make_record(10)])
    supervisor = ShardSupervisor(
        make_config(), worker_id="w1", lease_table=table, streams_client=streams,  # type: ignore[arg-type]
        pipelines=pipelines, lineage=NoChildren(), streams=lambda: {ARN: "orders"},
    )
    lease = Lease(stream_arn=ARN, shard_id=SHARD, table="orders", owner="w1", counter=1)
    supervisor.leases.held[lease.key] = lease  # as the taker leaves it after taking the lease
    return supervisor, table, lease


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_lost_lease_moves_the_consumer_to_lease_lost_and_saves_nothing() -> None:
    supervisor, table, lease = make_supervisor(UnroutedPipelines())
    supervisor._acquire(lease)  # noqa: SLF001 - what the taker calls
    [consumer] = supervisor.consumers()
    await wait_until(lambda: consumer.state is ConsumerState.PROCESSING and table.checkpoints)
    written = list(table.checkpoints)

    supervisor._lose(lease)  # noqa: SLF001 - what the coordinator calls when fenced

    assert consumer.state is ConsumerState.LEASE_LOST
    await wait_until(lambda: not supervisor.consumers())
    assert table.checkpoints == written  # fenced: no write after the loss
    with pytest.raises(RuntimeError, match="illegal consumer transition"):
        consumer._transition(ConsumerState.PROCESSING)  # noqa: SLF001 - LEASE_LOST is final


async def test_crashed_consumer_restarts_from_its_checkpoint_with_growing_back_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RestartBackoff, "INITIAL_SECONDS", 0.02)
    pipelines = FlakyPipelines(RuntimeError("boom 1"), RuntimeError("boom 2"))
    supervisor, table, lease = make_supervisor(pipelines)
    with capture_logs() as logs:
        supervisor._acquire(lease)  # noqa: SLF001
        await wait_until(lambda: len(pipelines.asked) == 3 and table.checkpoints)

    delays = [entry["delay"] for entry in logs if entry["event"] == "restart crashed consumer"]
    assert delays == [0.02, 0.04]  # the loops' policy: doubling while the crashes repeat
    assert [consumer.lease.shard_id for consumer in supervisor.consumers()] == [SHARD]
    assert table.checkpoints == ["10"]
    await supervisor.drain(asyncio.get_running_loop().time() + 1)
    assert not supervisor.consumers()


async def test_no_restart_after_drain_began(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RestartBackoff, "INITIAL_SECONDS", 0.05)
    pipelines = FlakyPipelines(RuntimeError("boom"))
    supervisor, _, lease = make_supervisor(pipelines)
    supervisor._acquire(lease)  # noqa: SLF001
    await wait_until(lambda: pipelines.asked and not supervisor.consumers())

    await supervisor.drain(asyncio.get_running_loop().time() + 1)
    await asyncio.sleep(0.1)

    assert len(pipelines.asked) == 1 and not supervisor.consumers()


async def test_trimmed_data_holds_the_shard_stopped() -> None:
    supervisor, _, lease = make_supervisor(FlakyPipelines(TrimmedDataError("gap")))
    supervisor._acquire(lease)  # noqa: SLF001
    await wait_until(lambda: supervisor.holding_stopped_shards)

    assert not supervisor.consumers()
    assert lease.key in supervisor.leases.held  # kept, so nobody reads past the gap
