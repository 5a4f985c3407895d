"""Hot-shard benchmark: one shard, 20,000 records of 2,000 keys, a handler that awaits 20 ms.

The same records (each key's 10 records spread at random over the shard, fixed seed) go
through three schedulers, in this process, each fed as the shard consumer feeds its
pipeline (``wait_for_capacity`` then ``submit``, ``max_in_flight_records`` 5,000), each
record through the real ``RouteDelivery`` (watchdog, metrics, retry policy):

* lanes: the old lane scheduler at ``parallelization_factor: 10`` (Lambda's maximum), a
  faithful copy in bench/lanes_model.py: 10 lanes by key hash, one record at a time each;
* keys@10: the per-key scheduler at ``max_concurrency: 10`` (the default; the same
  concurrency as the lanes);
* keys@N: the per-key scheduler at ``max_concurrency: N`` (``--concurrency``, default 100),
  with the process-wide bound at its default (1,000).

``hot_shard_vs_lanes_ratio`` = keys@N records/s / lanes records/s (goal >= 5): Lambda stops
at 10 concurrent batches a shard, the per-key scheduler takes up to 1,000 calls a shard and
keeps each key in order. ``hot_shard_equal_concurrency_ratio`` = keys@10 / lanes: what the
scheduler gains at the same bound (lanes leave work waiting behind busy lanes while others
idle). The network is not involved: this measures scheduling, not the reader.

Run: ``python -m bench.hot_shard_bench [--records 20000] [--keys 2000] [--concurrency 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import datetime, timezone
from typing import Any, Protocol

from bench.lanes_model import LanePipeline
from bench.results import merge, print_table
from bench.support import load_average, provenance_rows, worker_source_hash
from worker.config import DEFAULT_MAX_CONCURRENCY, ProcessingConfig
from worker.processing.delivery import DeliveryServices, RouteDelivery
from worker.processing.key_scheduler import CallSlots, sleep_without_slots
from worker.processing.pipeline import ShardPipeline
from worker.processing.progress import ShardProgress
from worker.processing.router import Route
from worker.records import StreamRecord

TABLE = "orders"
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-01-01T00:00:00.000"
HANDLER_SECONDS = 0.02
LAMBDA_MAX_FACTOR = 10


class Feedable(Protocol):
    def submit(self, record: StreamRecord) -> None: ...
    async def wait_for_capacity(self) -> None: ...
    async def drain(self) -> None: ...
    async def close(self) -> None: ...


def shard_records(records: int, keys: int, seed: int = 7) -> list[StreamRecord]:
    rng = random.Random(seed)
    order = [f"order-{i % keys:05d}" for i in range(records)]
    rng.shuffle(order)
    now = datetime.now(timezone.utc)
    out = []
    for i, key in enumerate(order):
        item = {"orderId": {"S": key}, "status": {"S": "NEW"}, "n": {"N": str(i)}}
        raw = {"eventID": f"ev-{i}", "eventName": "INSERT",
               "dynamodb": {"Keys": {"orderId": item["orderId"]}, "NewImage": item,
                            "SequenceNumber": str(10**20 + i), "ApproximateCreationDateTime": now}}
        out.append(StreamRecord(raw, table=TABLE, stream_arn=STREAM_ARN, shard_id="shardId-hot"))
    return out


class OrderCheck:
    """The handler: awaits 20 ms; counts calls in flight and checks each key's order."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.last: dict[str, int] = {}
        self.out_of_order = 0

    async def __call__(self, record: StreamRecord, ctx: Any) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(HANDLER_SECONDS)
        finally:
            self.active -= 1
        key = record.raw["dynamodb"]["Keys"]["orderId"]["S"]
        n = int(record.raw["dynamodb"]["SequenceNumber"])
        if self.last.get(key, -1) > n:
            self.out_of_order += 1
        self.last[key] = n


def route(handler: OrderCheck, concurrency: int) -> Route:
    return Route(name="hot", table=TABLE, events=frozenset({"INSERT"}), new_image={}, old_image={},
                 handler=handler, options={}, max_concurrency=concurrency, timeout_seconds=60.0)


SERVICES = DeliveryServices(publisher=None, tables=None, config=None, worker_id="bench",  # type: ignore[arg-type]
                            observers=[])


async def run_one(kind: str, records: list[StreamRecord], concurrency: int) -> dict[str, float]:
    handler = OrderCheck()
    the_route = route(handler, concurrency)
    max_in_flight = ProcessingConfig().max_in_flight_records
    progress = ShardProgress()
    sleep = sleep_without_slots if kind == "keys" else asyncio.sleep  # the engine's, or the lanes' plain one

    def delivery_for(r: Route) -> RouteDelivery:
        return RouteDelivery(r, SERVICES, None, progress=progress, sleep=sleep)

    pipeline: Feedable
    if kind == "lanes":
        pipeline = LanePipeline(route=the_route, delivery_for=delivery_for, factor=concurrency, progress=progress,
                                hash_key="orderId", max_in_flight=max_in_flight)
    else:
        slots = CallSlots(ProcessingConfig().max_concurrent_handler_calls)
        pipeline = ShardPipeline(routes_for=lambda record: [the_route], delivery_for=delivery_for,
                                 progress=progress, max_in_flight=max_in_flight, hash_key="orderId",
                                 stream_label=TABLE, call_slots=slots)
    started = time.perf_counter()
    cpu = time.process_time()
    try:
        for record in records:
            await pipeline.wait_for_capacity()
            pipeline.submit(record)
        await pipeline.drain()
    finally:
        await pipeline.close()
    elapsed = time.perf_counter() - started
    if handler.out_of_order:
        raise AssertionError(f"{kind}: {handler.out_of_order} records handled out of key order")
    return {"records_per_s": len(records) / elapsed, "seconds": elapsed, "peak_calls": handler.peak,
            "cpu_us_per_record": (time.process_time() - cpu) / len(records) * 1e6}


def run(records: int, keys: int, concurrency: int) -> dict[str, Any]:
    source, load_before = worker_source_hash(), load_average()
    shard = shard_records(records, keys)
    lanes = asyncio.run(run_one("lanes", shard, LAMBDA_MAX_FACTOR))
    equal = asyncio.run(run_one("keys", shard, DEFAULT_MAX_CONCURRENCY))
    wide = asyncio.run(run_one("keys", shard, concurrency))
    ratio = wide["records_per_s"] / lanes["records_per_s"]
    equal_ratio = equal["records_per_s"] / lanes["records_per_s"]

    def row(name: str, result: dict[str, float], note: str) -> tuple[str, str, str]:
        return (name, f"{result['records_per_s']:,.0f} rec/s",
                f"{result['seconds']:.1f} s, peak {result['peak_calls']:.0f} calls, "
                f"{result['cpu_us_per_record']:.0f} us CPU/record; {note}")

    rows = [
        ("shard", f"{records:,} records of {keys:,} keys", f"handler awaits {HANDLER_SECONDS * 1000:.0f} ms"),
        row("lanes (parallelization_factor 10)", lanes, "old lanes / Lambda's maximum"),
        row(f"keys (max_concurrency {DEFAULT_MAX_CONCURRENCY})", equal, "the default"),
        row(f"keys (max_concurrency {concurrency})", wide, "process bound 1,000 (default)"),
        ("hot_shard_vs_lanes_ratio", f"{ratio:.2f}x", f"keys@{concurrency} / lanes; goal >= 5x"),
        ("hot_shard_equal_concurrency_ratio", f"{equal_ratio:.2f}x", f"keys@{DEFAULT_MAX_CONCURRENCY} / lanes"),
    ]
    rows += provenance_rows(source, load_before)
    print_table("hot shard: per-key scheduler vs lanes", rows)
    return {
        "hot_shard_vs_lanes_ratio": round(ratio, 3),
        "hot_shard_equal_concurrency_ratio": round(equal_ratio, 3),
        "hot_shard_lanes_records_per_s": round(lanes["records_per_s"], 1),
        "hot_shard_keys_default_records_per_s": round(equal["records_per_s"], 1),
        "hot_shard_keys_records_per_s": round(wide["records_per_s"], 1),
        "hot_shard_max_concurrency": concurrency,
        "hot_shard_records": records,
        "hot_shard_keys": keys,
        "hot_shard_bench_load_avg": load_before,
        "hot_shard_bench_worker_source": source,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    merge("hot_shard", run(args.records, args.keys, args.concurrency), replace_prefix="hot_shard_")


if __name__ == "__main__":
    main()
