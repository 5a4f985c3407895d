"""Child-start benchmark (issue 11): how long a child shard waits after its parent's end.

Two `stream-worker` processes at the product's default timings (discovery every 30 s) share
a stream of the simulator (8 shards to start) and a lease table on a moto server. Records
are written without pause (16 records of 400 keys in turn every 20 ms) while every 0.5 s one open shard, picked at
random, is rotated or split (alternately). Per child: its first record handled minus its
parent's last record handled (bench/churn.py), p50 / p99 over every child.

Run: ``python -m bench.child_start_bench [--changes 40] [--every 0.5]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import uuid
from pathlib import Path

from bench.results import merge, print_table
from bench.churn import child_starts, churn
from worker.local.moto_process import MotoServer
from bench.cluster import Cluster, balanced, wait_for
from worker.local.simulator import Simulator

WORKERS = ["bench-a", "bench-b"]
SHARDS = 8


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run(changes: int, every: float) -> dict[str, float]:
    moto = MotoServer().start()
    sim = Simulator(seed=13).start()
    workdir = Path(tempfile.mkdtemp(prefix="child-start-bench-"))
    cluster = Cluster(endpoint_url=moto.url, sim=sim, workdir=workdir, prefix=f"c{uuid.uuid4().hex[:6]}-",
                      table="bench-churn", duration=10.0)
    try:
        arn = sim.create_stream(cluster.table, shards=SHARDS, key_schema=("pk",))
        cluster.write_config(arn, product_timings=True)
        for worker in WORKERS:
            cluster.start_worker(worker)
        wait_for(lambda: balanced(cluster.load(), WORKERS, SHARDS), timeout=120, interval=0.05)
        parents = churn(cluster, arn, changes=changes, every_seconds=every, keys=400, rng=random.Random(3))
        wait_for(lambda: not cluster.missing(), timeout=120, interval=0.2)
        starts = child_starts(cluster, arn, parents)
        lost = len(cluster.missing())
        violations = len(cluster.order_violations())
    finally:
        cluster.stop_all()
        sim.stop()
        moto.stop()

    gaps_ms = [start.gap_seconds * 1000 for start in starts]
    p50, p99 = statistics.median(gaps_ms), percentile(gaps_ms, 0.99)
    rows = [
        ("workers x shards at start", f"{len(WORKERS)} x {SHARDS}", f"{changes} rotations/splits, one every {every} s"),
        ("child starts measured", str(len(gaps_ms)), "a rotation has one child, a split two"),
        ("child_start_p50_ms", f"{p50:.0f}", ""),
        ("child_start_p99_ms", f"{p99:.0f}", "goal <= 1,000 (discovery alone: up to 30,000)"),
        ("child_start_max_ms", f"{max(gaps_ms):.0f}", ""),
        ("lost / per-key order violations", f"{lost} / {violations}", "must be 0 / 0"),
    ]
    print_table("children start at once (shard end -> child's first record)", rows)
    return {
        "child_start_p50_ms": round(p50, 1),
        "child_start_p99_ms": round(p99, 1),
        "child_start_max_ms": round(max(gaps_ms), 1),
        "child_start_samples": len(gaps_ms),
        "child_start_bench_changes": changes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=40, help="rotations and splits, alternately")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between two of them")
    args = parser.parse_args()
    merge("child_start", run(args.changes, args.every), replace_prefix="child_start_")


if __name__ == "__main__":
    main()
