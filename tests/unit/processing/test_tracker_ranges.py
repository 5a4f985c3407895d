"""ProgressTracker.finished_ahead on the cases the property tests do not draw."""

from __future__ import annotations

from worker.checkpoint.ranges import SeqRange
from worker.processing.tracker import ProgressTracker


def test_a_sequence_number_shared_with_an_unfinished_record_is_never_claimed() -> None:
    # moto has been seen to repeat a sequence number under concurrent writes.
    tracker = ProgressTracker()
    for sequence in ("1", "2", "3", "3", "4"):
        tracker.add(sequence, 1)
    tracker.finish("2")
    tracker.finish("3")  # the first record numbered 3; the second is still in flight
    tracker.finish("4")
    assert tracker.finished_up_to is None
    assert tracker.finished_ahead(10) == [SeqRange(2, 2, 1), SeqRange(4, 4, 1)]


def test_runs_stop_at_the_limit_lowest_first() -> None:
    tracker = ProgressTracker()
    for sequence in range(1, 11):
        tracker.add(str(sequence), 1)
    for sequence in (2, 3, 5, 7, 9):
        tracker.finish(str(sequence))
    assert tracker.finished_ahead(2) == [SeqRange(2, 3, 2), SeqRange(5, 5, 1)]
    assert tracker.finished_ahead(0) == []
