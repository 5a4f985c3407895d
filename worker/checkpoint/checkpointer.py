"""Checkpointer: writes a shard's progress into its lease row, fenced and monotonic.

It never writes a sequence number at or below the last one it wrote, so a checkpoint
can only move forwards; the conditional write (owner + counter) turns a stolen lease
into :class:`LeaseLostError` at the first write after the steal.
"""

from __future__ import annotations

import structlog

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

    def is_ahead(self, sequence_number: str | None) -> bool:
        if sequence_number is None:
            return False
        return self.checkpointed is None or int(sequence_number) > int(self.checkpointed)

    async def checkpoint(self, sequence_number: str | None) -> bool:
        """Write ``sequence_number`` if it moves the checkpoint forward. True if written."""
        if not self.is_ahead(sequence_number):
            return False
        assert sequence_number is not None
        try:
            with tracing.checkpoint(self._label, self.lease.shard_id, sequence_number):
                await self._table.checkpoint(self.lease, sequence_number)
        except LeaseLostError:
            metrics.checkpoints.labels(self._label, "lease_lost").inc()
            raise
        except Exception:
            metrics.checkpoints.labels(self._label, "error").inc()
            raise
        metrics.checkpoints.labels(self._label, "ok").inc()
        self.checkpointed = sequence_number
        return True

    async def finish(self, child_shard_ids: list[str]) -> None:
        """The shard was read to its end and everything in it is done."""
        await self._table.finish(self.lease, child_shard_ids)
        metrics.checkpoints.labels(self._label, "shard_end").inc()
