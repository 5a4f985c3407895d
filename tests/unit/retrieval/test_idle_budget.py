"""The process-wide idle-poll budget: many idle shards back off further, active ones do not."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.unit.fakes import FakeStreamsClient, make_record
from worker.config import ReaderConfig
from worker.retrieval.idle_budget import IdlePollBudget
from worker.retrieval.reader import TRIM_HORIZON, ShardReader


def test_ceiling_grows_with_idle_shards_beyond_the_budget() -> None:
    budget = IdlePollBudget(polls_per_second=50)
    assert budget.ceiling(1.0) == 1.0  # no idle shard: the configured ceiling
    budget.idle_readers = 40
    assert budget.ceiling(1.0) == 1.0  # 40 shards at 1 s = 40 polls/s: within budget
    budget.idle_readers = 1000
    assert budget.ceiling(1.0) == 20.0  # 1,000 idle shards share 50 polls/s
    assert IdlePollBudget(polls_per_second=0).ceiling(1.0) == 1.0  # 0 disables the budget


async def test_idle_readers_are_counted_while_idle_and_released_on_records() -> None:
    client = FakeStreamsClient()
    client.add_shard("shardId-1", records=[], closed=False)
    budget = IdlePollBudget(polls_per_second=50)
    reader = ShardReader(client, stream_arn=client.stream_arn, shard_id="shardId-1",
                         stream_label=f"t-{uuid.uuid4().hex[:6]}", start=TRIM_HORIZON,
                         config=ReaderConfig(idle_poll_seconds=0.01, max_idle_poll_seconds=0.02), budget=budget)
    stop = asyncio.Event()
    task = asyncio.create_task(reader.next_page(stop))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if budget.idle_readers == 1:
            break
    assert budget.idle_readers == 1
    client.append("shardId-1", make_record(7))
    page = await asyncio.wait_for(task, timeout=5)
    assert page is not None and [r["dynamodb"]["SequenceNumber"] for r in page.records] == ["7"]
    assert budget.idle_readers == 0


def _reader(client: FakeStreamsClient, shard: str, budget: IdlePollBudget) -> ShardReader:
    return ShardReader(client, stream_arn=client.stream_arn, shard_id=shard, stream_label=f"t-{uuid.uuid4().hex[:6]}",
                       start=TRIM_HORIZON, budget=budget,
                       config=ReaderConfig(idle_poll_seconds=0.01, max_idle_poll_seconds=0.02))


async def test_tick_after_is_shared_by_callers_due_in_the_same_tick() -> None:
    budget = IdlePollBudget(polls_per_second=10)
    budget.TICK_SECONDS = 0.05
    first, second = budget.tick_after(0.0), budget.tick_after(0.0)
    assert first is second
    later = budget.tick_after(0.2)
    assert later is not first
    await asyncio.wait_for(first, timeout=5)
    assert not later.done()
    await asyncio.wait_for(later, timeout=5)


async def test_idle_readers_past_the_budget_poll_together_on_ticks() -> None:
    """30 idle shards, a budget of 100 polls/s: each shard's ceiling is 0.3 s, beyond the
    configured 0.02 s, so their polls land on the budget's ticks, several per tick."""
    client = FakeStreamsClient()
    budget = IdlePollBudget(polls_per_second=100)
    budget.TICK_SECONDS = 0.1
    loop = asyncio.get_running_loop()
    poll_ticks: list[float] = []
    original = client.get_records

    async def timed_get_records(**kwargs: object) -> dict[str, object]:
        poll_ticks.append(loop.time() / budget.TICK_SECONDS)
        return await original(**kwargs)

    client.get_records = timed_get_records  # type: ignore[method-assign]
    stop = asyncio.Event()
    tasks = []
    for n in range(30):
        client.add_shard(f"shardId-{n}", records=[], closed=False)
        tasks.append(asyncio.create_task(_reader(client, f"shardId-{n}", budget).next_page(stop)))
    await asyncio.sleep(1.5)
    stop.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), timeout=5) == [None] * 30
    # Ignore the first polls (the configured back-off, before the ceiling applies).
    settled = poll_ticks[len(poll_ticks) // 2:]
    # Within the first half of a tick period (polls not tied to ticks would land there only
    # half of the time); loose on purpose, so that a slow machine does not fail it.
    on_tick = [t for t in settled if t - int(t) < 0.5]
    assert len(on_tick) >= 0.9 * len(settled), settled
    assert len(settled) > len({int(t) for t in settled})  # ticks are shared by several polls


async def test_stop_wakes_a_reader_waiting_for_a_distant_tick() -> None:
    client = FakeStreamsClient()
    client.add_shard("shardId-1", records=[], closed=False)
    budget = IdlePollBudget(polls_per_second=0.001)  # ceiling: 1,000 s
    stop = asyncio.Event()
    task = asyncio.create_task(_reader(client, "shardId-1", budget).next_page(stop))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if len(client.calls_of("GetRecords")) >= 3:
            break
    stop.set()
    assert await asyncio.wait_for(task, timeout=5) is None
    assert budget.idle_readers == 0


async def test_a_cancelled_reader_does_not_cancel_the_tick_others_wait_for() -> None:
    budget = IdlePollBudget(polls_per_second=10)
    budget.TICK_SECONDS = 0.05
    shared = budget.tick_after(0.0)
    waiter = asyncio.create_task(asyncio.wait((shared,)))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0)
    await asyncio.wait_for(shared, timeout=5)
    assert shared.done() and not shared.cancelled()


@pytest.mark.parametrize("idle_poll_seconds", [30, 60], ids=["short-wait", "tick-wait"])
async def test_a_wake_makes_an_idle_reader_of_that_stream_poll_now(idle_poll_seconds: float) -> None:
    """A reader whose back-off would keep it asleep for half a minute or more reads a record
    written to its stream as soon as the stream is woken, whether it waits below its back-off
    ceiling or at it (on the budget's ticks); a wake of another stream leaves it asleep."""
    client = FakeStreamsClient()
    client.add_shard("shardId-1", records=[], closed=False)
    budget = IdlePollBudget(polls_per_second=50)
    reader = ShardReader(client, stream_arn=client.stream_arn, shard_id="shardId-1", stream_label="events",
                         start=TRIM_HORIZON, budget=budget,
                         config=ReaderConfig(idle_poll_seconds=idle_poll_seconds, max_idle_poll_seconds=60))
    task = asyncio.create_task(reader.next_page(asyncio.Event()))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if budget.idle_readers == 1:
            break
    assert len(client.calls_of("GetRecords")) == 1
    client.append("shardId-1", make_record(7))
    budget.wake("orders")
    await asyncio.sleep(0.1)
    assert not task.done() and len(client.calls_of("GetRecords")) == 1

    budget.wake("events")
    page = await asyncio.wait_for(task, timeout=5)
    assert page is not None and [r["dynamodb"]["SequenceNumber"] for r in page.records] == ["7"]
    assert budget.idle_readers == 0


async def test_wakes_of_a_stream_are_spaced_by_its_idle_readers_over_the_budget() -> None:
    """4 idle readers at 40 polls/s: a second wake within 0.1 s is deferred to then, not
    dropped, and a wake with nobody waiting does nothing."""
    budget = IdlePollBudget(polls_per_second=40)
    budget.wake("events")  # nobody waiting: nothing to do, nothing deferred
    for _ in range(4):
        budget.enter_idle("events")
    first = budget.woken("events", since=time.monotonic())
    budget.wake("events")
    assert first.done()

    second = budget.woken("events", since=time.monotonic())
    budget.wake("events")
    budget.wake("events")  # folded into the deferred one
    assert not second.done()
    await asyncio.wait_for(second, timeout=2)
    for _ in range(4):
        budget.leave_idle("events")
    assert budget.idle_readers == 0


async def test_a_write_woken_while_the_reader_was_reading_wakes_it_when_it_goes_idle() -> None:
    budget = IdlePollBudget(polls_per_second=40)
    budget.enter_idle("events")
    read_at = time.monotonic()
    budget.wake("events")  # while the reader's GetRecords was under way: nobody waiting yet
    assert budget.woken("events", since=read_at).done()
    later = time.monotonic()
    assert not budget.woken("events", since=later).done()  # nothing written since that read
