"""KeyScheduler: one route of one shard, ordered by partition key under concurrency bounds.

Records of one partition key are handed to the route in stream order, one call at a time
(a key is *claimed* while a call holds any of its records); records of different keys run
concurrently. Two bounds hold at once:

* the route's ``max_concurrency``: calls in flight for this route on this shard;
* the process-wide ``call_slots`` (:class:`CallSlots`, ``processing.max_concurrent_handler_calls``)
  shared by every shard, so a thousand busy shards cannot open a thousand times
  ``max_concurrency`` calls.

A slot (one of each) is held by a call, never by a record waiting out its back-off:
:func:`sleep_without_slots` (what the engine passes to ``RouteDelivery`` as ``sleep``)
gives both back, sleeps, and takes them again. The failing key stays claimed meanwhile, so
it blocks only its own later records (the design of Confluent's parallel consumer, instead
of fixed lanes that put unrelated keys behind a poison record).

Batch routes: a batch takes the oldest ready keys, each with its queued records in order,
up to ``batch_size`` (waiting up to ``batching_window_seconds`` for more). A key is in at
most one batch in flight. A key is given back as soon as all of its records in the batch
are finished (handled or parked), so after a partial failure only the failed keys wait for
the retry; the others go on in the next batch.

Workers are tasks started on demand, at most ``max_concurrency`` not sleeping, and end
when nothing is ready: an idle shard costs no task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextvars import ContextVar
from heapq import heappop, heappush
from typing import Any, Callable, Hashable, Protocol

from worker.processing.router import Route
from worker.records import StreamRecord

PartitionKey = Hashable
# What a batch worker takes for one call: the records (stream order), their keys, and
# which key each record (by id) belongs to.
_Taken = tuple[list[StreamRecord], list[PartitionKey], dict[int, PartitionKey]]

# The worker running in the current task: lets the back-off sleep and the finishing hook
# reach the slots and the claimed keys of the call they happen in, whichever RouteDelivery
# (built by the processing engine) calls them.
_current_worker: ContextVar[_Worker | None] = ContextVar("key_scheduler_worker", default=None)


class Delivery(Protocol):
    """What a scheduler calls: a route's ``RouteDelivery`` (a protocol, because delivery
    imports this module's :func:`record_finished`)."""

    async def deliver(
        self, records: list[StreamRecord], key_of: Callable[[StreamRecord], Hashable] | None = None
    ) -> None: ...

    async def deliver_record(self, record: StreamRecord, task: asyncio.Task[Any] | None = None) -> None: ...

    def oldest_failure_seconds(self) -> float: ...


class CallSlots:
    """A bound on calls in flight (a route's, or the process's), taken without awaiting
    when one is free: two slots per record on the hot path, where an ``asyncio.Semaphore``
    costs a coroutine each. A slot given back goes straight to the oldest waiter."""

    __slots__ = ("limit", "free", "_waiters")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def take(self) -> None:
        if self.free:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed over as the waiter was cancelled: pass it on
            raise

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class _Worker:
    __slots__ = ("scheduler", "holds_slots", "open_keys", "open_counts")

    def __init__(self, scheduler: KeyScheduler) -> None:
        self.scheduler = scheduler
        self.holds_slots = False
        # Batch calls only: unfinished records of the call (id -> key) and their count per key.
        self.open_keys: dict[int, PartitionKey] = {}
        self.open_counts: dict[PartitionKey, int] = {}


async def sleep_without_slots(delay: float) -> None:
    """Sleep ``delay`` seconds without holding a concurrency slot (back-off between attempts).

    Called from a scheduler's worker, it gives the route's and the process's slot back,
    sleeps, and takes them again before the next attempt; anywhere else it just sleeps.
    """
    worker = _current_worker.get()
    if worker is None or not worker.holds_slots:
        await asyncio.sleep(delay)
        return
    await worker.scheduler.sleep_released(worker, delay)


def record_finished(record: StreamRecord) -> None:
    """Tell the current batch call that ``record`` is finished (its key may be given back)."""
    worker = _current_worker.get()
    if worker is not None and worker.open_keys:
        worker.scheduler.finish_in_call(worker, record)


class KeyScheduler:
    def __init__(
        self,
        route: Route,
        delivery: Delivery,
        *,
        call_slots: CallSlots | None,
        on_worker_done: Callable[[asyncio.Task[None]], None],
        task_name: str,
    ) -> None:
        self._route = route
        self._delivery = delivery
        self._limit = route.max_concurrency
        self._slots = CallSlots(route.max_concurrency)
        self._call_slots = call_slots
        self._on_worker_done = on_worker_done
        self._task_name = task_name
        # Records not yet in a call, per key, as (ordinal, record); ordinals follow stream order.
        self._queues: dict[PartitionKey, deque[tuple[int, StreamRecord]]] = {}
        # Keys with queued records and no call: (ordinal of the oldest queued record, key).
        # Oldest first keeps the route as close to stream order as the keys allow, and
        # exactly in stream order with max_concurrency 1.
        self._ready: list[tuple[int, PartitionKey]] = []
        self._claimed: set[PartitionKey] = set()
        self._workers = 0  # tasks alive
        self._sleeping = 0  # of them, waiting out a back-off without slots
        self._starting = 0  # of them, started and not yet past their first take
        self._calls = 0  # of them, holding both slots (the route's and the process's): running a call
        self._gathering = False  # a batch worker is waiting out the batching window
        self._arrived = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- feeding -------------------------------------------------------------------------

    def submit(self, key: PartitionKey, ordinal: int, record: StreamRecord) -> None:
        queue = self._queues.get(key)
        if queue is None:
            # A key without a queue is never claimed (a call's keys keep theirs until given back).
            self._queues[key] = deque(((ordinal, record),))
            heappush(self._ready, (ordinal, key))
            if self._workers - self._sleeping < self._limit:
                self._maybe_start_worker()
        else:
            queue.append((ordinal, record))
            if len(queue) == 1 and key not in self._claimed:
                heappush(self._ready, (ordinal, key))
                self._maybe_start_worker()
        if self._gathering:
            self._arrived.set()

    def _give_back(self, key: PartitionKey) -> None:
        """The call holding ``key`` is done with it: its next record may go."""
        self._claimed.discard(key)
        queue = self._queues[key]
        if queue:
            heappush(self._ready, (queue[0][0], key))
            self._maybe_start_worker()
        else:
            del self._queues[key]

    # -- workers -------------------------------------------------------------------------

    def _maybe_start_worker(self) -> None:
        if self._closed or not self._ready or self._workers - self._sleeping >= self._limit:
            return
        if self._route.is_batch:
            # One batch gathers at a time, else a window would split records over many batches.
            wanted = self._starting == 0 and not self._gathering
        else:
            wanted = len(self._ready) > self._starting
        if wanted:
            self._workers += 1
            self._starting += 1
            work = self._work() if self._route.is_batch else self._work_records()
            task = asyncio.create_task(work, name=self._task_name)
            self.tasks.add(task)
            task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._on_worker_done(task)

    async def _work_records(self) -> None:
        """Per-record route: one record of the oldest ready key per call (the hot path)."""
        worker = _Worker(self)
        _current_worker.set(worker)
        self._starting -= 1
        ready, queues, claimed, deliver = self._ready, self._queues, self._claimed, self._delivery.deliver_record
        slots, process = self._slots, self._call_slots
        task = asyncio.current_task()
        try:
            while ready:
                _, key = heappop(ready)
                queue = queues[key]
                _, record = queue.popleft()
                claimed.add(key)
                if ready and self._workers - self._sleeping < self._limit:
                    self._maybe_start_worker()  # the rest of what is ready may need a worker
                if slots.free and (process is None or process.free):  # _take_slots, inlined
                    slots.free -= 1
                    if process is not None:
                        process.free -= 1
                    worker.holds_slots = True
                    self._calls += 1
                else:
                    await self._take_slots(worker)
                try:
                    await deliver(record, task)
                finally:
                    if worker.holds_slots:  # _give_slots, inlined for the common case
                        worker.holds_slots = False
                        self._calls -= 1
                        if process is not None:
                            process.give()
                        if slots._waiters:
                            slots.give()
                        else:
                            slots.free += 1
                claimed.discard(key)  # as _give_back, without waking a worker: this one goes on
                if queue:
                    heappush(ready, (queue[0][0], key))
                else:
                    del queues[key]
        finally:
            self._workers -= 1

    async def _work(self) -> None:
        """Batch route: gather a batch of ready keys, call, repeat while keys are ready."""
        worker = _Worker(self)
        _current_worker.set(worker)
        starting = True
        try:
            while True:
                taken = await self._gather_batch()
                if starting:
                    starting = False
                    self._starting -= 1
                if taken is None:
                    return
                self._maybe_start_worker()  # the rest of what is ready needs its own worker
                await self._call(worker, taken)
        finally:
            if starting:
                self._starting -= 1
            self._workers -= 1

    async def _gather_batch(self) -> _Taken | None:
        if not self._ready:
            return None
        route = self._route
        batch: list[tuple[int, StreamRecord, PartitionKey]] = []
        keys: list[PartitionKey] = []
        self._fill(batch, keys)
        if route.batching_window_seconds > 0 and len(batch) < route.batch_size:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + route.batching_window_seconds
            self._gathering = True
            try:
                while len(batch) < route.batch_size:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except TimeoutError:
                        break
                    self._fill(batch, keys)
            finally:
                self._gathering = False
        batch.sort(key=_ordinal)  # the handler sees the batch in stream order
        return [record for _, record, _ in batch], keys, {id(record): key for _, record, key in batch}

    def _fill(self, batch: list[tuple[int, StreamRecord, PartitionKey]], keys: list[PartitionKey]) -> None:
        """Add queued records of the batch's keys, then of the oldest ready keys, in key order."""
        size = self._route.batch_size
        for key in keys:
            self._move(key, batch, size)
        while self._ready and len(batch) < size:
            _, key = heappop(self._ready)
            self._claimed.add(key)
            keys.append(key)
            self._move(key, batch, size)

    def _move(self, key: PartitionKey, batch: list[tuple[int, StreamRecord, PartitionKey]], size: int) -> None:
        queue = self._queues[key]
        while queue and len(batch) < size:
            ordinal, record = queue.popleft()
            batch.append((ordinal, record, key))

    async def _call(self, worker: _Worker, taken: _Taken) -> None:
        records, _, open_keys = taken
        counts: dict[PartitionKey, int] = {}
        for key in open_keys.values():
            counts[key] = counts.get(key, 0) + 1
        key_by_id = dict(open_keys)  # open_keys empties as the call finishes records
        worker.open_keys, worker.open_counts = open_keys, counts
        await self._take_slots(worker)
        try:
            await self._delivery.deliver(records, lambda record: key_by_id[id(record)])
        finally:
            self._give_slots(worker)
        # Keys were given back as their records finished; any left go now.
        left = list(worker.open_counts)
        worker.open_keys, worker.open_counts = {}, {}
        for key in left:
            self._give_back(key)

    def finish_in_call(self, worker: _Worker, record: StreamRecord) -> None:
        key = worker.open_keys.pop(id(record), None)
        if key is None:
            return
        left = worker.open_counts[key] - 1
        if left:
            worker.open_counts[key] = left
        else:
            del worker.open_counts[key]
            self._give_back(key)

    # -- slots ---------------------------------------------------------------------------

    async def _take_slots(self, worker: _Worker) -> None:
        # Always the route's slot first, then the process's: one order everywhere, no deadlock.
        slots, process = self._slots, self._call_slots
        if slots.free and (process is None or process.free):
            slots.free -= 1  # both free: no waiter ahead of us (a freed slot goes to a waiter first)
            if process is not None:
                process.free -= 1
        else:
            await slots.take()
            if process is not None:
                try:
                    await process.take()
                except BaseException:
                    slots.give()
                    raise
        worker.holds_slots = True
        self._calls += 1

    def _give_slots(self, worker: _Worker) -> None:
        if not worker.holds_slots:
            return  # cancelled while taking them back after a back-off
        worker.holds_slots = False
        self._calls -= 1
        if self._call_slots is not None:
            self._call_slots.give()
        self._slots.give()

    async def sleep_released(self, worker: _Worker, delay: float) -> None:
        self._give_slots(worker)
        self._sleeping += 1
        try:
            self._maybe_start_worker()  # its slot may serve another key meanwhile
            await asyncio.sleep(delay)
        finally:
            self._sleeping -= 1
        await self._take_slots(worker)

    # -- load (read at scrape time) --------------------------------------------------------

    @property
    def calls_in_flight(self) -> int:
        """Calls running now: holding both the route's and the process's slot (a worker
        holding the route's slot while it waits for the process's is not counted)."""
        return self._calls

    @property
    def oldest_failure_seconds(self) -> float:
        """Seconds since the first failed call of this route's longest-failing record (0.0: none)."""
        return self._delivery.oldest_failure_seconds()

    @property
    def calls_in_backoff(self) -> int:
        """Calls waiting out a back-off (without a slot)."""
        return self._sleeping

    # -- stopping ------------------------------------------------------------------------

    def close(self) -> list[asyncio.Task[None]]:
        """Start no more workers; return the running ones (cancelled)."""
        self._closed = True
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        return tasks


def _ordinal(entry: tuple[int, StreamRecord, PartitionKey]) -> int:
    return entry[0]
