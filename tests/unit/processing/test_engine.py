"""ProcessingEngine: what every shard's pipeline shares.

* one process-wide bound on handler calls (``max_concurrent_calls``) holds over all the
  pipelines the engine builds, not per pipeline;
* the deliveries it builds wait out a back-off without a concurrency slot, so with one
  process-wide slot a failing key on one shard does not stop another shard.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from worker.config import RetryConfig
from worker.leases.model import Lease
from worker.processing.engine import ProcessingEngine
from worker.processing.invocation import DeliveryServices
from worker.processing.pipeline import ShardPipeline
from worker.processing.progress import ShardProgress
from worker.processing.router import Route, Router
from worker.records import StreamRecord
from tests.unit.pipeline_fakes import HASH_KEY, STREAM_ARN, TABLE, make_record

SERVICES = DeliveryServices(publisher=None, tables=None, config=None,  # type: ignore[arg-type]
                            worker_id="w", observers=[])


def engine_for(handler: Any, *, concurrency: int, process_bound: int, backoff: float = 0.01,
               route_name: str = "r") -> ProcessingEngine:
    route = Route(name=route_name, table=TABLE, events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=handler, options={}, max_concurrency=concurrency, timeout_seconds=None,
                  retry=RetryConfig(max_attempts=-1, initial_backoff_seconds=backoff, max_backoff_seconds=backoff))
    return ProcessingEngine(router=Router([route]), services=SERVICES, dead_letters={}, max_in_flight=1_000,
                            hash_key_of=lambda arn: HASH_KEY, max_concurrent_calls=process_bound)


def shard_pipeline(engine: ProcessingEngine, shard: str) -> ShardPipeline:
    return engine.pipeline_for(Lease(stream_arn=STREAM_ARN, shard_id=shard, table=TABLE), ShardProgress())


async def feed(pipeline: ShardPipeline, records: list[StreamRecord]) -> None:
    for record in records:
        await pipeline.wait_for_capacity()
        pipeline.submit(record)
    await pipeline.drain()


async def test_the_process_bound_holds_over_every_pipeline_of_the_engine() -> None:
    in_flight, peak = 0, 0

    async def handler(record: StreamRecord, ctx: Any) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1

    engine = engine_for(handler, concurrency=10, process_bound=3)
    pipelines = [shard_pipeline(engine, f"shardId-{n}") for n in range(3)]
    try:
        async with asyncio.timeout(20):
            # 3 shards x 10 keys each: 30 calls could run at once under the routes' bound alone.
            await asyncio.gather(*(feed(p, [make_record(i, f"k{i}") for i in range(10)]) for p in pipelines))
    finally:
        for pipeline in pipelines:
            await pipeline.close()
        await engine.close()
    assert peak == 3
    assert all(p.progress.idle for p in pipelines)


async def test_a_back_off_gives_the_process_slot_to_another_shard() -> None:
    handled: list[str] = []
    failures = 0

    async def handler(record: StreamRecord, ctx: Any) -> None:
        nonlocal failures
        key = record.keys[HASH_KEY]
        if key == "poison" and failures < 5:
            failures += 1
            raise RuntimeError("not yet")
        handled.append(key)

    # One slot in the whole process; the poison's back-off (50 ms, five times) must not hold it.
    engine = engine_for(handler, concurrency=1, process_bound=1, backoff=0.05)
    poisoned, healthy = shard_pipeline(engine, "shardId-a"), shard_pipeline(engine, "shardId-b")
    try:
        async with asyncio.timeout(20):
            poisoned.submit(make_record(0, "poison"))
            await asyncio.sleep(0)  # the poison's first call has failed and its back-off begun
            await feed(healthy, [make_record(i, f"good-{i}") for i in range(1, 6)])
            assert failures < 5  # the good shard finished while the poison still waited
            await poisoned.drain()
    finally:
        await poisoned.close()
        await healthy.close()
        await engine.close()
    assert handled[-1] == "poison" and sorted(handled[:-1]) == [f"good-{i}" for i in range(1, 6)]


def _gauge(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(f"stream_worker_{name}", labels)


async def test_load_gauges_show_calls_in_flight_in_backoff_and_records_waiting_then_vanish() -> None:
    """Read at scrape time from the live schedulers: two shards, calls held open on two keys
    of one and one key of the other, a failing key in back-off; then all released."""
    release = asyncio.Event()
    failing_calls = 0

    async def handler(record: StreamRecord, ctx: Any) -> None:
        nonlocal failing_calls
        key = record.keys[HASH_KEY]
        if key == "poison":
            failing_calls += 1
            if not release.is_set():
                raise RuntimeError("not yet")
            return
        await release.wait()

    engine = engine_for(handler, concurrency=10, process_bound=100, backoff=3600, route_name="load")
    assert _gauge("handler_calls_in_flight", route="load") == 0.0  # the route has a series before any shard
    # Other engines of this test process may hold records of the same stream: count from here.
    waiting_before = _gauge("records_in_flight", stream=TABLE) or 0.0
    first, second = shard_pipeline(engine, "shardId-load-1"), shard_pipeline(engine, "shardId-load-2")
    try:
        for index, key in enumerate(["a", "b", "poison", "a"]):  # the second "a" waits behind the first
            first.submit(make_record(index, key))
        second.submit(make_record(10, "c"))
        async with asyncio.timeout(10):
            while not (failing_calls and _gauge("handler_calls_in_backoff", route="load") == 1.0):
                await asyncio.sleep(0.01)
        assert _gauge("handler_calls_in_flight", route="load") == 3.0  # a, b, c; poison gave its slot back
        assert _gauge("handler_calls_in_backoff", route="load") == 1.0
        await asyncio.sleep(0.05)
        assert (_gauge("oldest_failing_record_seconds", route="load") or 0.0) >= 0.05  # the poison, failing since
        assert _gauge("records_in_flight", stream=TABLE) == waiting_before + 5
    finally:
        release.set()
        await first.close()
        await second.close()
    assert _gauge("handler_calls_in_flight", route="load") == 0.0  # closed pipelines are not read
    assert _gauge("oldest_failing_record_seconds", route="load") == 0.0
    assert _gauge("records_in_flight", stream=TABLE) == waiting_before
    await engine.close()
    assert _gauge("handler_calls_in_flight", route="load") is None  # a closed engine reports nothing


async def test_calls_waiting_for_the_process_bound_are_not_counted_in_flight() -> None:
    """A worker holding its route's slot while it waits for the process's is not running a
    call: with 1 process slot and 5 keys ready, 1 call is in flight, not 5."""
    release = asyncio.Event()
    running = 0

    async def handler(record: StreamRecord, ctx: Any) -> None:
        nonlocal running
        running += 1
        await release.wait()
        running -= 1

    engine = engine_for(handler, concurrency=5, process_bound=1, route_name="bound")
    pipeline = shard_pipeline(engine, "shardId-bound")
    try:
        for index in range(5):
            pipeline.submit(make_record(index, f"key-{index}"))
        async with asyncio.timeout(10):
            while running == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # every worker has reached the process bound by now
        assert running == 1
        assert _gauge("handler_calls_in_flight", route="bound") == 1.0
        release.set()
        async with asyncio.timeout(10):
            await pipeline.drain()
        assert _gauge("handler_calls_in_flight", route="bound") == 0.0
    finally:
        release.set()
        await pipeline.close()
        await engine.close()


async def test_a_batch_record_that_failed_and_then_succeeded_is_no_longer_failing() -> None:
    """Batch routes: a record counts as failing from its first failed call until it is
    handled; once the older failure is handled the age is that of the record still failing."""
    failed_at: dict[str, float] = {}
    a_done = asyncio.Event()

    async def batch(records: list[StreamRecord], ctx: Any) -> Any:
        failed = []
        for record in records:
            key = record.keys[HASH_KEY]
            if key == "poison" or (key == "a" and "a" not in failed_at):
                failed_at.setdefault(key, time.monotonic())
                failed.append(record)
            elif key == "a":
                a_done.set()
        return failed

    route = Route(name="batched", table=TABLE, events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=batch, options={}, is_batch=True, batch_size=10, max_concurrency=2,
                  retry=RetryConfig(max_attempts=-1, initial_backoff_seconds=0.3, max_backoff_seconds=0.3))
    engine = ProcessingEngine(router=Router([route]), services=SERVICES, dead_letters={}, max_in_flight=1_000,
                              hash_key_of=lambda arn: HASH_KEY, max_concurrent_calls=10)
    pipeline = shard_pipeline(engine, "shardId-batched")
    try:
        async with asyncio.timeout(10):
            pipeline.submit(make_record(0, "a"))
            while "a" not in failed_at:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.15)
            pipeline.submit(make_record(1, "poison"))  # fails at least 0.15 s after "a" did
            await a_done.wait()  # "a" handled on its retry; the poison still fails
            await asyncio.sleep(0.01)
        since_a = time.monotonic() - failed_at["a"]
        since_poison = time.monotonic() - failed_at["poison"]
        age = _gauge("oldest_failing_record_seconds", route="batched") or 0.0
        assert since_poison - 0.05 <= age <= since_a - 0.1, (age, since_poison, since_a)
    finally:
        await pipeline.close()
        await engine.close()
    assert _gauge("oldest_failing_record_seconds", route="batched") is None  # engine closed: no series
