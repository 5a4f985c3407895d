"""Record-path benchmark: CPU a record costs between the reader and a no-op handler, in process.

What the pipeline benchmark's worker spends on a record splits into reading (HTTP, decoding
the page, building records) and the record path measured here: ``ShardPipeline.submit``
(routing, progress, partition key), the route's ``KeyScheduler`` (per-key queue, slots),
``RouteDelivery`` (handler context, watchdog, metrics, progress) and the handler
(``bench.noop_handlers.noop``: decodes the new image). No I/O, no other process, so it is
steady enough to compare code changes run by run.

* 40,000 order-like records of distinct keys (``--records``), one shard, one route,
  ``max_concurrency`` 10 (the default), route timeout 60 s (the watchdog runs), tracing off;
  records fed a page (1,000) at a time with ``wait_for_capacity`` as the consumer does.
* The same records through the old lanes model (``bench/lanes_model.py``, 10 lanes) for
  comparison.
* CPU time (``time.process_time``) per record, the best of ``--rounds`` runs, with the
  garbage collector set as ``stream-worker run`` sets it (frozen start-up, young generation
  threshold 20,000): the best run is the one least disturbed by the rest of the machine.

Run: ``python -m bench.record_path_bench [--records 40000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from bench.hot_shard_bench import SERVICES, TABLE, Feedable, shard_records
from bench.lanes_model import LanePipeline
from bench.noop_handlers import noop
from bench.results import merge, print_table
from bench.support import load_average, provenance_rows, worker_source_hash
from worker.config import DEFAULT_MAX_CONCURRENCY, ProcessingConfig
from worker.gc_tuning import tune_garbage_collector
from worker.processing.delivery import RouteDelivery
from worker.processing.key_scheduler import CallSlots, sleep_without_slots
from worker.processing.pipeline import ShardPipeline
from worker.processing.progress import ShardProgress
from worker.processing.router import Route
from worker.records import StreamRecord

PAGE = 1000
LANES = 10


async def one_run(kind: str, records: list[StreamRecord]) -> float:
    """CPU seconds to push ``records`` through a fresh pipeline of ``kind`` and drain it."""
    route = Route(name="noop", table=TABLE, events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=noop, options={}, max_concurrency=DEFAULT_MAX_CONCURRENCY, timeout_seconds=60.0)
    progress = ShardProgress()
    processing = ProcessingConfig()
    pipeline: Feedable
    if kind == "lanes":
        pipeline = LanePipeline(
            route=route, factor=LANES, progress=progress, hash_key="orderId",
            max_in_flight=processing.max_in_flight_records,
            delivery_for=lambda r: RouteDelivery(r, SERVICES, None, progress=progress, sleep=asyncio.sleep),
        )
    else:
        pipeline = ShardPipeline(
            routes_for=lambda record: [route], progress=progress, hash_key="orderId", stream_label=TABLE,
            max_in_flight=processing.max_in_flight_records,
            call_slots=CallSlots(processing.max_concurrent_handler_calls),
            delivery_for=lambda r: RouteDelivery(r, SERVICES, None, progress=progress, sleep=sleep_without_slots),
        )
    started = time.process_time()
    try:
        for first in range(0, len(records), PAGE):
            await pipeline.wait_for_capacity()
            for record in records[first:first + PAGE]:
                pipeline.submit(record)
            await asyncio.sleep(0)  # the consumer awaits its next page here
        await pipeline.drain()
        return time.process_time() - started
    finally:
        await pipeline.close()


def run(records: int, rounds: int) -> dict[str, Any]:
    source, load_before = worker_source_hash(), load_average()
    tune_garbage_collector()
    best: dict[str, float] = {}
    per_round: dict[str, list[float]] = {"keys": [], "lanes": []}
    for _ in range(rounds):
        for kind in ("keys", "lanes"):
            # Fresh records each run: a decoded image is cached on its record.
            seconds = asyncio.run(one_run(kind, shard_records(records, records)))
            per_round[kind].append(seconds / records * 1e6)
    for kind, values in per_round.items():
        best[kind] = min(values)
    rows = [
        ("records", f"{records:,} of distinct keys", f"one route, max_concurrency {DEFAULT_MAX_CONCURRENCY}, "
                                                     "timeout 60 s, no-op handler decoding the new image"),
        ("record_path_us_per_record", f"{best['keys']:.2f} us",
         "per-key scheduler, best of " + ", ".join(f"{v:.2f}" for v in per_round["keys"])),
        ("lanes model (informational)", f"{best['lanes']:.2f} us",
         f"{LANES} lanes, best of " + ", ".join(f"{v:.2f}" for v in per_round["lanes"])),
    ]
    rows += provenance_rows(source, load_before)
    print_table("record path: submit -> key scheduler -> delivery -> no-op handler, CPU per record", rows)
    return {
        "record_path_us_per_record": round(best["keys"], 2),
        "record_path_lanes_us_per_record": round(best["lanes"], 2),
        "record_path_records": records,
        "record_path_bench_load_avg": load_before,
        "record_path_bench_worker_source": source,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    merge("record_path", run(args.records, args.rounds), replace_prefix="record_path_")


if __name__ == "__main__":
    main()
