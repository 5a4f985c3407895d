"""Lag benchmark: how long after a write its handler starts, at a steady moderate rate,
with the product's default reader settings (idle poll 0.25 s backing off to 1 s).

The seed config (config/worker.yaml: tables, routes, max_concurrency 10, reader and lease
defaults) runs on a moto server (``bench.moto_server``: atomic stream sequence numbers), with its two handlers wrapped by bench/lag_handlers.py
so that each first notes its wall-clock start time. After the worker holds both leases
and has been idle for ``--settle`` seconds (its readers at the back-off ceiling), this
process writes ``--rate`` NEW orders per second for ``--seconds`` seconds; each order
carries ``writtenAt``, this process's ``time.time()`` just before its PutItem (moto's
ApproximateCreationDateTime is too coarse to measure with). Same machine, same clock.

* ``lag_p50_ms`` / ``lag_p99_ms``: order-processing handler start - writtenAt.
* ``chain_lag_p50_ms`` / ``chain_lag_p99_ms`` (informational): shipment-dispatch handler
  start - the order's writtenAt, i.e. both hops including the outbox write.

Run: ``python -m bench.lag_bench [--rate 20] [--seconds 30]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from bench.results import merge, print_table
from bench.support import (
    provenance_rows,
    worker_source_hash,
    load_average,
    BenchMoto,
    Processes,
    count_events,
    create_tables,
    percentile,
    seed_document,
    start_worker,
    wait_for,
    write_config,
)


def handled(directory: Path, route: str) -> dict[str, dict[str, Any]]:
    """order id -> the first line its handler wrote for ``route``."""
    path = directory / f"{route}.jsonl"
    found: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                found.setdefault(entry["orderId"], entry)
    return found


def run(rate: float, seconds: float, settle: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lag-bench-"))
    load_before = load_average()
    source = worker_source_hash()
    notes = workdir / "handled"
    notes.mkdir()
    written: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        moto = BenchMoto().start()
        stack.callback(moto.stop)
        procs = stack.enter_context(Processes())  # exits first: workers stop before moto
        doc = seed_document(moto.url, f"lag{uuid.uuid4().hex[:6]}-")
        wrappers = {"order-processing": "bench.lag_handlers:process_order_timed",
                    "shipment-dispatch": "bench.lag_handlers:dispatch_shipment_timed"}
        for route in doc["routes"]:
            route["handler"] = wrappers[route["name"]]
            route["options"] = {"dir": str(notes)}
        config = write_config(workdir / "worker.yaml", doc)
        log = workdir / "worker.log"
        create_tables(config, workdir / "create-tables.log")
        proc = start_worker(procs, config, log)
        wait_for(lambda: count_events(log, "start shard") >= 2, timeout=60, interval=0.1,
                 what="both shards started", alive=proc)
        time.sleep(settle)  # every reader backs off to max_idle_poll_seconds

        ddb = boto3.client("dynamodb", endpoint_url=moto.url, region_name="us-east-1")
        table = doc["tables"]["orders"]["name"]
        total = int(rate * seconds)
        start = time.monotonic()
        late = 0
        for i in range(total):
            due = start + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                late += 1
            order_id = f"lag-{i:05d}"
            written_at = time.time()
            ddb.put_item(TableName=table, Item={
                "orderId": {"S": order_id}, "status": {"S": "NEW"}, "amount": {"N": "12.5"},
                "writtenAt": {"N": repr(written_at)}})
            written[order_id] = written_at
        achieved = total / (time.monotonic() - start)
        wait_for(lambda: len(handled(notes, "shipment-dispatch")) >= total
                 and len(handled(notes, "order-processing")) >= total,
                 timeout=60, interval=0.25, what="every order handled on both routes", alive=proc)
        exit_code = procs.stop(proc)

    first = handled(notes, "order-processing")
    second = handled(notes, "shipment-dispatch")
    lags = [1000 * (first[o]["startedAt"] - first[o]["writtenAt"]) for o in written]
    chain = [1000 * (second[o]["startedAt"] - written[o]) for o in written]
    p50, p90, p99 = (percentile(lags, p) for p in (50, 90, 99))
    c50, c99 = percentile(chain, 50), percentile(chain, 99)
    rows = [
        ("orders", f"{total} at {achieved:.1f}/s", f"{seconds:.0f} s; {late} writes started late; worker exit {exit_code}"),
        ("lag_p50_ms", f"{p50:.0f}", "target <= 300"),
        ("lag_p90_ms", f"{p90:.0f}", ""),
        ("lag_p99_ms", f"{p99:.0f}", "target <= 1000"),
        ("lag_max_ms", f"{max(lags):.0f}", f"min {min(lags):.0f}"),
        ("chain_lag_p50_ms", f"{c50:.0f}", "order written -> shipment handler start (2 hops)"),
        ("chain_lag_p99_ms", f"{c99:.0f}", ""),
    ]
    rows += provenance_rows(source, load_before)
    print_table("lag: write -> handler start (moto, default reader settings)", rows)
    return {
        "lag_bench_load_avg": load_before,
        "lag_bench_worker_source": source,
        "lag_p50_ms": round(p50, 1),
        "lag_p90_ms": round(p90, 1),
        "lag_p99_ms": round(p99, 1),
        "lag_max_ms": round(max(lags), 1),
        "chain_lag_p50_ms": round(c50, 1),
        "chain_lag_p99_ms": round(c99, 1),
        "lag_bench_orders": total,
        "lag_bench_rate_per_s": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=20.0, help="orders written per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before the first write")
    args = parser.parse_args()
    merge("lag", run(args.rate, args.seconds, args.settle))


if __name__ == "__main__":
    main()
