"""ProgressTracker: which records of a shard are finished, and how far a checkpoint may go.

Records are added in stream order with the number of routes they still owe; each route's
completion (success or dead letter) counts one down. The checkpoint candidate is the
sequence number of the last record of the longest finished prefix, so a checkpoint never
passes a record that is still in flight, however the routes' keys interleave.
"""

from __future__ import annotations

from collections import deque


class _Entry:
    __slots__ = ("sequence", "remaining")

    def __init__(self, sequence: str, remaining: int) -> None:
        self.sequence = sequence
        self.remaining = remaining


class ProgressTracker:
    def __init__(self) -> None:
        self._order: deque[_Entry] = deque()
        # Real streams never repeat a sequence number; moto has been seen to under
        # concurrent writes. A list per number keeps such records apart instead of stalling.
        self._by_sequence: dict[str, list[_Entry]] = {}
        self._finished_up_to: str | None = None

    def __len__(self) -> int:
        """Records added and not yet behind the finished prefix (the in-flight window)."""
        return len(self._order)

    def add(self, sequence: str, routes: int) -> None:
        entry = _Entry(sequence, routes)
        self._order.append(entry)
        if routes:
            self._by_sequence.setdefault(sequence, []).append(entry)
        self._advance()

    def finish(self, sequence: str) -> None:
        """One route of the record is done (handled, or parked in a dead-letter destination)."""
        entries = self._by_sequence[sequence]
        entry = entries[0]
        entry.remaining -= 1
        if entry.remaining == 0:
            entries.pop(0)
            if not entries:
                del self._by_sequence[sequence]
            self._advance()

    def _advance(self) -> None:
        order = self._order
        while order and order[0].remaining == 0:
            self._finished_up_to = order.popleft().sequence

    @property
    def finished_up_to(self) -> str | None:
        """Every record up to and including this sequence number is finished."""
        return self._finished_up_to

    @property
    def idle(self) -> bool:
        return not self._order
