"""ShardPipeline: hands one shard's records to a :class:`KeyScheduler` per route they match.

Each route sees the records of one partition key in stream order, one call at a time, and
records of different keys concurrently, up to the route's ``max_concurrency`` and the
process-wide ``call_slots`` (see :mod:`worker.processing.key_scheduler`). A record being
retried holds back only the later records of its own key, and no slot while it sleeps:
give every ``RouteDelivery`` :func:`sleep_without_slots` as its ``sleep`` (the
:class:`ProcessingEngine` does). The shard's :class:`ShardProgress` (owned by its
consumer) counts what is finished and says how far the checkpoint may go.

Reading is throttled by ``max_in_flight_records``: a blocked key (a record being retried)
holds back at most that many records of the shard, never the other shards.
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable

from worker.observability import metrics
from worker.processing.delivery import RouteDelivery
from worker.processing.key_scheduler import CallSlots, KeyScheduler, PartitionKey
from worker.processing.progress import ShardProgress
from worker.processing.router import Route
from worker.records import StreamRecord


# json.dumps with options builds a new encoder on every call; the key rule's encoder is built once.
_KEY_ENCODER = json.JSONEncoder(sort_keys=True, default=str)


class ShardPipeline:
    def __init__(
        self,
        *,
        routes_for: Callable[[StreamRecord], list[Route]],
        delivery_for: Callable[[Route], RouteDelivery],
        progress: ShardProgress,
        max_in_flight: int,
        hash_key: str | None,
        stream_label: str,
        call_slots: CallSlots | None = None,
        on_close: Callable[[ShardPipeline], None] | None = None,
    ) -> None:
        """``call_slots`` bounds handler calls in flight across every pipeline that shares
        it (the process); None leaves only each route's ``max_concurrency``. ``on_close``
        is told when the pipeline is closed (the engine stops reading its load then)."""
        self._routes_for = routes_for
        self._delivery_for = delivery_for
        self.progress = progress
        self._max_in_flight = max_in_flight
        self._hash_key = hash_key
        self.stream_label = stream_label
        self._call_slots = call_slots
        self._on_close = on_close
        self._unrouted = metrics.records_unrouted.labels(stream_label)
        self._schedulers: dict[str, KeyScheduler] = {}
        self._ordinal = 0
        self._failure: BaseException | None = None
        self._closing = False

    # -- feeding -------------------------------------------------------------------------

    def _partition_key(self, record: StreamRecord) -> PartitionKey:
        """The ordering key: the hash key's value (all keys, encoded, when it is unknown)."""
        keys = record.raw.get("dynamodb", {}).get("Keys", {})
        value = keys.get(self._hash_key) if self._hash_key else None
        if value.__class__ is dict and len(value) == 1:
            for scalar in value.values():
                # S, N or B (base64): the string alone, as a table's hash key has one type.
                if scalar.__class__ is str:
                    return scalar
        return _KEY_ENCODER.encode(value if value is not None else keys)

    def _scheduler(self, route: Route) -> KeyScheduler:
        scheduler = self._schedulers.get(route.name)
        if scheduler is None:
            scheduler = self._schedulers[route.name] = KeyScheduler(
                route, self._delivery_for(route), call_slots=self._call_slots,
                on_worker_done=self._on_worker_done, task_name=f"route:{route.name}",
            )
        return scheduler

    def submit(self, record: StreamRecord) -> None:
        """Queue a record (in stream order) for every route it matches."""
        self._raise_failure()
        routes = self._routes_for(record)
        self.progress.add(record, len(routes))
        if not routes:
            self._unrouted.inc()
            return
        key = self._partition_key(record)
        ordinal = self._ordinal
        self._ordinal += 1
        schedulers = self._schedulers
        for route in routes:
            (schedulers.get(route.name) or self._scheduler(route)).submit(key, ordinal, record)

    def skip(self, record: StreamRecord) -> None:
        """Acknowledge a record without routing it (e.g. older than AT_TIMESTAMP)."""
        self.progress.skip(record)

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        if self._failure is not None:
            return
        if task.cancelled():
            if self._closing:
                return
            # Only close() cancels workers. A CancelledError that escaped a handler (or a
            # dead-letter write) ends the worker with its keys claimed: their records would
            # stay unfinished forever and drain() would hang without a trace, so it is a
            # failure like any other.
            failure: BaseException | None = RuntimeError(f"{task.get_name()} was cancelled from inside")
        else:
            failure = task.exception()
        if failure is not None:
            self._failure = failure
            self.progress.changed.set()  # wake the waiters, so that they raise it

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    # -- waiting -------------------------------------------------------------------------

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        changed = self.progress.changed
        while not condition():
            self._raise_failure()
            # Clear, then wait: no wake-up is lost between the check and the wait, because
            # everything that can make the condition true (a finish, a worker failure) runs
            # on this event loop and sets the event; it cannot run between the check above
            # and this clear (no await in between), and whatever runs after the clear sets
            # the event again, so wait() returns at once.
            changed.clear()
            await changed.wait()
        self._raise_failure()

    async def wait_for_capacity(self) -> None:
        progress = self.progress
        if self._failure is None and progress.in_flight < self._max_in_flight:
            return  # the common case, once per record: no closure, no inner coroutine
        await self._wait_until(lambda: progress.in_flight < self._max_in_flight)

    async def drain(self) -> None:
        """Return when every submitted record is finished (handled or parked)."""
        await self._wait_until(lambda: self.progress.idle)

    def schedulers(self) -> list[tuple[str, KeyScheduler]]:
        """(route name, scheduler) of every route this shard has fed so far (a copy)."""
        return list(self._schedulers.items())

    async def close(self) -> None:
        self._closing = True
        try:
            tasks = [task for scheduler in self._schedulers.values() for task in scheduler.close()]
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if self._on_close is not None:
                self._on_close(self)
