"""Many-workers benchmark: time to balance, failover after kill -9, hand-off after SIGTERM,
and lease-table writes per idle shard-hour, at the product's default lease timings.

Three `stream-worker` processes share a stream of the simulator (32 shards by default) and
a lease table on a moto server. Run: ``python -m bench.leases_bench [--shards 32] [--idle 60]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from bench.results import merge, print_table
from worker.local.moto_process import MotoServer
from worker.local.processes import free_port
from bench.cluster import Cluster, balanced, wait_for
from worker.local.simulator import Simulator

WORKERS = ["bench-a", "bench-b", "bench-c"]
LEASE_DURATION = 10.0  # the product default, and KCL's default failover time


def lease_writes(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("stream_worker_lease_table_writes_total{")
    )


def handled_all(cluster: Cluster, targets: set[tuple[str, str]]) -> bool:
    seen = {(h["shard"], h["seq"]) for h in cluster.handled()}
    return targets <= seen


def write_to(cluster: Cluster, shards: set[str]) -> set[tuple[str, str]]:
    """One record on each of ``shards``; returns their (shard, sequence number)."""
    targets = set()
    for shard in sorted(shards):
        key = f"probe-{uuid.uuid4().hex[:8]}"
        _, seq = cluster.sim.put_record(cluster.table, {"pk": key}, {"pk": key, "n": 0}, shard_id=shard)
        targets.add((shard, seq))
    return targets


def run(shards: int, idle_seconds: float) -> dict[str, float]:
    moto = MotoServer().start()
    sim = Simulator(seed=11).start()
    workdir = Path(tempfile.mkdtemp(prefix="lease-bench-"))
    cluster = Cluster(endpoint_url=moto.url, sim=sim, workdir=workdir, prefix=f"b{uuid.uuid4().hex[:6]}-",
                      table="bench-load", duration=LEASE_DURATION)
    ports = {worker: free_port() for worker in WORKERS}
    try:
        arn = sim.create_stream(cluster.table, shards=shards, key_schema=("pk",))
        cluster.write_config(arn, product_timings=True)
        started = time.monotonic()
        for worker in WORKERS:
            cluster.start_worker(worker, metrics_port=ports[worker])
        wait_for(lambda: balanced(cluster.load(), WORKERS, shards), timeout=120, interval=0.05)
        balance_s = time.monotonic() - started

        # Idle cost: every write any worker makes to the lease table, over the window.
        time.sleep(2)
        before = sum(lease_writes(port) for port in ports.values())
        time.sleep(idle_seconds)
        after = sum(lease_writes(port) for port in ports.values())
        per_shard_hour = (after - before) / shards / (idle_seconds / 3600)
        kcl_per_shard_hour = 3600 / (LEASE_DURATION / 3)  # KCL renews each lease every failover/3

        # Failover: kill -9, then write to every orphaned shard; time until all are handled.
        victim = WORKERS[1]
        orphaned = {shard for shard, owner in cluster.owners().items() if owner == victim}
        cluster.kill(victim)
        killed = time.monotonic()
        targets = write_to(cluster, orphaned)
        wait_for(lambda: handled_all(cluster, targets), timeout=120, interval=0.05)
        failover_s = time.monotonic() - killed

        # Hand-off: SIGTERM, then write to every shard it held; time until all are handled.
        leaving = WORKERS[2]
        handed = {shard for shard, owner in cluster.owners().items() if owner == leaving}
        process = cluster.processes.pop(leaving)
        process.send_signal(15)
        signalled = time.monotonic()
        targets = write_to(cluster, handed)
        wait_for(lambda: handled_all(cluster, targets), timeout=120, interval=0.05)
        handoff_s = time.monotonic() - signalled
        exit_code = process.wait(timeout=30)
    finally:
        cluster.stop_all()
        sim.stop()
        moto.stop()

    rows = [
        ("workers x shards", f"{len(WORKERS)} x {shards}", ""),
        ("balance_s", f"{balance_s:.2f}", "3 workers started together"),
        ("failover_s", f"{failover_s:.2f}", f"target <= lease duration + 2 = {LEASE_DURATION + 2:.0f}; KCL 10-30"),
        ("handoff_s", f"{handoff_s:.2f}", f"target <= 2 (exit code {exit_code})"),
        ("lease_writes_per_shard_hour", f"{per_shard_hour:.1f}", f"KCL {kcl_per_shard_hour:.0f} at {LEASE_DURATION:.0f} s"),
        ("lease_write_ratio_vs_kcl", f"{kcl_per_shard_hour / max(per_shard_hour, 1e-9):.1f}x fewer", "goal 10x"),
    ]
    print_table("many workers (lease protocol)", rows)
    return {
        "balance_s": round(balance_s, 3),
        "failover_s": round(failover_s, 3),
        "handoff_s": round(handoff_s, 3),
        "lease_writes_per_shard_hour": round(per_shard_hour, 2),
        "kcl_lease_writes_per_shard_hour": round(kcl_per_shard_hour, 2),
        "lease_bench_shards": shards,
        "lease_bench_workers": len(WORKERS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--idle", type=float, default=60.0, help="idle window for the write count (s)")
    args = parser.parse_args()
    merge("leases", run(args.shards, args.idle))


if __name__ == "__main__":
    main()
