"""LeaseCoordinator: heartbeats, lease taking and self-fencing for one worker.

Protocol in short (full text and invariants: docs/leases.md):

* Liveness is per worker: the worker row's ``heartbeat`` counter is bumped every
  ``duration/3``. A lease is expired when its owner's heartbeat was not seen to change
  for ``duration`` on the observer's own monotonic clock (no clock sync needed), or the
  owner has no worker row.
* Taking bumps the lease ``counter`` conditionally on the counter (and owner) seen, which
  fences the previous owner: its next checkpoint fails and it stops that shard.
* Self-fencing: a worker whose last successful heartbeat was *sent* more than
  ``duration - heartbeat_interval`` ago stops all its shards, so it stops before any
  observer can have seen its heartbeat still for a whole ``duration``.
* A worker takes free and expired leases up to its fair share,
  ``ceil(unfinished leases / live workers)``, and an optional cap.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Callable

import structlog

from worker.config import LeaseConfig
from worker.leases.model import Lease, WorkerBeat
from worker.leases.table import LeaseTable
from worker.observability import metrics

log = structlog.get_logger(__name__)

LeaseKey = tuple[str, str]


class LeaseCoordinator:
    def __init__(
        self,
        lease_table: LeaseTable,
        worker_id: str,
        config: LeaseConfig,
        *,
        streams: Callable[[], dict[str, str]],
        on_acquired: Callable[[Lease], None],
        on_lost: Callable[[Lease], None],
    ) -> None:
        self._table = lease_table
        self.worker_id = worker_id
        self._config = config
        self._streams = streams  # stream arn -> logical table, from discovery
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self.held: dict[LeaseKey, Lease] = {}
        self._seen: dict[str, tuple[int, float]] = {}  # worker -> (heartbeat, when it last changed)
        self._last_renewed: float | None = None  # monotonic time the last good heartbeat was sent
        self.taking = True
        self._log = log.bind(worker=worker_id)

    # -- liveness ----------------------------------------------------------------------

    @property
    def safe_window(self) -> float:
        return self._config.duration_seconds - self._config.heartbeat_interval

    @property
    def renewing(self) -> bool:
        return self._last_renewed is not None and time.monotonic() - self._last_renewed < self.safe_window

    async def heartbeat_once(self, stopping: bool = False) -> bool:
        sent = time.monotonic()
        try:
            await self._table.heartbeat(self.worker_id, len(self.held), stopping=stopping)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure counts as a missed heartbeat
            self._log.warning("miss heartbeat", error=type(exc).__name__, detail=str(exc)[:200])
            self._fence_if_stale()
            return False
        self._last_renewed = sent
        return True

    def _fence_if_stale(self) -> None:
        if self.held and self._last_renewed is not None and not self.renewing:
            self._log.error("stop all shards: heartbeat not renewed in time", leases=len(self.held))
            for lease in list(self.held.values()):
                self._lose(lease)

    def _lose(self, lease: Lease) -> None:
        self.held.pop(lease.key, None)
        self._on_lost(lease)

    async def run_heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.heartbeat_once()
            self._fence_if_stale()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._config.heartbeat_interval)
            except TimeoutError:
                pass

    # -- taking ------------------------------------------------------------------------

    def _observe(self, workers: list[WorkerBeat], now: float) -> None:
        current = {w.worker_id for w in workers}
        for beat in workers:
            previous = self._seen.get(beat.worker_id)
            if previous is None or previous[0] != beat.heartbeat:
                self._seen[beat.worker_id] = (beat.heartbeat, now)
        for gone in set(self._seen) - current:
            del self._seen[gone]

    def _alive(self, worker_id: str, now: float) -> bool:
        if worker_id == self.worker_id:
            return True
        seen = self._seen.get(worker_id)
        return seen is not None and now - seen[1] < self._config.duration_seconds

    async def take_pass(self) -> list[Lease]:
        """One pass: notice lost leases, then take free/expired ones up to the fair share."""
        streams = self._streams()
        # Leases before workers: a worker writes its row before it takes any lease, so an
        # owner we see on a lease is already in the worker list read after it.
        leases: list[Lease] = []
        for stream_arn in streams:
            leases.extend(await self._table.list_leases(stream_arn))
        workers = await self._table.list_workers()
        now = time.monotonic()
        self._observe(workers, now)
        by_key = {lease.key: lease for lease in leases}

        for key, mine in list(self.held.items()):
            row = by_key.get(key)
            if row is None or row.owner != self.worker_id or row.counter != mine.counter:
                self._log.warning("notice lost lease", shard=key[1], owner=row.owner if row else None)
                self._lose(mine)

        unfinished = [lease for lease in leases if not lease.finished]
        live = {w.worker_id for w in workers if not w.stopping and self._alive(w.worker_id, now)}
        live.add(self.worker_id)
        cap = self._config.max_leases_per_worker
        if cap is not None:
            metrics.shards_unassigned.set(max(0, len(unfinished) - cap * len(live)))
        if not self.taking or not self.renewing:
            return []

        target = math.ceil(len(unfinished) / len(live)) if unfinished else 0
        if cap is not None:
            target = min(target, cap)
        wanted = target - len(self.held)
        if wanted <= 0:
            return []
        available = [
            lease
            for lease in unfinished
            if lease.key not in self.held
            and (lease.owner is None or lease.owner == self.worker_id or not self._alive(lease.owner, now))
        ]
        # Free leases first, then expired ones; shuffled so that workers starting together
        # do not all race for the same rows.
        random.shuffle(available)
        available.sort(key=lambda lease: lease.owner is not None)
        taken: list[Lease] = []
        for lease in available[:wanted]:
            result = await self._table.take(lease, self.worker_id)
            if result is None:
                continue
            event = "taken" if lease.owner in (None, self.worker_id) else "expired_taken"
            metrics.lease_events.labels(event).inc()
            self._log.info("take lease", shard=lease.shard_id, previous_owner=lease.owner, counter=result.counter)
            self.held[result.key] = result
            taken.append(result)
            self._on_acquired(result)
        return taken

    async def run_taker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.renewing:
                await self.take_pass()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._config.taker_interval_seconds)
            except TimeoutError:
                pass

    # -- giving up ---------------------------------------------------------------------

    def forget(self, lease: Lease) -> None:
        """The consumer ended the lease itself (shard end); nothing to release."""
        self.held.pop(lease.key, None)

    async def release(self, lease: Lease) -> bool:
        """Hand a lease back so another worker resumes from its checkpoint at once."""
        self.held.pop(lease.key, None)
        try:
            await self._table.release(lease)
        except Exception as exc:  # noqa: BLE001 - lost or unreachable: others take it on expiry
            self._log.warning("skip release", shard=lease.shard_id, error=type(exc).__name__)
            return False
        metrics.lease_events.labels("released").inc()
        return True

    async def leave(self) -> None:
        """Remove this worker's row: others stop counting it as live at once."""
        try:
            await self._table.remove_worker(self.worker_id)
        except Exception as exc:  # noqa: BLE001 - the row then expires like a dead worker's
            self._log.warning("skip worker row removal", error=type(exc).__name__)
