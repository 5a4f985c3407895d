"""What a takeover redoes while a poison record is stuck (``make bench-takeover``).

One shard on a moto server: 5 records, a poison record (its handler fails; max_attempts -1,
no dead-letter destination: retried for ever), then 1,000 records of 200 other keys. Worker 1
runs until nothing more finishes (the poison holds the checkpoint; the later records of other
keys finish), and stops (hand-off: it releases the lease after its last checkpoint write).
Worker 2 takes the shard and runs until nothing more finishes. ``takeover_redone_records``
counts the records worker 2 called the handler with that worker 1 had already finished.

Measured twice in one run on the same data layout: ``processing.max_finished_ranges: 0``
(main's behaviour before finished ranges: only the checkpoint is written) and the default
(100 ranges). Both workers run in this process (the handler counts calls per sequence
number in memory), one after the other.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import takeover_handlers as handlers
from bench.results import merge, print_table
from bench.support import BenchMoto, load_average, provenance_rows, seed_document, worker_source_hash
from worker.app import App
from worker.aws import AwsClients
from worker.config import Config, parse_config
from worker.local.tables import create_tables

LATER = 1_000


def make_config(endpoint: str, prefix: str, max_ranges: int | None) -> Config:
    doc = seed_document(endpoint, prefix)
    doc["observability"] = {"metrics": {"port": 0}, "logging": {"level": "ERROR", "format": "json"}}
    doc["processing"].pop("dead_letter", None)
    doc["processing"]["retry"] = {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}
    doc["processing"]["checkpoint_interval_seconds"] = 1.0
    if max_ranges is not None:
        doc["processing"]["max_finished_ranges"] = max_ranges
    doc["leases"].update({"poll_interval_seconds": 0.2, "duration_seconds": 3})
    doc["reader"].update({"idle_poll_seconds": 0.05, "max_idle_poll_seconds": 0.2})
    doc["worker"]["shutdown_timeout_seconds"] = 5
    # Lambda's maximum: per-key scheduling reads it as max_concurrency 10, lanes as 10 lanes.
    doc["routes"] = [{"name": "count", "table": "orders", "handler": "bench.takeover_handlers:count_calls",
                      "parallelization_factor": 10}]
    return parse_config(doc, env={})


async def write_records(config: Config, clients: AwsClients) -> None:
    ddb = await clients.client("dynamodb")
    keys = [f"early-{i}" for i in range(5)] + ["poison"] + [f"k-{i % 200}" for i in range(LATER)]
    table = config.tables["orders"].name
    requests = [{"PutRequest": {"Item": {"orderId": {"S": key}, "n": {"N": str(i)}, "status": {"S": "NEW"}}}}
                for i, key in enumerate(keys)]
    for start in range(0, len(requests), 25):  # 25 distinct keys a batch (k-* repeat every 200)
        await ddb.batch_write_item(RequestItems={table: requests[start:start + 25]})


async def run_until_stuck(config: Config) -> None:
    app = App(config)
    await app.start()
    try:
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 3.0:  # nothing new finished for 3 s
            await asyncio.sleep(0.25)
            if len(handlers.succeeded) != seen:
                seen, quiet_since = len(handlers.succeeded), time.monotonic()
    finally:
        await app.stop()


async def scenario(endpoint: str, max_ranges: int | None) -> dict[str, int]:
    handlers.reset()
    prefix = f"tk{int(time.time() * 1000) % 10**8}-"
    config = make_config(endpoint, prefix, max_ranges)
    clients = AwsClients(config.aws)
    try:
        await create_tables(config, clients)
        await write_records(config, clients)
    finally:
        await clients.close()
    await run_until_stuck(config)
    first = set(handlers.succeeded)
    handlers.calls.clear()
    await run_until_stuck(config)
    redone = sum(count for seq, count in handlers.calls.items() if seq in first)
    return {"finished_by_first": len(first), "redone": redone,
            "handled_by_second": len(handlers.succeeded - first)}


async def main() -> None:
    load_before = load_average()
    moto = BenchMoto().start()
    try:
        before = await scenario(moto.url, max_ranges=0)
        after = await scenario(moto.url, max_ranges=None)
    finally:
        moto.stop()
    values = {
        "takeover_finished_past_stuck": after["finished_by_first"] - 5,
        "takeover_finished_past_stuck_before": before["finished_by_first"] - 5,
        "takeover_redone_records_before": before["redone"],
        "takeover_redone_records": after["redone"],
        "takeover_bench_worker_source": worker_source_hash(),
        "takeover_bench_load_avg": load_before,
    }
    merge("takeover", values, replace_prefix="takeover_")
    print_table("takeover past a stuck poison record (1 shard, 1,000 later records)", [
        ("records finished past the stuck one by worker 1", str(values["takeover_finished_past_stuck"]),
         f"of {LATER}"),
        ("takeover_redone_records_before (max_finished_ranges 0)", str(before["redone"]),
         "main: every finished one"),
        ("takeover_redone_records (default, 100 ranges)", str(after["redone"]), "target 0"),
        *provenance_rows(values["takeover_bench_worker_source"], load_before),
    ])


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        asyncio.run(main())
