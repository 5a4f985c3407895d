"""Children start at once (issue 11): two `stream-worker` processes over the stream
simulator while shards are rotated and split under a steady write load. Discovery runs
only at start-up here (``discovery_interval_seconds: 60``, longer than the test), so every
child that starts was leased and taken by the shard-end path; each must start after its
parent's last record (lineage) and well before any discovery pass could have found it.
Nothing is lost, per-key order holds across the splits, no checkpoint moves backwards."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from bench.churn import child_starts, churn
from bench.cluster import Cluster, balanced, wait_for
from worker.local.simulator import Simulator

pytestmark = pytest.mark.integration
WORKERS = ["w-a", "w-b"]
SHARDS = 4
CHANGES = 8  # 4 rotations, 4 splits: 12 children
# Far below the 60 s discovery interval, far above the ~1 s the shard-end path takes (a
# loaded CI machine included): what is asserted is that children start without discovery.
BOUND_SECONDS = 10.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=11) as simulator:
        yield simulator


def test_children_of_rotated_and_split_shards_start_without_waiting_for_discovery(cluster: Cluster) -> None:
    arn = cluster.sim.create_stream(cluster.table, shards=SHARDS, key_schema=("pk",))
    cluster.write_config(arn, reader={"discovery_interval_seconds": 60})
    for worker in WORKERS:
        cluster.start_worker(worker)
    cluster.start_checkpoint_monitor()
    wait_for(lambda: balanced(cluster.load(), WORKERS, SHARDS), timeout=40)

    parents = churn(cluster, arn, changes=CHANGES, every_seconds=1.0, keys=200, rng=random.Random(5))

    wait_for(lambda: not cluster.missing(), timeout=BOUND_SECONDS + 20)
    starts = child_starts(cluster, arn, parents)
    assert len(parents) == CHANGES
    assert sorted({start.parent for start in starts}) == sorted(parents)
    assert len(starts) == CHANGES + CHANGES // 2  # a rotation has one child, a split two
    late = [start for start in starts if not 0 < start.gap_seconds < BOUND_SECONDS]
    assert late == []
    assert cluster.order_violations() == []
    assert cluster.checkpoint_regressions == []
