"""Finished ranges: which records past the checkpoint are already finished.

The checkpoint only moves over the finished prefix, so a record stuck in retries holds it
while later records (other keys) finish. The lease row also records those later records as
ranges of sequence numbers, so a new owner after a crash or hand-off skips them instead of
redoing them (Confluent's parallel-consumer keeps the same in its commit metadata).

A :class:`SeqRange` ``first..last`` claims every record of the shard whose sequence number
lies between the two, inclusive: it is only ever built from a run of records read one after
the other, all of them finished, so no record between them can be unfinished. ``count`` is
the number of records in it (for ``stream-worker status``). Sequence numbers are decimal
strings of varying length and compared as integers.

Wire format (lease attribute ``finishedRanges``, a string): ``first-last:count`` items
joined by ``,``, lowest first, e.g. ``"1200-1930:41,2005-2005:1"``.

**Cap**: at most ``limit`` ranges are written, the lowest ones (the oldest records, next to
the checkpoint). They matter most: the prefix reaches them first, and a new owner reads them
first. Records in dropped ranges are redone by a new owner (at-least-once), never lost.
Each range costs at most about 90 bytes, so the default cap (100) keeps the attribute under
9 KB against DynamoDB's 400 KB item limit, and the lease scan cheap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class SeqRange:
    first: int
    last: int
    count: int

    def __post_init__(self) -> None:
        if self.first > self.last or self.count < 1:
            raise ValueError(f"invalid finished range {self.first}-{self.last}:{self.count}")


def encode(ranges: Sequence[SeqRange]) -> str:
    return ",".join(f"{r.first}-{r.last}:{r.count}" for r in ranges)


def decode(text: str) -> tuple[SeqRange, ...]:
    """Parse the wire format; raises ValueError naming the bad item."""
    if not text:
        return ()
    ranges: list[SeqRange] = []
    for item in text.split(","):
        try:
            bounds, count = item.split(":")
            first, last = bounds.split("-")
            ranges.append(SeqRange(int(first), int(last), int(count)))
        except ValueError:
            raise ValueError(f"bad finished range {item!r}: expected first-last:count") from None
        if len(ranges) > 1 and ranges[-2].last >= ranges[-1].first:
            raise ValueError(f"finished ranges overlap or are out of order at {item!r}")
    return tuple(ranges)


def merge(ranges: Iterable[SeqRange]) -> list[SeqRange]:
    """Sort and join ranges that overlap or touch (``last + 1 == first``: no sequence
    number, hence no record, lies between them). Overlapping ranges come from the same
    records, so their counts are not summed but the larger is kept."""
    merged: list[SeqRange] = []
    for r in sorted(ranges, key=lambda r: r.first):
        if merged and r.first <= merged[-1].last + 1:
            top = merged[-1]
            count = top.count + r.count if r.first > top.last else max(top.count, r.count)
            merged[-1] = SeqRange(top.first, max(top.last, r.last), count)
        else:
            merged.append(r)
    return merged


def cap(ranges: Sequence[SeqRange], limit: int) -> tuple[SeqRange, ...]:
    """Keep the ``limit`` lowest ranges (see the module docstring)."""
    return tuple(ranges[:limit])


def above(ranges: Iterable[SeqRange], floor: int) -> list[SeqRange]:
    """The parts of ``ranges`` strictly above ``floor`` (a checkpoint). A range cut by the
    floor keeps its count unknown-but-positive: it was finished, the count is an estimate."""
    kept: list[SeqRange] = []
    for r in ranges:
        if r.last <= floor:
            continue
        if r.first <= floor:
            kept.append(SeqRange(floor + 1, r.last, max(1, r.count - (floor - r.first + 1))))
        else:
            kept.append(r)
    return kept


def records_in(ranges: Iterable[SeqRange]) -> int:
    return sum(r.count for r in ranges)


class InheritedRanges:
    """The previous owner's finished ranges, consumed in stream order as records are read.

    :meth:`take` says whether a record is already finished (then it is acknowledged
    without being handled). :meth:`unread` gives what is left past the last record read,
    so a checkpoint written before the new owner reads that far keeps those ranges.
    """

    __slots__ = ("_ranges", "_last_read", "_taken_in_head")

    def __init__(self, ranges: Iterable[SeqRange] = ()) -> None:
        self._ranges = deque(ranges)
        self._last_read: int | None = None
        self._taken_in_head = 0  # records of the first range already taken

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def take(self, sequence_number: str) -> bool:
        ranges = self._ranges
        if not ranges:
            return False
        seq = int(sequence_number)
        self._last_read = seq
        while ranges and ranges[0].last < seq:
            ranges.popleft()
            self._taken_in_head = 0
        if not ranges or seq < ranges[0].first:
            return False
        self._taken_in_head += 1
        if seq == ranges[0].last:
            ranges.popleft()
            self._taken_in_head = 0
        return True

    def unread(self) -> list[SeqRange]:
        if not self._ranges:
            return []
        head, rest = self._ranges[0], list(self._ranges)[1:]
        if self._last_read is None or self._last_read < head.first:
            return [head, *rest]
        left = max(1, head.count - self._taken_in_head)
        return [SeqRange(self._last_read + 1, head.last, left), *rest]
