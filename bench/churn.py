"""Shard churn on the stream simulator: records written without pause while shards are
rotated and split, and what a child's start cost, from the handled-record log of
bench/recording_handlers.py. Shared by bench/child_start_bench.py and tests/lineage (a
benchmark imports nothing from tests/, so it lives here)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from bench.cluster import Cluster, Written


@dataclass(frozen=True)
class ChildStart:
    parent: str
    child: str
    gap_seconds: float  # the child's first record handled minus the parent's last handled


def churn(cluster: Cluster, stream_arn: str, *, changes: int, every_seconds: float, keys: int,
          rng: random.Random, per_tick: int = 16, tail_seconds: float = 1.5) -> list[str]:
    """Every 20 ms write one record of each of the next ``per_tick`` of ``keys`` keys (in
    turn: many keys, so that every shard of a split receives some), and every
    ``every_seconds`` rotate or split (alternately) one open shard picked at random; keep
    writing ``tail_seconds`` after the last change so every child receives records. Returns
    the parents closed."""
    names = [f"k{i:04d}" for i in range(keys)]
    counts = dict.fromkeys(names, 0)
    closed: list[str] = []
    next_change = time.monotonic() + every_seconds
    end: float | None = None
    turn = 0
    while end is None or time.monotonic() < end:
        batch = [names[(turn + i) % keys] for i in range(per_tick)]
        turn += per_tick
        for key in batch:
            shard, seq = cluster.sim.put_record(cluster.table, {"pk": key}, {"pk": key, "n": counts[key]})
            cluster.written.append(Written(key, counts[key], shard, seq))
            counts[key] += 1
        if end is None and time.monotonic() >= next_change:
            open_shards = [s["ShardId"] for s in cluster.sim.shards(stream_arn) if s["Open"]]
            parent = rng.choice(open_shards)
            if len(closed) % 2:
                cluster.sim.split_shard(stream_arn, parent)
            else:
                cluster.sim.rotate_shard(stream_arn, parent)
            closed.append(parent)
            next_change += every_seconds
            if len(closed) == changes:
                end = time.monotonic() + tail_seconds
        time.sleep(0.02)
    return closed


def child_starts(cluster: Cluster, stream_arn: str, parents: list[str]) -> list[ChildStart]:
    """For each closed parent and each of its children: the child's first handled record
    (the earliest handling of any of its records) minus the parent's last (the latest
    first handling of any of its records). Redeliveries after a take-over do not count.
    Lineage makes every gap positive: a child starts only after its parent's end."""
    first_handled: dict[tuple[str, str], float] = {}
    for line in cluster.handled():
        key = (line["shard"], line["seq"])
        first_handled[key] = min(first_handled.get(key, line["t"]), line["t"])
    by_shard: dict[str, list[tuple[int, float]]] = {}
    for (shard, seq), t in first_handled.items():
        by_shard.setdefault(shard, []).append((int(seq), t))
    children: dict[str, list[str]] = {}
    for shard in cluster.sim.shards(stream_arn):
        if shard.get("ParentShardId"):
            children.setdefault(shard["ParentShardId"], []).append(shard["ShardId"])
    starts = []
    for parent in parents:
        if not by_shard.get(parent):
            continue  # nothing was written to it: no last record to measure from
        parent_last = max(t for _, t in by_shard[parent])
        for child in children.get(parent, []):
            if by_shard.get(child):
                child_first = min(t for _, t in by_shard[child])
                starts.append(ChildStart(parent, child, child_first - parent_last))
    return starts
