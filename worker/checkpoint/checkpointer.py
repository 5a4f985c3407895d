"""Checkpointer: writes a shard's progress into its lease row, fenced and monotonic.

It never writes a sequence number at or below the last one it wrote, so a checkpoint
can only move forwards. The same write carries the finished ranges past the checkpoint
(worker/checkpoint/ranges.py); a change of those alone is written too, without touching
the checkpoint: that is what a stuck record with later records finishing produces. The
conditional write (owner + counter) turns a stolen lease
into :class:`LeaseLostError` at the first write after the steal.
"""

from __future__ import annotations

import structlog

from worker.checkpoint.ranges import SeqRange, encode
from worker.errors import LeaseLostError
from worker.leases.model import Lease
from worker.leases.table import LeaseTable
from worker.observability import metrics, tracing

log = structlog.get_logger(__name__)


class Checkpointer:
    def __init__(self, lease_table: LeaseTable, lease: Lease, stream_label: str) -> None:
        self._table = lease_table
        self.lease = lease
        self._label = stream_label
        # Positions set by reset-checkpoint (TRIM_HORIZON, LATEST) are starting points, not
        # sequence numbers: any record read after them moves the checkpoint.
        usable = lease.checkpoint and lease.checkpoint.isdigit()
        self.checkpointed: str | None = lease.checkpoint if usable else None
        # The finished ranges as last written (the lease's until this owner writes).
        self.finished_ranges: tuple[SeqRange, ...] = lease.finished_ranges
        self._ranges_written = encode(lease.finished_ranges)

    def is_ahead(self, sequence_number: str | None) -> bool:
        if sequence_number is None:
            return False
        return self.checkpointed is None or int(sequence_number) > int(self.checkpointed)

    async def checkpoint(self, sequence_number: str | None, finished_ranges: tuple[SeqRange, ...] = ()) -> bool:
        """Write ``sequence_number`` if it moves the checkpoint forward, with the finished
        ranges past it; or the ranges alone if only they changed. True if written."""
        ahead = self.is_ahead(sequence_number)
        encoded = encode(finished_ranges)
        if not ahead and encoded == self._ranges_written:
            return False
        position = sequence_number if ahead else None
        try:
            with tracing.checkpoint(self._label, self.lease.shard_id, position or self.checkpointed or ""):
                await self._table.checkpoint(self.lease, position, finished_ranges)
        except LeaseLostError:
            metrics.checkpoints.labels(self._label, "lease_lost").inc()
            raise
        except Exception:
            metrics.checkpoints.labels(self._label, "error").inc()
            raise
        metrics.checkpoints.labels(self._label, "ok").inc()
        if position is not None:
            self.checkpointed = position
        self._ranges_written = encoded
        self.finished_ranges = finished_ranges
        return True

    async def finish(self, child_shard_ids: list[str]) -> None:
        """The shard was read to its end and everything in it is done."""
        await self._table.finish(self.lease, child_shard_ids)
        metrics.checkpoints.labels(self._label, "shard_end").inc()
