"""ShardProgress: one shard's progress, carried as one object from delivery to checkpoint.

The consumer creates it and hands it to the shard's pipeline, which hands it to every
route delivery. Each layer calls the one method that concerns it:

* the pipeline ``add``s records in stream order (with the number of routes they owe) and
  ``skip``s the ones it acknowledges without routing;
* a delivery says ``finish(record)`` when one route is done with a record (handled or
  parked), and ``failing()`` when a call failed;
* while ``inherits_finished``, the consumer asks ``already_finished(record)`` of each
  record it reads: True for records the lease's previous owner finished past its
  checkpoint (its finished ranges), which the consumer then ``skip``s;
* the consumer's checkpoint loop waits on ``moved`` (the finished prefix may have moved)
  and ``urgent`` (a record is failing: write what is finished now, so a restart does not
  redo it), and writes ``finished_up_to`` and ``finished_ahead``;
* the pipeline's capacity and drain waits wait on ``changed``.
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from worker.checkpoint.ranges import InheritedRanges, SeqRange, merge
from worker.processing.tracker import ProgressTracker
from worker.records import StreamRecord


class ShardProgress:
    __slots__ = ("_tracker", "_inherited", "moved", "urgent", "changed")

    def __init__(self, inherited: Iterable[SeqRange] = ()) -> None:
        """``inherited``: the finished ranges read from the lease row (past its checkpoint)."""
        self._tracker = ProgressTracker()
        self._inherited = InheritedRanges(inherited)
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

    # -- the consumer -----------------------------------------------------------------------

    @property
    def inherits_finished(self) -> bool:
        """True while finished ranges of a previous owner remain unread."""
        return bool(self._inherited)

    def already_finished(self, record: StreamRecord) -> bool:
        """True if a previous owner finished ``record`` (call once per record, in stream order)."""
        return bool(self._inherited) and self._inherited.take(record.sequence_number)

    def finished_ahead(self, limit: int) -> tuple[SeqRange, ...]:
        """The lowest ``limit`` ranges of finished records past the prefix: this owner's,
        then the inherited ones it has not read yet (so an early checkpoint keeps them)."""
        ranges = merge([*self._tracker.finished_ahead(limit), *self._inherited.unread()])
        return tuple(ranges[:limit])

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
