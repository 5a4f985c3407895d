"""ShardProgress: one shard's progress, carried as one object from delivery to checkpoint.

The consumer creates it and hands it to the shard's pipeline, which hands it to every
route delivery. Each layer calls the one method that concerns it:

* the pipeline ``add``s records in stream order (with the number of routes they owe) and
  ``skip``s the ones it acknowledges without routing;
* a delivery says ``finish(record)`` when one route is done with a record (handled or
  parked), and ``failing()`` when a call failed;
* the consumer's checkpoint loop waits on ``moved`` (the finished prefix may have moved)
  and ``urgent`` (a record is failing: write what is finished now, so a restart does not
  redo it), and writes ``finished_up_to``;
* the pipeline's capacity and drain waits wait on ``changed``.
"""

from __future__ import annotations

import asyncio

from worker.processing.tracker import ProgressTracker
from worker.records import StreamRecord


class ShardProgress:
    __slots__ = ("_tracker", "moved", "urgent", "changed")

    def __init__(self) -> None:
        self._tracker = ProgressTracker()
        self.moved = asyncio.Event()
        self.urgent = asyncio.Event()
        self.changed = asyncio.Event()

    # -- the pipeline ---------------------------------------------------------------------

    def add(self, record: StreamRecord, routes: int) -> None:
        """A record enters the shard's window, owing ``routes`` completions (0: done now)."""
        self._tracker.add(record.sequence_number, routes)
        if not routes:
            self.moved.set()

    def skip(self, record: StreamRecord) -> None:
        """Acknowledge a record without routing it (e.g. older than AT_TIMESTAMP)."""
        self.add(record, 0)

    # -- deliveries -----------------------------------------------------------------------

    def finish(self, record: StreamRecord) -> None:
        """One route is done with ``record``: handled, or parked in a dead-letter destination."""
        self._tracker.finish(record.sequence_number)
        self.changed.set()
        self.moved.set()

    def failing(self) -> None:
        """A handler call failed: ask for a checkpoint of the finished prefix now."""
        self.urgent.set()
        self.moved.set()

    # -- readers --------------------------------------------------------------------------

    @property
    def finished_up_to(self) -> str | None:
        """Every record up to and including this sequence number is finished."""
        return self._tracker.finished_up_to

    @property
    def in_flight(self) -> int:
        """Records added and not yet behind the finished prefix."""
        return len(self._tracker)

    @property
    def idle(self) -> bool:
        return self._tracker.idle
