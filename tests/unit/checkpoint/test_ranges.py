"""Finished ranges (worker/checkpoint/ranges.py): the wire format, merging, the cap, and the
hand-over from one owner's progress to the next owner's skips, as properties over random
streams (sequence numbers of varying length, random gaps) and random finished sets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.checkpoint.ranges import (
    InheritedRanges,
    SeqRange,
    above,
    cap,
    decode,
    encode,
    merge,
    records_in,
)
from worker.processing.progress import ShardProgress
from worker.testing import make_record

# Sequence numbers as DynamoDB Streams gives them: increasing, gaps of any size, so the
# decimal strings grow from a few digits to more than twenty (string order would be wrong).
gaps = st.integers(min_value=1, max_value=10**6) | st.integers(min_value=1, max_value=10**22)


@st.composite
def streams(draw: st.DrawFn, max_size: int = 60) -> list[int]:
    start = draw(st.integers(min_value=1, max_value=10**3))
    steps = draw(st.lists(gaps, min_size=1, max_size=max_size))
    sequence = [start]
    for step in steps:
        sequence.append(sequence[-1] + step)
    return sequence


@st.composite
def disjoint_ranges(draw: st.DrawFn) -> list[SeqRange]:
    bounds = draw(streams())
    ranges: list[SeqRange] = []
    for first, last in zip(bounds[::2], bounds[1::2]):
        ranges.append(SeqRange(first, last, draw(st.integers(min_value=1, max_value=last - first + 1))))
    return ranges


def claimed(ranges: list[SeqRange] | tuple[SeqRange, ...], stream: list[int]) -> set[int]:
    return {s for s in stream if any(r.first <= s <= r.last for r in ranges)}


@given(disjoint_ranges())
def test_encode_decode_round_trip(ranges: list[SeqRange]) -> None:
    assert decode(encode(ranges)) == tuple(ranges)


@pytest.mark.parametrize("text", ["1-2", "5-3:1", "1-2:0", "a-2:1", "1-5:2,4-9:1", "3-3:1,1-1:1"])
def test_decode_rejects_bad_text_naming_the_item(text: str) -> None:
    with pytest.raises(ValueError, match="finished range"):
        decode(text)


def test_decode_of_nothing_is_no_ranges() -> None:
    assert decode("") == ()


@given(disjoint_ranges(), st.data())
def test_merge_rejoins_split_ranges_and_keeps_the_count(ranges: list[SeqRange], data: st.DataObject) -> None:
    pieces: list[SeqRange] = []
    for r in ranges:
        if r.first < r.last and r.count >= 2:
            cut = data.draw(st.integers(min_value=r.first, max_value=r.last - 1))
            left = data.draw(st.integers(min_value=1, max_value=min(r.count - 1, cut - r.first + 1)))
            if r.count - left <= r.last - cut:
                pieces += [SeqRange(r.first, cut, left), SeqRange(cut + 1, r.last, r.count - left)]
                continue
        pieces.append(r)
    shuffled = data.draw(st.permutations(pieces))
    merged = merge(shuffled)
    assert records_in(merged) == records_in(ranges)
    # Touching ranges join; ranges with a gap (room for an unfinished record) never do.
    assert all(a.last + 1 < b.first for a, b in zip(merged, merged[1:]))
    assert {(r.first, r.last) for r in merge(ranges)} == {(r.first, r.last) for r in merged}


@given(disjoint_ranges(), st.integers(min_value=0, max_value=40))
def test_cap_keeps_the_lowest_ranges(ranges: list[SeqRange], limit: int) -> None:
    kept = cap(ranges, limit)
    assert list(kept) == ranges[:limit]
    assert all(k.last < d.first for k in kept for d in ranges[limit:])


@given(disjoint_ranges(), st.integers(min_value=0, max_value=10**9))
def test_above_drops_what_the_checkpoint_passed(ranges: list[SeqRange], floor: int) -> None:
    kept = above(ranges, floor)
    assert all(r.first > floor for r in kept)
    assert {(max(r.first, floor + 1), r.last) for r in ranges if r.last > floor} == {(r.first, r.last) for r in kept}


def progress_after(stream: list[int], routes: list[int], finished: set[int]) -> ShardProgress:
    """A shard whose records ``stream`` owe ``routes`` each; every route of the records in
    ``finished`` is done, the others' not at all."""
    progress = ShardProgress()
    records = [make_record("INSERT", {"id": str(s)}, {"n": 1}, sequence_number=s) for s in stream]
    for record, owed in zip(records, routes):
        progress.add(record, owed)
    for record, owed in zip(records, routes):
        if int(record.sequence_number) in finished:
            for _ in range(owed):
                progress.finish(record)
    return progress


@st.composite
def shards(draw: st.DrawFn) -> tuple[list[int], list[int], set[int]]:
    stream = draw(streams())
    routes = draw(st.lists(st.integers(min_value=0, max_value=2), min_size=len(stream), max_size=len(stream)))
    finished = set(draw(st.lists(st.sampled_from(stream), max_size=len(stream))))
    return stream, routes, finished | {s for s, owed in zip(stream, routes) if owed == 0}


@settings(max_examples=300)
@given(shards(), st.integers(min_value=1, max_value=12))
def test_ranges_claim_exactly_the_finished_records_past_the_prefix(
    shard: tuple[list[int], list[int], set[int]], limit: int
) -> None:
    stream, routes, finished = shard
    progress = progress_after(stream, routes, finished)
    prefix = progress.finished_up_to
    past = [s for s in stream if prefix is None or s > int(prefix)]
    full = progress.finished_ahead(10_000)
    # Never an unfinished record; every finished one past the prefix; exact counts.
    assert claimed(full, stream) == {s for s in past if s in finished}
    for r in full:
        assert r.count == len([s for s in stream if r.first <= s <= r.last])
    # The cap keeps the lowest runs: what it drops is exactly the later runs' records.
    capped = progress.finished_ahead(limit)
    assert list(capped) == list(full[:limit])
    assert decode(encode(capped)) == capped


@settings(max_examples=300)
@given(shards(), st.integers(min_value=1, max_value=12), st.data())
def test_next_owner_skips_exactly_what_the_ranges_claim(
    shard: tuple[list[int], list[int], set[int]], limit: int, data: st.DataObject
) -> None:
    stream, routes, finished = shard
    first_owner = progress_after(stream, routes, finished)
    written = decode(encode(first_owner.finished_ahead(limit)))
    prefix = first_owner.finished_up_to
    rest = [s for s in stream if prefix is None or s > int(prefix)]
    # The next owner reads the stream after the checkpoint; it may checkpoint at any point
    # of its read, before it has read every inherited range.
    next_owner = ShardProgress(written)
    read_so_far = data.draw(st.integers(min_value=0, max_value=len(rest)))
    skipped = []
    for s in rest[:read_so_far]:
        record = make_record("INSERT", {"id": str(s)}, {"n": 1}, sequence_number=s)
        if next_owner.already_finished(record):
            skipped.append(s)
            next_owner.skip(record)
        else:
            next_owner.add(record, 1)  # handled later: not finished yet
    assert skipped == [s for s in rest[:read_so_far] if s in claimed(written, stream)]
    # Its own checkpoint keeps every inherited record it has not re-finished, and no other.
    again = next_owner.finished_ahead(10_000)
    prefix2 = next_owner.finished_up_to
    expected = claimed(written, stream)
    if prefix2 is not None:
        expected = {s for s in expected if s > int(prefix2)}
    assert claimed(again, stream) == expected
    assert records_in(again) == len(expected)


def test_inherited_ranges_consumed_in_stream_order() -> None:
    inherited = InheritedRanges([SeqRange(10, 20, 3), SeqRange(40, 40, 1)])
    assert [inherited.take(str(s)) for s in (5, 10, 15)] == [False, True, True]
    assert inherited.unread() == [SeqRange(16, 20, 1), SeqRange(40, 40, 1)]
    assert [inherited.take(str(s)) for s in (20, 30, 40, 50)] == [True, False, True, False]
    assert not inherited and inherited.unread() == []
