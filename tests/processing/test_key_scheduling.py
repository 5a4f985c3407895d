"""Per-key scheduling in process: the real ShardPipeline + KeyScheduler + RouteDelivery with
small handlers that log every call, and real (short) back-off sleeps.

* a poison key, retried with back-off and then parked, does not delay the other keys of
  the shard (any max_concurrency, 1 included); its own later record waits for it;
* a record waiting out its back-off holds no slot, neither the route's nor the process's
  (the same run with a sleep that keeps the slot shows the difference);
* calls in flight stay within max_concurrency per route and shard, and within the
  process-wide bound over all shards, and reach them;
* batch routes: a key is never in two calls at once, and a partial failure or a bisected
  failure holds up only the failed key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import pytest

from worker.config import RetryConfig
from worker.deadletter import DeadLetter, DeadLetterConfig
from worker.processing.delivery import BatchResult, DeliveryServices, RouteDelivery
from worker.processing.key_scheduler import CallSlots, sleep_without_slots
from worker.processing.pipeline import ShardPipeline
from worker.processing.progress import ShardProgress
from worker.processing.router import Route
from worker.records import StreamRecord
from worker.testing import MemoryDeadLetters

TABLE = "orders"
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"


def make_record(index: int, key: str, shard: str = "shardId-1") -> StreamRecord:
    keys = {"pk": {"S": key}}
    raw = {
        "eventID": f"ev-{index}",
        "eventName": "INSERT",
        "dynamodb": {
            "Keys": keys,
            "NewImage": {**keys, "n": {"N": str(index)}},
            "SequenceNumber": str(1000 + index),
            "ApproximateCreationDateTime": datetime.now(timezone.utc),
        },
    }
    return StreamRecord(raw, table=TABLE, stream_arn=STREAM_ARN, shard_id=shard)


def key(record: StreamRecord) -> str:
    return str(record.raw["dynamodb"]["Keys"]["pk"]["S"])


def number(record: StreamRecord) -> int:
    return int(record.raw["dynamodb"]["SequenceNumber"]) - 1000


@dataclass
class Log:
    """Every call and park in order, calls in flight and their peaks."""

    events: list[tuple[str, int]] = field(default_factory=list)  # (what, record number)
    active: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    total: int = 0
    peak_total: int = 0
    keys_in_call: dict[tuple[str, str], int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def enter(self, where: str, records: list[StreamRecord]) -> None:
        self.active[where] = self.active.get(where, 0) + 1
        self.peak[where] = max(self.peak.get(where, 0), self.active[where])
        self.total += 1
        self.peak_total = max(self.peak_total, self.total)
        for k in {key(r) for r in records}:
            if self.keys_in_call.get((where, k)):
                self.violations.append(f"{where}: key {k} in two calls at once")
            self.keys_in_call[(where, k)] = self.keys_in_call.get((where, k), 0) + 1

    def leave(self, where: str, records: list[StreamRecord]) -> None:
        self.active[where] -= 1
        self.total -= 1
        for k in {key(r) for r in records}:
            self.keys_in_call[(where, k)] -= 1

    def index(self, what: str, n: int) -> int:
        return self.events.index((what, n))

    def last(self, what: str, n: int) -> int:
        return len(self.events) - 1 - self.events[::-1].index((what, n))


class MemoryLetters(MemoryDeadLetters):
    """Also logs each park in the run's event log."""

    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    async def send(self, message: DeadLetter) -> None:
        await super().send(message)
        self.log.events.append(("park", int(message.sequence_number) - 1000))


def make_route(name: str, handler: Any, *, concurrency: int, batch: bool = False, batch_size: int = 1,
               max_attempts: int = -1, backoff: float = 0.01, bisect: bool = True,
               dead_letters: bool = False) -> Route:
    return Route(
        name=name, table=TABLE, events=frozenset({"INSERT"}), new_image={}, old_image={},
        handler=handler, options={}, is_batch=batch, batch_size=batch_size if batch else 1,
        max_concurrency=concurrency, timeout_seconds=30.0,  # the watchdog, one per concurrent call
        retry=RetryConfig(max_attempts=max_attempts, initial_backoff_seconds=backoff,
                          max_backoff_seconds=backoff, bisect_batch_on_error=bisect),
        dead_letter=DeadLetterConfig(type="jsonl", path="unused") if dead_letters else None,
    )


def make_pipeline(routes: list[Route], log: Log, *, call_slots: CallSlots | None = None,
                  keep_slot_while_sleeping: bool = False) -> ShardPipeline:
    services = DeliveryServices(publisher=None, tables=None, config=None, worker_id="w",  # type: ignore[arg-type]
                                observers=[])
    letters = MemoryLetters(log)
    progress = ShardProgress()
    # The engine's sleep (ProcessingEngine.pipeline_for), or one that keeps the slot to compare.
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep if keep_slot_while_sleeping else sleep_without_slots

    def delivery_for(route: Route) -> RouteDelivery:
        return RouteDelivery(route, services, letters if route.dead_letter else None,  # type: ignore[arg-type]
                             progress=progress, sleep=sleep)

    return ShardPipeline(routes_for=lambda record: routes, delivery_for=delivery_for, progress=progress,
                         max_in_flight=100_000, hash_key="pk", stream_label=TABLE, call_slots=call_slots)


async def run(pipeline: ShardPipeline, records: list[StreamRecord], timeout: float = 20) -> None:
    try:
        async with asyncio.timeout(timeout):
            for record in records:
                await pipeline.wait_for_capacity()
                pipeline.submit(record)
            await pipeline.drain()
    finally:
        await pipeline.close()


# -- a poison key ----------------------------------------------------------------------------


def poison_shard() -> tuple[list[StreamRecord], int, int]:
    """40 good keys with two records each; the poison key's first record at #3, its second
    near the end. Returns the records and the poison's two record numbers."""
    keys: list[str] = []
    for round_ in range(2):
        for k in range(40):
            if round_ == 0 and k == 3:
                keys.append("poison")
            keys.append(f"good-{k}")
    keys.insert(len(keys) - 5, "poison")
    records = [make_record(i, k) for i, k in enumerate(keys)]
    first, second = [i for i, k in enumerate(keys) if k == "poison"]
    return records, first, second


@pytest.mark.parametrize("concurrency", [1, 2, 10])
async def test_poison_key_with_backoff_does_not_delay_other_keys(concurrency: int) -> None:
    log = Log()
    records, first, second = poison_shard()

    async def handler(record: StreamRecord, ctx: Any) -> None:
        log.enter("route", [record])
        log.events.append(("call", number(record)))
        try:
            await asyncio.sleep(0)
            if number(record) == first:
                raise RuntimeError("poison")
        finally:
            log.leave("route", [record])
        log.events.append(("ok", number(record)))

    # 4 attempts, 3 back-offs of 0.15 s: the poison is parked after ~0.45 s.
    route = make_route("route", handler, concurrency=concurrency, max_attempts=4, backoff=0.15, dead_letters=True)
    pipeline = make_pipeline([route], log)
    await run(pipeline, records)

    parked = log.index("park", first)
    good = [number(r) for r in records if key(r) != "poison"]
    assert all(log.index("ok", n) < parked for n in good), "a good key waited for the poison"
    assert [e for e in log.events if e[1] == first] == [("call", first)] * 4 + [("park", first)]
    # The poison key's own later record waited for it, then went through.
    assert log.index("call", second) > parked and ("ok", second) in log.events
    assert log.peak["route"] <= concurrency and not log.violations
    assert pipeline.progress.finished_up_to == records[-1].sequence_number


# -- slots are given back while sleeping -------------------------------------------------------


def flaky_shard(shard: str = "shardId-1", good: int = 10) -> list[StreamRecord]:
    return [make_record(0, "flaky", shard)] + [make_record(i, f"good-{i}", shard) for i in range(1, good + 1)]


def flaky_handler(log: Log, where: str) -> Any:
    failed: set[int] = set()

    async def handler(record: StreamRecord, ctx: Any) -> None:
        log.enter(where, [record])
        log.events.append(("call", number(record)))
        try:
            await asyncio.sleep(0)
            if key(record) == "flaky" and number(record) not in failed:
                failed.add(number(record))
                raise RuntimeError("fails once")
        finally:
            log.leave(where, [record])
        log.events.append(("ok", number(record)))

    return handler


@pytest.mark.parametrize("keep_slot", [False, True])
async def test_a_record_in_backoff_holds_no_slot(keep_slot: bool) -> None:
    """max_concurrency 1, the first record fails once and backs off 0.3 s: the ten other
    keys go during its back-off. The control run keeps the slot while sleeping (plain
    asyncio.sleep) and shows what this test would catch: everything waits."""
    log = Log()
    route = make_route("route", flaky_handler(log, "route"), concurrency=1, backoff=0.3)
    await run(make_pipeline([route], log, keep_slot_while_sleeping=keep_slot), flaky_shard())

    calls = [n for what, n in log.events if what == "call"]
    if keep_slot:
        assert calls == [0, 0, *range(1, 11)]
    else:
        assert calls == [0, *range(1, 11), 0]
    assert log.peak["route"] == 1


async def test_a_record_in_backoff_holds_no_process_slot() -> None:
    """Two shards share a process-wide bound of 1 call: shard A's failing record backs off
    and shard B's records all go meanwhile."""
    log = Log()
    slots = CallSlots(1)
    a_route = make_route("route", flaky_handler(log, "a"), concurrency=5, backoff=0.5)
    b_route = make_route("route", flaky_handler(log, "b"), concurrency=5, backoff=0.5)
    shard_a = make_pipeline([a_route], log, call_slots=slots)
    shard_b = make_pipeline([b_route], log, call_slots=slots)
    a_records = flaky_shard("shardId-a", good=0)
    b_records = [make_record(100 + i, f"b-{i}", "shardId-b") for i in range(10)]
    run_a = asyncio.create_task(run(shard_a, a_records))
    await asyncio.sleep(0.1)  # A's record has failed and is backing off
    await run(shard_b, b_records)
    b_done_while_a_sleeps = ("ok", 0) not in log.events
    await run_a
    assert b_done_while_a_sleeps
    assert [n for what, n in log.events if what == "call"] == [0, *range(100, 110), 0]
    assert log.peak_total == 1


# -- the bounds --------------------------------------------------------------------------------


@pytest.mark.parametrize("process_bound", [None, 5])
async def test_calls_in_flight_stay_within_route_and_process_bounds(process_bound: int | None) -> None:
    """Three shards, each with a per-record route (max_concurrency 3) and a batch route
    (max_concurrency 2, batches of 2), 30 keys each, handlers that take 20 ms. Without a
    process bound every route reaches its own bound (3 + 2 per shard, 15 in all); with a
    bound of 5, the process never has more than 5 calls in flight, and has 5."""
    log = Log()
    slots = None if process_bound is None else CallSlots(process_bound)

    def per_record(where: str) -> Any:
        async def handler(record: StreamRecord, ctx: Any) -> None:
            log.enter(where, [record])
            try:
                await asyncio.sleep(0.02)
            finally:
                log.leave(where, [record])
        return handler

    def per_batch(where: str) -> Any:
        async def handler(records: list[StreamRecord], ctx: Any) -> None:
            log.enter(where, records)
            try:
                await asyncio.sleep(0.02)
            finally:
                log.leave(where, records)
        return handler

    runs = []
    for shard in ("s1", "s2", "s3"):
        routes = [make_route("records", per_record(f"{shard}/records"), concurrency=3),
                  make_route("batches", per_batch(f"{shard}/batches"), concurrency=2, batch=True, batch_size=2)]
        records = [make_record(i, f"{shard}-k{i % 30}", shard) for i in range(60)]
        runs.append(run(make_pipeline(routes, log, call_slots=slots), records))
    await asyncio.gather(*runs)

    assert not log.violations
    for shard in ("s1", "s2", "s3"):
        if process_bound is None:
            assert (log.peak[f"{shard}/records"], log.peak[f"{shard}/batches"]) == (3, 2)
        else:
            assert log.peak[f"{shard}/records"] <= 3 and log.peak[f"{shard}/batches"] <= 2
    assert log.peak_total == (15 if process_bound is None else process_bound)


# -- batch routes ------------------------------------------------------------------------------


def batch_shard() -> list[StreamRecord]:
    # "bad" first, then 15 records of five other keys, then bad's second record.
    keys = ["bad"] + [f"k{i % 5}" for i in range(15)] + ["bad"]
    return [make_record(i, k) for i, k in enumerate(keys)]


@pytest.mark.parametrize("mode", ["partial", "bisect"])
async def test_batch_failure_holds_up_only_the_failed_key(mode: str) -> None:
    """Batches of 4, max_concurrency 2. Record #0 (key "bad") fails twice (reported failed,
    or the batch raises and is bisected down to #0 alone), backing off 0.3 s each time:
    every record of the other keys is handled before #0's last call; bad's second record
    after #0; no key is in two calls at once; each key's records are handled in stream order."""
    log = Log()
    records = batch_shard()
    failures = {"left": 2}
    batches: list[list[int]] = []

    async def handler(batch: list[StreamRecord], ctx: Any) -> BatchResult:
        log.enter("route", batch)
        batches.append([number(r) for r in batch])
        for record in batch:
            log.events.append(("call", number(record)))
        try:
            await asyncio.sleep(0.005)
        finally:
            log.leave("route", batch)
        failed: list[StreamRecord] = []
        if any(number(r) == 0 for r in batch) and failures["left"]:
            if mode == "bisect":
                # Raises while #0 is in the batch; bisection isolates it, and only a failure
                # of #0 alone counts an attempt and backs off.
                if batch == [records[0]]:
                    failures["left"] -= 1
                raise RuntimeError("bad record in the batch")
            failures["left"] -= 1
            failed = [r for r in batch if key(r) == "bad"]  # an ordered handler fails the key's rest too
        for record in batch:
            if record not in failed:
                log.events.append(("ok", number(record)))
        return BatchResult(failed=tuple(failed))

    route = make_route("route", handler, concurrency=2, batch=True, batch_size=4, backoff=0.3)
    await run(make_pipeline([route], log), records)

    assert not log.violations
    last_call = log.last("call", 0)
    others = [number(r) for r in records if key(r) != "bad"]
    assert all(log.index("ok", n) < last_call for n in others), (log.events, batches)
    assert failures["left"] == 0 and log.events.count(("ok", 0)) == 1
    assert log.index("ok", 16) > log.index("ok", 0)
    assert sorted(n for what, n in log.events if what == "ok") == list(range(17))
    for k in {key(r) for r in records}:
        mine = [n for what, n in log.events if what == "ok" and key(records[n]) == k]
        assert mine == sorted(mine), k
    assert all(len(batch) <= 4 for batch in batches)
