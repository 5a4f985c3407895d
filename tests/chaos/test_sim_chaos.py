"""Split, rotation and trim chaos on the stream simulator, with two worker processes.

Simulated time runs much faster than the test (``sim.advance``): a 600 s retention and
shards rotating every 250 s, plus explicit splits, GetRecords throttling (5 per shard per
second) and 5 % InternalServerError on every simulated call.

Phase 1: records flow while shards split and rotate and a worker is killed with -9 and
restarted: everything is handled at least once, in per-key order, with no checkpoint
moving backwards.

Phase 2: both workers are stopped (SIGTERM, exit 0) and kept behind the retention: records
written then are trimmed before any worker can read them, two shards holding them are
split (so those parents age out of the stream entirely) and the clock moves past the
retention; then new records are written and the workers started again. The trimmed
records are reported (the worker logs the trimmed data and counts it), and every record
still retained is handled, in per-key order (only trimmed records may be missing).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator

import pytest

from bench.cluster import Cluster, Written, wait_for
from worker.local.simulator import Simulator

pytestmark = pytest.mark.integration

SHARDS = 16
WORKERS = ["s-a", "s-b"]
RETENTION = 600.0  # simulated seconds
ROTATE = 250.0
STEP = 100.0
ROUNDS = 8
KEYS = [f"k{i:03d}" for i in range(48)]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=23, retention_seconds=RETENTION, auto_rotate_seconds=ROTATE,
                   throttle_enabled=True, error_rate=0.05) as simulator:
        yield simulator


def _log_events(cluster: Cluster) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for path in cluster.workdir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    counts[json.loads(line).get("event", "")] += 1
                except json.JSONDecodeError:
                    pass  # cut by kill -9
    return counts


def _retained(sim: Simulator, arn: str) -> set[tuple[str, str]]:
    found = set()
    for shard in sim.shards(arn, include_expired=True):
        for record in sim.records(arn, shard["ShardId"]):
            found.add((shard["ShardId"], record["dynamodb"]["SequenceNumber"]))
    return found


def _order_violations(cluster: Cluster, trimmed: set[tuple[str, str]]) -> list[str]:
    """Per key, a handled record's earlier records were all handled before it, except the
    ones trimmed before anyone could read them."""
    by_position = {(w.shard, w.seq): w for w in cluster.written}
    trimmed_n = {(by_position[t].key, by_position[t].n) for t in trimmed}
    done: dict[str, set[int]] = defaultdict(set)
    violations = []
    for line in cluster.handled():
        written = by_position.get((line["shard"], line["seq"]))
        if written is None:
            continue
        earlier = {n for n in range(written.n) if (written.key, n) not in trimmed_n}
        if not earlier <= done[written.key]:
            violations.append(f"{written.key}#{written.n} before #{min(earlier - done[written.key])}")
        done[written.key].add(written.n)
    return violations


def _closed_shards_done(cluster: Cluster, arn: str) -> bool:
    """Every closed shard's lease reads SHARD_END (or was cleaned up after it did)."""
    rows = {row["sk"]: row for row in cluster.leases()}
    return all(
        shard["ShardId"] not in rows or rows[shard["ShardId"]].get("checkpoint") == "SHARD_END"
        for shard in cluster.sim.shards(arn) if not shard["Open"]
    )


def test_splits_rotations_and_trimming_under_faults(cluster: Cluster, sim: Simulator) -> None:
    arn = sim.create_stream(cluster.table, shards=SHARDS, key_schema=("pk",))
    cluster.write_config(arn)
    for worker in WORKERS:
        cluster.start_worker(worker)
    cluster.start_checkpoint_monitor()

    # -- phase 1: splits, rotations and a kill -9 while records flow ---------------------
    for round_ in range(ROUNDS):
        cluster.write(KEYS)
        if round_ in (1, 4):
            for shard in [s["ShardId"] for s in sim.shards(arn) if s["Open"]][:2]:
                sim.split_shard(arn, shard)
        if round_ == 3:
            cluster.kill("s-b")
        if round_ == 5:
            cluster.start_worker("s-b")
        sim.advance(STEP)  # rotations fall due; nothing unread is older than the retention
        wait_for(lambda: not cluster.missing(), timeout=90, interval=0.25)
    assert cluster.order_violations() == []
    shards_seen = len(sim.shards(arn, include_expired=True))
    assert shards_seen > SHARDS + 4, f"expected splits and rotations, saw {shards_seen} shards"
    phase1 = _log_events(cluster)

    # -- phase 2: kept behind the retention ------------------------------------------------
    wait_for(lambda: _closed_shards_done(cluster, arn), timeout=60, interval=0.25)
    for worker in WORKERS:
        assert cluster.terminate(worker) == 0
    before = len(cluster.written)
    cluster.write(KEYS)  # never read by anyone: trimmed below
    behind = cluster.written[before:]
    for shard in sorted({w.shard for w in behind})[:2]:
        sim.split_shard(arn, shard)  # these parents will age out of the stream entirely
    sim.advance(RETENTION + STEP)
    retained_before_restart = _retained(sim, arn)
    trimmed = {(w.shard, w.seq) for w in behind}
    assert not trimmed & retained_before_restart
    before = len(cluster.written)
    cluster.write(KEYS)  # retained: must all be handled
    fresh: list[Written] = cluster.written[before:]
    for worker in WORKERS:
        cluster.start_worker(worker)

    handled = lambda: {(h["shard"], h["seq"]) for h in cluster.handled()}  # noqa: E731
    wait_for(lambda: {(w.shard, w.seq) for w in fresh} <= handled(), timeout=90, interval=0.25)
    retained = _retained(sim, arn)
    assert not (retained - handled()), "retained records never handled"
    assert {(m.shard, m.seq) for m in cluster.missing()} <= trimmed
    assert _order_violations(cluster, trimmed) == []
    assert cluster.checkpoint_regressions == []

    # The trimmed data was reported: records past the retention in shards still listed
    # (TrimmedDataAccessException), and shards that aged out of the stream altogether.
    events = _log_events(cluster)
    reported = {name: events.get(name, 0) - phase1.get(name, 0) for name in (
        "restart at trim horizon after trimmed data", "end shard that aged out of the stream after trimmed data")}
    assert reported["restart at trim horizon after trimmed data"] > 0, reported
    assert reported["end shard that aged out of the stream after trimmed data"] > 0, reported
    assert events.get("restart crashed consumer", 0) == 0, "a consumer crashed"
