"""How often a process's idle shards poll, and when.

Each empty GetRecords costs about a millisecond of CPU in the SDK when calls come back to
back, and twice that when they come one at a time (every call then runs on cold CPU caches;
bench/README.md has the measurement). So the budget does two things for idle shards:

* it caps their polls per second for the whole process: while more shards are idle than
  ``polls_per_second * max_idle_poll_seconds``, each one's back-off ceiling grows to
  ``idle shards / polls_per_second``;
* it groups their polls in time: a long idle wait ends on the next multiple of
  ``TICK_SECONDS`` of the event-loop clock, shared by every reader due in that tick, so
  their calls run together, and one timer serves them all.

A shard that receives records polls at full speed again at once, so lag under load is
unaffected; the first record after a long quiet spell may wait up to the ceiling plus a tick.

It also lets a writer wake readers: :meth:`wake` ends the idle wait of every reader of one
stream (by its logical table) at once, so a record this process just wrote there (an
event published to an outbox table whose stream it also reads) is read now, not after the
reader's back-off. Wakes of a stream are spaced by ``idle readers of it / polls_per_second``
(at least ``MIN_WAKE_SECONDS``), a wake due sooner is deferred to then, so waking costs at
most the budget's polls per second per stream, whatever the number of shards.
"""

from __future__ import annotations

import asyncio
import math
import time


class IdlePollBudget:
    TICK_SECONDS = 0.5
    MIN_WAKE_SECONDS = 0.05

    def __init__(self, polls_per_second: float) -> None:
        self.polls_per_second = polls_per_second
        self.idle_readers = 0
        self._ticks: dict[int, asyncio.Future[None]] = {}
        self._idle_by_stream: dict[str, int] = {}
        self._wakes: dict[str, asyncio.Future[None]] = {}  # stream -> done on its next wake
        self._next_wake: dict[str, float] = {}  # stream -> loop time a wake may run again
        self._deferred: set[str] = set()
        self._last_write: dict[str, float] = {}  # stream -> time.monotonic() of its last wake call

    def enter_idle(self, stream: str) -> None:
        self.idle_readers += 1
        self._idle_by_stream[stream] = self._idle_by_stream.get(stream, 0) + 1

    def leave_idle(self, stream: str) -> None:
        self.idle_readers -= 1
        self._idle_by_stream[stream] -= 1

    def woken(self, stream: str, since: float) -> asyncio.Future[None]:
        """A future done at the next :meth:`wake` of ``stream``, shared by its readers (wait
        on it with ``asyncio.wait``, like a tick). ``since``: the ``time.monotonic()`` at
        which the caller's last read began; a write woken since then (while it was reading, so it may have
        missed it) wakes it again, within the same spacing."""
        future = self._wakes.get(stream)
        if future is None or future.done():
            future = self._wakes[stream] = asyncio.get_running_loop().create_future()
        if self._last_write.get(stream, -math.inf) > since:
            self.wake(stream)
        return future

    def wake(self, stream: str) -> None:
        """Records were just written to ``stream``: its idle readers poll now (or at the
        earliest time the spacing allows). Safe to call often: a wake with nobody waiting
        costs a dict lookup."""
        self._last_write[stream] = time.monotonic()
        loop = asyncio.get_running_loop()
        future = self._wakes.get(stream)
        if future is None or future.done() or stream in self._deferred:
            return
        due = self._next_wake.get(stream, 0.0)
        if loop.time() < due:
            self._deferred.add(stream)
            loop.call_at(due, self._wake_deferred, stream)
            return
        self._wake_now(stream, loop.time())

    def _wake_deferred(self, stream: str) -> None:
        self._deferred.discard(stream)
        future = self._wakes.get(stream)
        if future is not None and not future.done():
            self._wake_now(stream, asyncio.get_running_loop().time())

    def _wake_now(self, stream: str, now: float) -> None:
        idle = self._idle_by_stream.get(stream, 0)
        spacing = idle / self.polls_per_second if self.polls_per_second > 0 else 0.0
        self._next_wake[stream] = now + max(self.MIN_WAKE_SECONDS, spacing)
        self._wakes.pop(stream).set_result(None)

    def ceiling(self, configured: float) -> float:
        """The longest idle wait between two polls of one shard."""
        if self.polls_per_second <= 0:
            return configured
        return max(configured, self.idle_readers / self.polls_per_second)

    def tick_after(self, delay: float) -> asyncio.Future[None]:
        """A future done at the first tick at least ``delay`` seconds from now; shared by
        every caller due in that tick. Wait on it with ``asyncio.wait``, which never
        cancels it (a plain ``await`` cancelled would cancel it for everyone)."""
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + delay) / self.TICK_SECONDS)
        future = self._ticks.get(tick)
        if future is None:
            future = loop.create_future()
            self._ticks[tick] = future
            loop.call_at(tick * self.TICK_SECONDS, self._end_tick, tick)
        return future

    def _end_tick(self, tick: int) -> None:
        future = self._ticks.pop(tick)
        if not future.done():
            future.set_result(None)
