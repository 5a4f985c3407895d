"""LeaseCoordinator: heartbeats, lease taking, balancing and self-fencing for one worker.

Protocol in short (full text and invariants: docs/leases.md):

* Liveness is per worker: the worker row's ``heartbeat`` counter is bumped every
  ``heartbeat_interval``. A worker is live while its heartbeat was seen to change within
  ``duration`` on the observer's own monotonic clock (no clock sync needed). A lease is
  expired when its owner is not live or has no worker row.
* Every ``poll_interval`` a worker reads the worker rows (one small ``Query``). It reads
  the lease rows (one ``Query`` per stream) only when the live set changed, when one of
  its own leases was stolen, when it is below its fair share, or every ``scan_interval``.
* Taking bumps the lease ``counter`` conditionally on the counter and owner seen, which
  fences the previous owner: its next checkpoint fails and it stops that shard.
* Fair share is ``ceil(unfinished leases / live workers)`` (or the cap). Free and expired
  leases are taken first; when none is left, a worker below its share steals from the most
  loaded worker, at most ``max_steals_per_pass`` a pass and only while the victim holds at
  least two more leases than the thief, so a steal never reverses the imbalance (no thrash).
* Self-fencing: a worker whose last successful heartbeat was *sent* more than
  ``duration - heartbeat_interval`` ago stops all its shards, before any observer can have
  seen its heartbeat still for a whole ``duration``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from typing import Callable, Sequence

import structlog

from worker.config import LeaseConfig
from worker.leases.model import Lease, WorkerBeat
from worker.leases.table import LeaseTable
from worker.observability import metrics
from worker.retry import call_aws
from worker.supervision import sleep_until_stopped

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
        self._streams = streams  # stream arn -> logical table
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self.held: dict[LeaseKey, Lease] = {}
        self._seen: dict[str, tuple[int, float]] = {}  # worker -> (heartbeat, when it last changed)
        self._last_renewed: float | None = None  # monotonic time the last good heartbeat was sent
        self.live: frozenset[str] = frozenset({worker_id})
        self._stopping_workers: frozenset[str] = frozenset()
        self._my_lease_changes = 0
        self._last_scan = -math.inf
        self._target = 0
        self._scan_requested = True
        self.taking = True
        # One lease pass at a time: take_pass judges held leases against rows it read before
        # its awaits, so a take between that read and its check would look like a loss.
        self._pass_lock = asyncio.Lock()
        self._log = log.bind(worker=worker_id)

    # -- liveness ----------------------------------------------------------------------

    @property
    def safe_window(self) -> float:
        return self._config.duration_seconds - self._config.heartbeat_interval

    @property
    def renewing(self) -> bool:
        return self._last_renewed is not None and time.monotonic() - self._last_renewed < self.safe_window

    @property
    def is_leader(self) -> bool:
        """The live worker with the smallest id runs the shared chores (shard discovery).
        Two leaders for a moment are harmless: every chore is a conditional write."""
        return min(self.live) == self.worker_id

    def _until_fence(self) -> float | None:
        """Seconds left before the self-fencing deadline; None when not renewing."""
        if self._last_renewed is None or not self.renewing:
            return None
        return max(0.0, self._last_renewed + self.safe_window - time.monotonic())

    async def heartbeat_once(self, stopping: bool = False) -> bool:
        self._fence_if_stale()  # past the deadline already: stop before waiting on the call
        sent = time.monotonic()
        try:
            # A call that hangs (SDK timeouts exceed the lease duration) must not hold the
            # fence back: give up on it at the deadline and count it as a missed heartbeat.
            await asyncio.wait_for(
                self._table.heartbeat(self.worker_id, len(self.held), stopping=stopping),
                timeout=self._until_fence(),
            )
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
        metrics.lease_events.labels("lost").inc()
        self._on_lost(lease)

    async def run_heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.heartbeat_once()
            self._fence_if_stale()
            wait = self._config.heartbeat_interval
            left = self._until_fence()
            if left is not None:
                wait = min(wait, left)  # wake up at the deadline at the latest, to fence on time
            await sleep_until_stopped(stop, wait)

    # -- observing other workers -------------------------------------------------------

    def _observe(self, workers: list[WorkerBeat], now: float) -> None:
        current = {w.worker_id for w in workers}
        for beat in workers:
            previous = self._seen.get(beat.worker_id)
            if previous is None or previous[0] != beat.heartbeat:
                self._seen[beat.worker_id] = (beat.heartbeat, now)
        for gone in set(self._seen) - current:
            del self._seen[gone]
        live = frozenset(
            w.worker_id for w in workers if not w.stopping and self._alive(w.worker_id, now)
        ) | {self.worker_id}
        stopping = frozenset(w.worker_id for w in workers if w.stopping)
        mine = next((w for w in workers if w.worker_id == self.worker_id), None)
        if live != self.live or stopping != self._stopping_workers:
            self._scan_requested = True
        if mine is not None and mine.lease_changes != self._my_lease_changes:
            self._my_lease_changes = mine.lease_changes
            self._scan_requested = True  # someone stole from us: notice it now
        self.live, self._stopping_workers = live, stopping

    def _alive(self, worker_id: str, now: float) -> bool:
        if worker_id == self.worker_id:
            return True
        seen = self._seen.get(worker_id)
        return seen is not None and now - seen[1] < self._config.duration_seconds

    async def poll_workers(self) -> None:
        # Reads are retried in place (throttling, 5xx, resets): a crash of the taker loop
        # would stop taking and loss detection for the supervisor's restart delay.
        self._observe(await call_aws("Query", self._table.list_workers), time.monotonic())

    # -- the lease pass ----------------------------------------------------------------

    def _scan_due(self) -> bool:
        return (
            self._scan_requested
            or (self.taking and len(self.held) < self._target)
            or time.monotonic() - self._last_scan >= self._config.scan_interval_seconds
        )

    async def take_pass(self) -> list[Lease]:
        """Read every lease: notice lost ones, then take or steal up to the fair share."""
        async with self._pass_lock:
            return await self._take_pass()

    async def _take_pass(self) -> list[Lease]:
        self._scan_requested = False
        self._last_scan = time.monotonic()
        leases: list[Lease] = []
        for stream_arn in self._streams():
            leases.extend(await call_aws("Query", self._table.list_leases, stream_arn))
        # Leases before workers: a worker writes its row before it takes any lease, so an
        # owner seen on a lease is already in the worker list read after it.
        await self.poll_workers()
        now = time.monotonic()
        by_key = {lease.key: lease for lease in leases}

        for key, mine in list(self.held.items()):
            row = by_key.get(key)
            if row is None or row.owner != self.worker_id or row.counter != mine.counter:
                self._log.warning("notice lost lease", shard=key[1], owner=row.owner if row else None)
                self._lose(mine)

        unfinished = [lease for lease in leases if not lease.finished]
        cap = self._config.max_leases_per_worker
        if cap is not None:
            metrics.shards_unassigned.set(max(0, len(unfinished) - cap * len(self.live)))
        self._target = math.ceil(len(unfinished) / len(self.live)) if unfinished else 0
        if cap is not None:
            self._target = min(self._target, cap)
        if not self.taking or not self.renewing:
            return []
        wanted = self._target - len(self.held)
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
        taken = [lease for lease in [await self._take(lease, now) for lease in available[:wanted]] if lease]
        if not available:
            taken.extend(await self._steal(unfinished, now))
        return taken

    async def _take(self, lease: Lease, now: float) -> Lease | None:
        # Retried in place (throttling, 5xx, resets): an error escaping would crash the
        # taker loop and stop taking and loss detection until the supervisor restarts it.
        # A failed condition is not an error: take returns None, someone else got it.
        result = await call_aws("UpdateItem", self._table.take, lease, self.worker_id)
        if result is None:
            # Also when a retry finds the write of an attempt whose response was lost: the
            # row then names this worker, so the next pass takes it again.
            self._scan_requested = True
            return None
        if lease.owner in (None, self.worker_id):
            event = "taken"
        elif self._alive(lease.owner, now):
            event = "stolen"
        else:
            event = "expired_taken"
        metrics.lease_events.labels(event).inc()
        self._log.info("take lease", shard=lease.shard_id, previous_owner=lease.owner, counter=result.counter,
                       how=event)
        self.held[result.key] = result
        # Synchronously, here in the taker, with no await between the write's result and
        # the call: the shard's consumer starts in the same step in which the lease is
        # recorded as held, so a heartbeat or fencing pass (which may run at any await of
        # this loop) never sees a held lease without its consumer, or the other way round.
        self._on_acquired(result)
        return result

    async def _steal(self, unfinished: list[Lease], now: float) -> list[Lease]:
        loads = Counter(lease.owner for lease in unfinished if lease.owner and lease.owner in self.live)
        loads.pop(self.worker_id, None)
        if not loads or self._config.max_steals_per_pass == 0:
            return []
        victim, victim_load = max(loads.items(), key=lambda item: (item[1], item[0]))
        gap = victim_load - len(self.held)
        count = min(self._config.max_steals_per_pass, gap // 2, self._target - len(self.held))
        if count <= 0:
            return []
        candidates = [lease for lease in unfinished if lease.owner == victim]
        random.shuffle(candidates)
        stolen = [lease for lease in [await self._take(lease, now) for lease in candidates[:count]] if lease]
        if stolen:
            try:
                await self._table.notify_worker(victim)
            except Exception as exc:  # noqa: BLE001 - best effort: the victim's fenced writes fail anyway
                self._log.warning("skip stolen-lease notice", victim=victim, error=type(exc).__name__,
                                  detail=str(exc)[:200])
        return stolen

    async def take_children(
        self, stream_arn: str, parent_id: str, children: list[str], created: Sequence[Lease] = (),
    ) -> list[Lease]:
        """Take the children of a shard this worker just finished, now, not at the next pass.

        The worker that read a parent to its end is their natural owner (it just gave that
        lease up). A child is taken only when it is free (or its owner is dead) and every
        one of its parents is finished (a merge's other parent may still be read elsewhere:
        whoever finishes the last parent takes it). Takes are conditional like any other:
        a worker that took a child first keeps it. Within ``max_leases_per_worker``; the
        balancer evens out what a split adds (one lease becomes two). ``created``: rows this
        worker just created, taken as written without reading them back."""
        fresh = {lease.shard_id: lease for lease in created}
        taken: list[Lease] = []
        async with self._pass_lock:
            for child in children:
                cap = self._config.max_leases_per_worker
                if not self.taking or not self.renewing or (cap is not None and len(self.held) >= cap):
                    break
                row = fresh.get(child) or await call_aws("GetItem", self._table.get_lease, stream_arn, child)
                if row is None or row.finished or row.key in self.held:
                    continue
                now = time.monotonic()
                if row.owner is not None and row.owner != self.worker_id and self._alive(row.owner, now):
                    continue
                if not await self._parents_finished(row, parent_id):
                    continue
                lease = await self._take(row, now)
                if lease is not None:
                    taken.append(lease)
        return taken

    async def _parents_finished(self, lease: Lease, finished_parent: str) -> bool:
        for parent_id in lease.parent_shard_ids:
            if parent_id == finished_parent:
                continue
            parent = await call_aws("GetItem", self._table.get_lease, lease.stream_arn, parent_id)
            if parent is not None and not parent.finished:  # no row: cleaned up after finishing
                return False
        return True

    async def run_taker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.renewing:
                await self.poll_workers()
                if self._scan_due():
                    await self.take_pass()
            await sleep_until_stopped(stop, self._config.poll_interval_seconds)

    def request_scan(self) -> None:
        """New leases exist (discovery): look at them at the next poll."""
        self._scan_requested = True

    # -- giving up ---------------------------------------------------------------------

    def forget(self, lease: Lease) -> None:
        """The consumer ended the lease itself (shard end); nothing to release."""
        self.held.pop(lease.key, None)
        self._scan_requested = True  # its children may be waiting for a taker

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
        """Remove this worker's row: others stop counting it as live at their next poll."""
        try:
            await self._table.remove_worker(self.worker_id)
        except Exception as exc:  # noqa: BLE001 - the row then expires like a dead worker's
            self._log.warning("skip worker row removal", error=type(exc).__name__)
