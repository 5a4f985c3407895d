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
"""

from __future__ import annotations

import asyncio
import math


class IdlePollBudget:
    TICK_SECONDS = 0.5

    def __init__(self, polls_per_second: float) -> None:
        self.polls_per_second = polls_per_second
        self.idle_readers = 0
        self._ticks: dict[int, asyncio.Future[None]] = {}

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
