"""The lane scheduler the worker had before per-key scheduling (and Lambda's
ParallelizationFactor model), kept for the hot-shard benchmark to compare against.

A faithful copy of the old ``ShardPipeline`` lane rule for per-record routes: a record goes
to lane ``crc32(typed JSON of its partition key) % factor``; each lane is one queue and one
task delivering its records one after the other through the route's ``RouteDelivery``. Same
progress object (``ShardProgress``), same read-ahead bound (``wait_for_capacity``), same
surface the bench drives.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Callable

from worker.processing.delivery import RouteDelivery
from worker.processing.progress import ShardProgress
from worker.processing.router import Route
from worker.records import StreamRecord

_KEY_ENCODER = json.JSONEncoder(sort_keys=True, default=str)


class LanePipeline:
    def __init__(self, *, route: Route, delivery_for: Callable[[Route], RouteDelivery], factor: int,
                 progress: ShardProgress, hash_key: str, max_in_flight: int) -> None:
        self._route = route
        self._delivery_for = delivery_for
        self._factor = factor
        self._hash_key = hash_key
        self._max_in_flight = max_in_flight
        self.progress = progress  # its deliveries report to it too
        self._lanes: dict[int, asyncio.Queue[StreamRecord]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _lane_index(self, record: StreamRecord) -> int:
        keys = record.raw.get("dynamodb", {}).get("Keys", {})
        token = _KEY_ENCODER.encode(keys.get(self._hash_key))
        return zlib.crc32(token.encode()) % self._factor

    def submit(self, record: StreamRecord) -> None:
        self.progress.add(record, 1)
        lane = self._lane_index(record)
        queue = self._lanes.get(lane)
        if queue is None:
            queue = self._lanes[lane] = asyncio.Queue()
            task = asyncio.create_task(self._run_lane(queue))
            self._tasks.add(task)
        queue.put_nowait(record)

    async def _run_lane(self, queue: asyncio.Queue[StreamRecord]) -> None:
        delivery = self._delivery_for(self._route)
        while True:
            await delivery.deliver([await queue.get()])

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        changed = self.progress.changed
        while not condition():
            changed.clear()
            await changed.wait()

    async def wait_for_capacity(self) -> None:
        await self._wait_until(lambda: self.progress.in_flight < self._max_in_flight)

    async def drain(self) -> None:
        await self._wait_until(lambda: self.progress.idle)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
