"""The process-wide idle-poll budget: many idle shards back off further, active ones do not."""

from __future__ import annotations

import asyncio
import uuid

from tests.unit.fakes import FakeStreamsClient, make_record
from worker.config import ReaderConfig
from worker.retrieval.reader import TRIM_HORIZON, IdlePollBudget, ShardReader


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
