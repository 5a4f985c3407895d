"""ShardPipeline: hands one shard's records to the lanes of every route they match.

Each route has ``parallelization_factor`` lanes. A record goes to the lane chosen by a
stable hash of its partition key, so records of one key stay in order while other keys
run concurrently; with a factor of 1 the route sees the shard in stream order. A lane
takes what is queued (batch routes: up to ``batch_size``, waiting up to
``batching_window_seconds`` for more) and delivers it through the route's
:class:`RouteDelivery`. The shard's :class:`ShardProgress` (owned by its consumer) counts
what is finished and says how far the checkpoint may go.

Reading is throttled by ``max_in_flight_records``: a blocked lane (a record being retried)
holds back at most that many records of the shard, never the other shards.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Callable

from worker.observability import metrics
from worker.processing.delivery import RouteDelivery
from worker.processing.router import Route
from worker.processing.progress import ShardProgress
from worker.records import StreamRecord


# json.dumps with options builds a new encoder on every call; the lane rule's encoder is built once.
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
    ) -> None:
        self._routes_for = routes_for
        self._delivery_for = delivery_for
        self.progress = progress
        self._max_in_flight = max_in_flight
        self._hash_key = hash_key
        self._label = stream_label
        self._unrouted = metrics.records_unrouted.labels(stream_label)
        self._lanes: dict[tuple[str, int], asyncio.Queue[StreamRecord]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._closing = False

    # -- feeding -------------------------------------------------------------------------

    def _lane_index(self, route: Route, record: StreamRecord) -> int:
        if route.parallelization_factor == 1:
            return 0
        keys = record.raw.get("dynamodb", {}).get("Keys", {})
        key = keys.get(self._hash_key) if self._hash_key else None
        token = _KEY_ENCODER.encode(key if key is not None else keys)
        return zlib.crc32(token.encode()) % route.parallelization_factor

    def submit(self, record: StreamRecord) -> None:
        """Queue a record (in stream order) on the lane of every route it matches."""
        self._raise_failure()
        routes = self._routes_for(record)
        self.progress.add(record, len(routes))
        if not routes:
            self._unrouted.inc()
            return
        for route in routes:
            lane = (route.name, self._lane_index(route, record))
            queue = self._lanes.get(lane)
            if queue is None:
                queue = self._lanes[lane] = asyncio.Queue()
                task = asyncio.create_task(self._run_lane(route, queue), name=f"lane:{route.name}:{lane[1]}")
                self._tasks.add(task)
                task.add_done_callback(self._on_lane_done)
            queue.put_nowait(record)

    def skip(self, record: StreamRecord) -> None:
        """Acknowledge a record without routing it (e.g. older than AT_TIMESTAMP)."""
        self.progress.skip(record)

    # -- lanes ---------------------------------------------------------------------------

    async def _run_lane(self, route: Route, queue: asyncio.Queue[StreamRecord]) -> None:
        delivery = self._delivery_for(route)
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            if route.is_batch:
                deadline = loop.time() + route.batching_window_seconds
                while len(batch) < route.batch_size:
                    if not queue.empty():
                        batch.append(queue.get_nowait())
                        continue
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), remaining))
                    except TimeoutError:
                        break
            await delivery.deliver(batch)

    def _on_lane_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._failure is not None:
            return
        if task.cancelled():
            if self._closing:
                return
            # Only close() cancels lanes. A CancelledError that escaped a handler (or a
            # dead-letter write) ends the lane too: its records would stay unfinished forever
            # and drain() would hang without a trace, so it is a failure like any other.
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
            # everything that can make the condition true (a finish, a lane failure) runs on
            # this event loop and sets the event; it cannot run between the check above and
            # this clear (no await in between), and whatever runs after the clear sets the
            # event again, so wait() returns at once.
            changed.clear()
            await changed.wait()
        self._raise_failure()

    async def wait_for_capacity(self) -> None:
        await self._wait_until(lambda: self.progress.in_flight < self._max_in_flight)

    async def drain(self) -> None:
        """Return when every submitted record is finished (handled or parked)."""
        await self._wait_until(lambda: self.progress.idle)

    async def close(self) -> None:
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
