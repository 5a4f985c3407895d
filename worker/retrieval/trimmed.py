"""The trimmed-data policy, in one place: what happens when records a shard still owes are
past the stream's 24 h retention.

Two readers of the stream meet it: the shard reader (``TrimmedDataAccessException`` at its
position) and the consumer (a closed shard that aged out of ``DescribeStream`` entirely).
Either way records were lost before anybody read them, so both count
``trimmed_data_total`` (the TrimmedData alert) and then, by ``reader.on_trimmed_data``,
stop the shard (``TrimmedDataError``: the supervisor holds it stopped for an operator) or
go on past the gap, which each caller does its own way (restart at ``TRIM_HORIZON``, end
the shard so its children start).

The exception is the exception met while still reading from ``TRIM_HORIZON``: nothing was
handed out since, so nothing can have been skipped. DynamoDB Local raises it on a fresh
shard when other tables' writes moved its database-wide sequence counter past the shard's
start. That is a stale iterator, renewed quietly (an info log and its own counter).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from worker.config import ReaderConfig
from worker.errors import TrimmedDataError
from worker.observability import metrics

# Renewing at the horizon again at once is fine; an endpoint that keeps saying so is not
# spun on: the pause doubles from 0.2 s up to this.
MAX_HORIZON_PAUSE_SECONDS = 1.0


@dataclass(frozen=True)
class TrimmedDataPolicy:
    stop_shard: bool
    stream_label: str  # the metrics' ``stream`` label (the logical table)
    shard_id: str

    @classmethod
    def from_config(cls, config: ReaderConfig, stream_label: str, shard_id: str) -> "TrimmedDataPolicy":
        return cls(config.on_trimmed_data == "stop_shard", stream_label, shard_id)

    def records_lost(self, log: FilteringBoundLogger, position: str | None, reason: str,
                     cause: BaseException | None = None) -> None:
        """Records were trimmed before they were read: count it; then raise
        :class:`TrimmedDataError` (``stop_shard``) or return, and the caller goes on past
        the gap (and logs how)."""
        metrics.trimmed_data.labels(self.stream_label).inc()
        if self.stop_shard:
            detail = str(cause)[:200] if cause is not None else None
            log.error("stop shard on trimmed data", position=position, reason=reason, detail=detail)
            raise TrimmedDataError(f"{self.shard_id}: {reason} at {position}") from cause

    async def stale_at_horizon(self, log: FilteringBoundLogger, retries: int) -> None:
        """Trimmed data met at ``TRIM_HORIZON`` (nothing lost): count it apart from the
        alert's counter, and pause before the next renewal when it repeats at once."""
        metrics.trimmed_at_horizon.labels(self.stream_label).inc()
        log.info("renew iterator at trim horizon after trimmed data", retries=retries)
        if retries > 1:
            await asyncio.sleep(min(0.05 * 2 ** retries, MAX_HORIZON_PAUSE_SECONDS))
