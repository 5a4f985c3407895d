"""End-to-end benchmark: orders/s through the seed's chain (order -> PROCESSING +
ShipmentRequested event -> DISPATCHED shipment), the worker against a naive consumer.

Both variants run config/worker.yaml itself (its tables, routes, handlers, reader and
lease timings), with prefixed table names and the endpoint of a moto server that is fresh
for each variant:

* naive: a one-record-at-a-time consumer, i.e. the same worker with
  ``parallelization_factor: 1`` on both routes: each shard's records are handled one
  after the other, in stream order, as a plain GetRecords -> handle -> next loop does (and
  as Lambda does with its default ParallelizationFactor 1 and batch size 1).
* worker: the seed config's defaults (``parallelization_factor: 10`` on both routes).

``--orders`` NEW orders are written up front; then ``stream-worker run`` starts. Time
from the first consumer's "start shard" log line (process start-up is not counted) to
the worker's log line for the last order's DISPATCHED shipment; the shipments table is
checked afterwards. ``e2e_vs_naive_ratio`` = worker orders/s / naive orders/s.

moto is the bottleneck of both: one moto_server process serves every request under the
GIL (120-220 conditional UpdateItem/s one at a time on this shared machine, at most
~1.4x more with 10 in flight; measured first, every run), and each order costs 3 writes
(conditional update, outbox put, conditional shipment put) plus its share of the
GetRecords calls. The moto server is
``bench.moto_server`` (moto_server whose stream sequence numbers are assigned atomically:
plain moto_server gives two records the same number when one table is written from
several connections at once, which the worker's parallel lanes do).

``--latency-ms`` (default 10) then runs both variants again with the worker talking to
moto through the simulator as a forwarding proxy that adds that latency to every request,
as a network round trip to DynamoDB would: ``e2e_vs_naive_ratio_with_latency``,
informational.

Run: ``python -m bench.e2e_bench [--orders 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aioboto3
import boto3

from bench.results import merge, print_table
from bench.support import (
    worker_source_hash,
    load_average,
    BenchMoto,
    Processes,
    cpu_seconds,
    create_tables,
    first_event_time,
    log_events,
    log_time,
    seed_document,
    start_simulator,
    start_worker,
    wait_for,
    write_config,
)


def variant_document(endpoint: str, prefix: str, parallelization: int | None) -> dict[str, Any]:
    """The seed config on ``endpoint``; ``parallelization`` overrides both routes' factor
    (None: the seed's own)."""
    doc = seed_document(endpoint, prefix)
    if parallelization is not None:
        for route in doc["routes"]:
            route["parallelization_factor"] = parallelization
    return doc


def write_orders(ddb: Any, table: str, order_ids: list[str]) -> None:
    for start in range(0, len(order_ids), 25):
        requests = [{"PutRequest": {"Item": {"orderId": {"S": oid}, "status": {"S": "NEW"},
                                             "amount": {"N": "12.5"}, "customerId": {"S": f"c-{i % 50}"}}}}
                    for i, oid in enumerate(order_ids[start:start + 25])]
        pending: dict[str, Any] = {table: requests}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def scan(ddb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = ddb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def moto_ceiling(updates: int = 300) -> dict[int, float]:
    """Conditional UpdateItem/s a fresh moto server sustains with 1 and with 10 requests in
    flight (aioboto3 from this process): how much any concurrency can gain against moto."""

    async def measure() -> dict[int, float]:
        rates: dict[int, float] = {}
        moto = BenchMoto().start()
        try:
            session = aioboto3.Session(region_name="us-east-1")
            async with session.client("dynamodb", endpoint_url=moto.url) as client:
                await client.create_table(
                    TableName="ceiling", KeySchema=[{"AttributeName": "orderId", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "orderId", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                    StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
                for concurrency in (1, 10):
                    keys = [f"{concurrency}-{i}" for i in range(updates)]
                    for key in keys:
                        await client.put_item(TableName="ceiling", Item={"orderId": {"S": key}, "status": {"S": "NEW"}})
                    gate = asyncio.Semaphore(concurrency)

                    async def update(key: str) -> None:
                        async with gate:
                            await client.update_item(
                                TableName="ceiling", Key={"orderId": {"S": key}},
                                UpdateExpression="SET #s = :processing", ConditionExpression="#s = :new",
                                ExpressionAttributeNames={"#s": "status"},
                                ExpressionAttributeValues={":processing": {"S": "PROCESSING"}, ":new": {"S": "NEW"}})

                    started = time.perf_counter()
                    await asyncio.gather(*(update(key) for key in keys))
                    rates[concurrency] = updates / (time.perf_counter() - started)
        finally:
            moto.stop()
        return rates

    return asyncio.run(measure())


def dispatched_times(log: Path) -> dict[str, float]:
    """order id -> when the worker logged its shipment as dispatched (first time)."""
    found: dict[str, float] = {}
    for event in log_events(log):
        if event.get("event") in ("dispatch shipment", "skip shipment already dispatched"):
            found.setdefault(str(event.get("order_id")), log_time(event))
    return found


def run_variant(name: str, parallelization: int | None, orders: int, workdir: Path,
                latency_ms: float = 0.0) -> dict[str, Any]:
    """One variant on a fresh moto server. ``latency_ms`` > 0: the worker reaches moto through
    the simulator as a forwarding proxy (separate process) that adds that much latency to
    every request, as a network round trip to DynamoDB would."""
    with contextlib.ExitStack() as stack:
        moto = BenchMoto().start()
        stack.callback(moto.stop)
        procs = stack.enter_context(Processes())  # exits first: workers stop before moto
        endpoint = moto.url
        if latency_ms > 0:
            endpoint, _, _ = start_simulator(procs, [], "--upstream", moto.url, "--latency", str(latency_ms / 1000),
                                             log=workdir / f"{name}-proxy.log")
        prefix = f"e2e{uuid.uuid4().hex[:6]}-"
        doc = variant_document(endpoint, prefix, parallelization)
        config = write_config(workdir / f"{name}.yaml", doc)
        log = workdir / f"{name}.log"
        create_tables(config, workdir / f"{name}-create.log")
        ddb = boto3.client("dynamodb", endpoint_url=moto.url, region_name="us-east-1")
        order_ids = [f"order-{name}-{i:05d}" for i in range(orders)]
        write_orders(ddb, doc["tables"]["orders"]["name"], order_ids)
        proc = start_worker(procs, config, log)
        try:
            wait_for(lambda: first_event_time(log, "start shard") is not None, timeout=60, interval=0.02,
                     what="first consumer start", alive=proc)
            moto_pid = moto.pid
            cpu_start, moto_start, clock = cpu_seconds(proc.pid), cpu_seconds(moto_pid), time.monotonic()
            wait_for(lambda: len(dispatched_times(log)) >= orders, timeout=170, interval=0.25,
                     what=f"{orders} shipments dispatched ({name})", alive=proc)
            window = time.monotonic() - clock
            cpu_used, moto_used = cpu_seconds(proc.pid) - cpu_start, cpu_seconds(moto_pid) - moto_start
        finally:
            procs.stop(proc)
        started = first_event_time(log, "start shard", stream="orders") or first_event_time(log, "start shard")
        assert started is not None
        done = dispatched_times(log)
        finished = max(done[oid] for oid in order_ids)
        # Every order must have its DISPATCHED shipment, checked in the table itself.
        dispatched = {i["orderId"]["S"] for i in scan(ddb, doc["tables"]["shipments"]["name"])
                      if i["status"]["S"] == "DISPATCHED"}
        missing = set(order_ids) - dispatched
        if missing:
            raise RuntimeError(f"{name}: {len(missing)} orders without a DISPATCHED shipment")
    seconds = finished - started
    factors = sorted({r.get("parallelization_factor", 1) for r in doc["routes"]})
    return {"orders_per_s": orders / seconds, "seconds": seconds, "factor": factors,
            "cpu_pct": 100 * cpu_used / window, "moto_cpu_pct": 100 * moto_used / window}


def describe(result: dict[str, Any]) -> str:
    return (f"{result['seconds']:.2f} s; CPU: worker {result['cpu_pct']:.0f}%, "
            f"moto {result['moto_cpu_pct']:.0f}% of a core")


def run(orders: int, latency_ms: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    load_before = load_average()
    source = worker_source_hash()
    print(f"logs in {workdir}")
    ceiling = moto_ceiling()
    print(f"moto ceiling: {ceiling[1]:.0f} conditional UpdateItem/s one at a time, {ceiling[10]:.0f}/s with 10 in flight")
    naive = run_variant("naive", 1, orders, workdir)
    print(f"naive: {naive['orders_per_s']:.1f} orders/s ({describe(naive)})")
    worker = run_variant("worker", None, orders, workdir)
    print(f"worker: {worker['orders_per_s']:.1f} orders/s ({describe(worker)})")
    ratio = worker["orders_per_s"] / naive["orders_per_s"]
    rows = [
        ("orders", str(orders), "written up front; moto server, fresh per variant"),
        ("e2e_naive_orders_per_s", f"{naive['orders_per_s']:.1f}", f"parallelization_factor 1; {describe(naive)}"),
        ("e2e_worker_orders_per_s", f"{worker['orders_per_s']:.1f}",
         f"seed defaults (factor {worker['factor'][0]}); {describe(worker)}"),
        ("e2e_vs_naive_ratio", f"{ratio:.2f}x", "target >= 3x"),
        ("moto conditional UpdateItem/s", f"{ceiling[1]:.0f} / {ceiling[10]:.0f}",
         f"1 / 10 in flight: concurrency gains {ceiling[10] / ceiling[1]:.2f}x at most"),
    ]
    values: dict[str, Any] = {
        "e2e_vs_naive_ratio": round(ratio, 3),
        "e2e_worker_orders_per_s": round(worker["orders_per_s"], 2),
        "e2e_naive_orders_per_s": round(naive["orders_per_s"], 2),
        "e2e_bench_orders": orders,
        "e2e_bench_load_avg": load_before,
        "e2e_bench_worker_source": source,
        "e2e_moto_cpu_pct_worker": round(worker["moto_cpu_pct"], 1),
        "e2e_moto_updates_per_s_1_in_flight": round(ceiling[1], 1),
        "e2e_moto_updates_per_s_10_in_flight": round(ceiling[10], 1),
    }
    if latency_ms > 0:
        slow_naive = run_variant("naive-latency", 1, orders, workdir, latency_ms)
        print(f"naive + {latency_ms:g} ms: {slow_naive['orders_per_s']:.1f} orders/s ({describe(slow_naive)})")
        slow_worker = run_variant("worker-latency", None, orders, workdir, latency_ms)
        print(f"worker + {latency_ms:g} ms: {slow_worker['orders_per_s']:.1f} orders/s ({describe(slow_worker)})")
        slow_ratio = slow_worker["orders_per_s"] / slow_naive["orders_per_s"]
        rows += [
            (f"naive, +{latency_ms:g} ms per request", f"{slow_naive['orders_per_s']:.1f}", describe(slow_naive)),
            (f"worker, +{latency_ms:g} ms per request", f"{slow_worker['orders_per_s']:.1f}", describe(slow_worker)),
            ("e2e_vs_naive_ratio_with_latency", f"{slow_ratio:.2f}x",
             f"informational: {latency_ms:g} ms added to every AWS request (forwarding proxy)"),
        ]
        values.update({
            "e2e_vs_naive_ratio_with_latency": round(slow_ratio, 3),
            "e2e_added_latency_ms": latency_ms,
        })
    rows.append(("worker source (sha256 of worker/**/*.py)", source, "the code measured"))
    rows.append(("machine load (1 min avg)", f"{load_before:.2f} -> {load_average():.2f}", "start -> end of the run, 2 cores"))
    print_table("end to end: seed chain, worker vs one-record-at-a-time", rows)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=10.0,
                        help="also run both variants with this latency added to every request (0: skip)")
    args = parser.parse_args()
    merge("e2e", run(args.orders, args.latency_ms))


if __name__ == "__main__":
    main()
