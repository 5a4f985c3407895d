"""The lease row: one per shard, keyed by stream ARN + shard id.

Layout of the lease table (hash ``pk``, range ``sk``):

* lease rows: ``pk = "lease#<stream arn>"``, ``sk = <shard id>``. The stream ARN is part
  of the key because shard ids are only unique within a stream (moto even reuses one id
  for every stream). One ``Query`` lists every lease of a stream.
* worker rows: ``pk = "worker"``, ``sk = <worker id>``: the worker's heartbeat counter.
  Liveness is per worker, not per lease, so an idle worker costs one write per
  heartbeat whatever number of shards it holds (see docs/leases.md).

``finishedRanges`` (optional) names the records past ``checkpoint`` that are already
finished (worker/checkpoint/ranges.py); a row without it has none.

``counter`` is the fencing token: it changes whenever the owner changes (take, steal,
release), and every owner-side write is conditional on ``owner`` and ``counter``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from worker.checkpoint.ranges import SeqRange, above, decode

SHARD_END = "SHARD_END"
LEASE_PREFIX = "lease#"
WORKER_PK = "worker"
FINISHED_RANGES = "finishedRanges"

log = structlog.get_logger(__name__)


def lease_pk(stream_arn: str) -> str:
    return f"{LEASE_PREFIX}{stream_arn}"


@dataclass(frozen=True)
class Lease:
    stream_arn: str
    shard_id: str
    table: str
    owner: str | None = None
    counter: int = 0
    checkpoint: str | None = None
    parent_shard_ids: tuple[str, ...] = ()
    child_shard_ids: tuple[str, ...] = ()
    updated_at: str | None = None
    finished_ranges: tuple[SeqRange, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.stream_arn, self.shard_id)

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    def owned_by(self, worker_id: str, counter: int) -> "Lease":
        return replace(self, owner=worker_id, counter=counter)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> "Lease":
        return cls(
            stream_arn=str(item["streamArn"]),
            shard_id=str(item["sk"]),
            table=str(item.get("table", "")),
            owner=item.get("owner") or None,
            counter=int(item.get("leaseCounter", 0)),
            checkpoint=item.get("checkpoint") or None,
            parent_shard_ids=tuple(item.get("parentShardIds") or ()),
            child_shard_ids=tuple(item.get("childShardIds") or ()),
            updated_at=item.get("updatedAt"),
            finished_ranges=_finished_ranges(item),
            extra={k: v for k, v in item.items() if k in ("checkpointedAt", "finishedAt", "createdAt")},
        )


def _finished_ranges(item: dict[str, Any]) -> tuple[SeqRange, ...]:
    """The row's finished ranges above its checkpoint. An unreadable attribute (edited by
    hand) is ignored with a warning: those records are then redone, never skipped wrongly."""
    text = item.get(FINISHED_RANGES)
    checkpoint = item.get("checkpoint")
    if not text or checkpoint == SHARD_END:
        return ()
    try:
        ranges = decode(str(text))
    except ValueError as exc:
        log.warning("ignore unreadable finished ranges", shard=item.get("sk"), reason=str(exc))
        return ()
    if checkpoint and str(checkpoint).isdigit():
        return tuple(above(ranges, int(checkpoint)))
    return ranges


@dataclass(frozen=True)
class WorkerBeat:
    """A worker row as read by others: who is alive is judged by the heartbeat changing."""

    worker_id: str
    heartbeat: int
    leases: int
    updated_at: str | None = None
    stopping: bool = False
    lease_changes: int = 0  # bumped by a worker that stole one of this worker's leases

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> "WorkerBeat":
        return cls(
            worker_id=str(item["sk"]),
            heartbeat=int(item.get("heartbeat", 0)),
            leases=int(item.get("leases", 0)),
            updated_at=item.get("updatedAt"),
            stopping=bool(item.get("stopping", False)),
            lease_changes=int(item.get("leaseChanges", 0)),
        )
