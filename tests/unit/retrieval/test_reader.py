"""ShardReader against an in-memory dynamodbstreams fake: order, shard end, iterator expiry,
trimmed data, retries, gone shards and idle polling."""

from __future__ import annotations

import asyncio
import types
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client import REGISTRY

import worker.retrieval.reader as reader_module
from worker.config import ReaderConfig
from worker.errors import ShardGoneError, TrimmedDataError
from worker.retrieval.reader import TRIM_HORIZON, Page, ShardReader, StartPosition
from tests.unit.fakes import FakeStreamsClient, make_record

SHARD = "shardId-00000001"


def records(*sequences: int) -> list[dict[str, Any]]:
    return [make_record(s) for s in sequences]


def seqs(batch: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in batch]


def make_reader(
    client: FakeStreamsClient, start: StartPosition = TRIM_HORIZON, label: str | None = None, **config: Any
) -> ShardReader:
    return ShardReader(
        client,
        stream_arn=client.stream_arn,
        shard_id=SHARD,
        stream_label=label or f"t-{uuid.uuid4().hex[:8]}",
        start=start,
        config=ReaderConfig(**config),
    )


async def read_to_end(reader: ShardReader, limit: int = 50) -> list[Page]:
    pages = []
    for _ in range(limit):
        page = await reader.read_page()
        pages.append(page)
        if page.shard_end:
            return pages
    raise AssertionError(f"no shard end after {limit} pages")


def metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def iterator_requests(client: FakeStreamsClient) -> list[tuple[str, str | None]]:
    return [(c["ShardIteratorType"], c.get("SequenceNumber")) for c in client.calls_of("GetShardIterator")]


# ---- order and shard end --------------------------------------------------------------------


async def test_reads_pages_in_order_and_stops_at_shard_end() -> None:
    client = FakeStreamsClient(page_size=3)
    client.add_shard(SHARD, records=records(100, 110, 120, 130, 140, 150, 1000), closed=True)
    reader = make_reader(client, max_records=500)

    pages = await read_to_end(reader)

    assert [seqs(p.records) for p in pages] == [["100", "110", "120"], ["130", "140", "150"], ["1000"]]
    assert [p.shard_end for p in pages] == [False, False, True]
    assert iterator_requests(client) == [("TRIM_HORIZON", None)]
    assert [c["Limit"] for c in client.calls_of("GetRecords")] == [500, 500, 500]
    assert reader.position == StartPosition.after("1000")

    calls_before = len(client.calls)
    after = await reader.read_page()
    assert after == Page([], True)
    assert len(client.calls) == calls_before  # no AWS call once the shard has ended


async def test_shard_end_on_an_empty_page_after_the_shard_closes() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(1, 2))
    reader = make_reader(client)

    first = await reader.read_page()
    idle = await reader.read_page()
    client.close(SHARD)
    last = await reader.read_page()

    assert (seqs(first.records), first.shard_end) == (["1", "2"], False)
    assert idle == Page([], False)
    assert last == Page([], True)
    assert await reader.read_page() == Page([], True)
    assert len(client.calls_of("GetRecords")) == 3


# ---- expired iterators ----------------------------------------------------------------------


async def test_expired_iterator_mid_stream_resumes_after_last_record_handed_out() -> None:
    label = f"t-{uuid.uuid4().hex[:8]}"
    stream = [100, 110, 120, 130, 140, 150, 160, 170, 180]
    client = FakeStreamsClient(page_size=3)
    client.add_shard(SHARD, records=records(*stream), closed=True)
    reader = make_reader(client, label=label)
    expired_before = metric("stream_worker_iterator_expired_total", {"stream": label})

    first = await reader.read_page()
    client.expire_iterators()  # 15 minutes pass while the page is handled
    rest = await read_to_end(reader)

    delivered = seqs(first.records) + [s for p in rest for s in seqs(p.records)]
    assert delivered == [str(s) for s in stream]  # none lost, none repeated, in order
    assert iterator_requests(client) == [("TRIM_HORIZON", None), ("AFTER_SEQUENCE_NUMBER", "120")]
    assert metric("stream_worker_iterator_expired_total", {"stream": label}) == expired_before + 1


async def test_expired_iterator_after_reaching_the_tip_resumes_after_last_record() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(5, 6, 7))
    reader = make_reader(client)

    first = await reader.read_page()
    tip = await reader.read_page()  # empty: the reader is at the tip
    client.expire_iterators()
    client.append(SHARD, *records(8, 9))
    second = await reader.read_page()

    assert seqs(first.records) == ["5", "6", "7"]
    assert tip.records == []
    assert seqs(second.records) == ["8", "9"]
    assert iterator_requests(client) == [("TRIM_HORIZON", None), ("AFTER_SEQUENCE_NUMBER", "7")]


@pytest.mark.parametrize(
    ("start", "expected_request", "expected_records"),
    [
        (TRIM_HORIZON, ("TRIM_HORIZON", None), ["10", "20", "30", "40"]),
        (StartPosition.after("20"), ("AFTER_SEQUENCE_NUMBER", "20"), ["30", "40"]),
    ],
)
async def test_expiry_before_any_record_restarts_at_the_start_position(
    start: StartPosition, expected_request: tuple[str, str | None], expected_records: list[str]
) -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(10, 20, 30, 40), closed=True)
    client.fail_next("GetRecords", "ExpiredIteratorException")
    reader = make_reader(client, start=start)

    pages = await read_to_end(reader)

    assert [s for p in pages for s in seqs(p.records)] == expected_records
    assert iterator_requests(client) == [expected_request, expected_request]


async def test_expiry_after_only_empty_pages_restarts_at_the_checkpoint() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(10, 20, 30))
    reader = make_reader(client, start=StartPosition.after("30"))

    empty = await reader.read_page()
    client.expire_iterators()
    client.append(SHARD, *records(40, 50))
    page = await reader.read_page()

    assert empty == Page([], False)
    assert seqs(page.records) == ["40", "50"]
    assert iterator_requests(client) == [("AFTER_SEQUENCE_NUMBER", "30"), ("AFTER_SEQUENCE_NUMBER", "30")]


# ---- trimmed data ---------------------------------------------------------------------------


async def test_trimmed_position_restarts_at_trim_horizon_and_is_counted() -> None:
    label = f"t-{uuid.uuid4().hex[:8]}"
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(*range(100, 200, 10)), closed=True)
    client.trim(SHARD, 5)  # 100..140 are past retention
    reader = make_reader(client, start=StartPosition.after("120"), label=label,
                         on_trimmed_data="restart_at_trim_horizon")
    before = metric("stream_worker_trimmed_data_total", {"stream": label})

    pages = await read_to_end(reader)

    assert [s for p in pages for s in seqs(p.records)] == ["150", "160", "170", "180", "190"]
    assert iterator_requests(client) == [("AFTER_SEQUENCE_NUMBER", "120"), ("TRIM_HORIZON", None)]
    assert metric("stream_worker_trimmed_data_total", {"stream": label}) == before + 1


async def test_trimmed_while_reading_restarts_at_trim_horizon() -> None:
    label = f"t-{uuid.uuid4().hex[:8]}"
    client = FakeStreamsClient(page_size=3)
    client.add_shard(SHARD, records=records(*range(100, 200, 10)), closed=True)
    reader = make_reader(client, label=label)
    before = metric("stream_worker_trimmed_data_total", {"stream": label})

    first = await reader.read_page()
    client.trim(SHARD, 6)  # the iterator now points at trimmed records 130..150
    rest = await read_to_end(reader)

    assert seqs(first.records) == ["100", "110", "120"]
    assert [s for p in rest for s in seqs(p.records)] == ["160", "170", "180", "190"]
    assert iterator_requests(client) == [("TRIM_HORIZON", None), ("TRIM_HORIZON", None)]
    assert metric("stream_worker_trimmed_data_total", {"stream": label}) == before + 1


async def test_trimmed_with_stop_shard_policy_raises() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(*range(100, 200, 10)), closed=True)
    client.trim(SHARD, 5)
    reader = make_reader(client, start=StartPosition.after("120"), on_trimmed_data="stop_shard")

    with pytest.raises(TrimmedDataError):
        await reader.read_page()

    assert iterator_requests(client) == [("AFTER_SEQUENCE_NUMBER", "120")]
    assert client.calls_of("GetRecords") == []


# ---- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [("LimitExceededException", 400), ("InternalServerError", 500), ("ServiceUnavailable", 503)],
)
async def test_throttling_and_server_errors_on_get_records_are_retried(code: str, status: int) -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(1, 2, 3), closed=True)
    client.fail_next("GetRecords", code, status=status, times=3)
    before = metric("stream_worker_aws_retries_total", {"operation": "GetRecords", "code": code})
    reader = make_reader(client)

    page = await reader.read_page()

    assert seqs(page.records) == ["1", "2", "3"]
    assert page.shard_end is True
    assert len(client.calls_of("GetRecords")) == 4
    assert len(client.calls_of("GetShardIterator")) == 1  # same iterator reused
    assert metric("stream_worker_aws_retries_total", {"operation": "GetRecords", "code": code}) == before + 3


@pytest.mark.parametrize(("code", "status"), [("LimitExceededException", 400), ("InternalServerError", 500)])
async def test_throttling_and_server_errors_on_get_shard_iterator_are_retried(code: str, status: int) -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(1, 2), closed=True)
    client.fail_next("GetShardIterator", code, status=status, times=2)
    reader = make_reader(client)

    page = await reader.read_page()

    assert seqs(page.records) == ["1", "2"]
    assert len(client.calls_of("GetShardIterator")) == 3
    assert len(client.calls_of("GetRecords")) == 1


async def test_non_retryable_client_error_is_raised_at_once() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(1), closed=True)
    client.fail_next("GetRecords", "ValidationException", status=400)
    reader = make_reader(client)

    with pytest.raises(ClientError) as info:
        await reader.read_page()

    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert len(client.calls_of("GetRecords")) == 1


# ---- gone shards ----------------------------------------------------------------------------


async def test_resource_not_found_on_get_records_raises_shard_gone() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(1), closed=True)
    client.fail_next("GetRecords", "ResourceNotFoundException")
    reader = make_reader(client)

    with pytest.raises(ShardGoneError):
        await reader.read_page()
    assert len(client.calls_of("GetRecords")) == 1


async def test_resource_not_found_on_get_shard_iterator_raises_shard_gone() -> None:
    client = FakeStreamsClient()  # no shard at all
    reader = make_reader(client)

    with pytest.raises(ShardGoneError):
        await reader.read_page()
    assert len(client.calls_of("GetShardIterator")) == 1
    assert client.calls_of("GetRecords") == []


# ---- next_page: idle polling and stop -------------------------------------------------------


async def test_next_page_returns_none_promptly_when_stopped_while_idle() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD)  # open, empty
    # A 30 s idle poll: only the stop event can end the wait within the test's guard.
    reader = make_reader(client, idle_poll_seconds=30, max_idle_poll_seconds=60)
    stop = asyncio.Event()

    task = asyncio.create_task(reader.next_page(stop))
    for _ in range(100):
        if client.calls_of("GetRecords"):
            break
        await asyncio.sleep(0)
    assert len(client.calls_of("GetRecords")) == 1
    assert not task.done()
    stop.set()

    assert await asyncio.wait_for(task, timeout=2) is None
    assert len(client.calls_of("GetRecords")) == 1


async def test_next_page_with_stop_already_set_reads_nothing() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(1))
    stop = asyncio.Event()
    stop.set()

    assert await make_reader(client).next_page(stop) is None
    assert client.calls == []


async def test_next_page_returns_pages_with_records_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def no_wait(aw: Any, timeout: float) -> None:
        waits.append(timeout)
        aw.close()
        raise TimeoutError

    monkeypatch.setattr(reader_module, "asyncio", types.SimpleNamespace(wait_for=no_wait))
    client = FakeStreamsClient(page_size=2)
    client.add_shard(SHARD, records=records(1, 2, 3, 4, 5), closed=True)
    reader = make_reader(client)
    stop = asyncio.Event()

    pages = [await reader.next_page(stop) for _ in range(3)]

    assert [(seqs(p.records), p.shard_end) for p in pages if p] == [
        (["1", "2"], False),
        (["3", "4"], False),
        (["5"], True),
    ]
    assert waits == []


async def test_empty_polls_back_off_up_to_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic: the idle wait is replaced by one that records its timeout and
    returns at once; records arrive after the sixth empty poll."""
    client = FakeStreamsClient()
    client.add_shard(SHARD)
    waits: list[float] = []

    async def timed_out(aws: Any, timeout: float | None = None, return_when: str = "") -> tuple[set[Any], set[Any]]:
        waits.append(timeout if timeout is not None else -1.0)
        if len(waits) == 6:
            client.append(SHARD, *records(7))
        return set(), set(aws)

    monkeypatch.setattr(reader_module, "asyncio", types.SimpleNamespace(
        wait=timed_out, ensure_future=asyncio.ensure_future, FIRST_COMPLETED=asyncio.FIRST_COMPLETED))
    reader = make_reader(client, idle_poll_seconds=0.01, max_idle_poll_seconds=0.2)

    page = await reader.next_page(asyncio.Event())

    assert page is not None and seqs(page.records) == ["7"]
    assert len(client.calls_of("GetRecords")) == 7
    assert len(waits) == 6
    assert waits[0] == 0.01
    assert waits == sorted(waits)  # never shorter than the previous wait
    assert max(waits) == 0.2 and waits[-1] == 0.2  # capped at max_idle_poll_seconds
    assert waits[1] > waits[0]


async def test_idle_polls_over_a_window_are_bounded() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD)
    reader = make_reader(client, idle_poll_seconds=0.01, max_idle_poll_seconds=0.1)
    stop = asyncio.Event()

    task = asyncio.create_task(reader.next_page(stop))
    await asyncio.sleep(0.3)
    stop.set()
    assert await asyncio.wait_for(task, timeout=2) is None

    calls = len(client.calls_of("GetRecords"))
    # Without back-off a 10 ms poll would make ~30 calls in 300 ms; with it, a handful.
    assert 2 <= calls <= 10


async def test_shard_gone_while_restarting_after_trimmed_data_raises_shard_gone() -> None:
    # A shard old enough to be trimmed may age out entirely before the restart.
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(1, 2), closed=True)
    client.fail_next("GetShardIterator", "TrimmedDataAccessException")
    client.fail_next("GetShardIterator", "ResourceNotFoundException")
    reader = make_reader(client, start=StartPosition.after("1"))

    with pytest.raises(ShardGoneError):
        await reader.read_page()
    assert iterator_requests(client) == [("AFTER_SEQUENCE_NUMBER", "1"), ("TRIM_HORIZON", None)]


async def test_trim_horizon_restart_is_retried_on_throttling() -> None:
    client = FakeStreamsClient()
    client.add_shard(SHARD, records=records(1, 2), closed=True)
    client.fail_next("GetShardIterator", "TrimmedDataAccessException")
    client.fail_next("GetShardIterator", "LimitExceededException", times=2)
    reader = make_reader(client, start=StartPosition.after("0"))

    pages = await read_to_end(reader)

    assert [s for p in pages for s in seqs(p.records)] == ["1", "2"]
    assert iterator_requests(client) == [("AFTER_SEQUENCE_NUMBER", "0")] + [("TRIM_HORIZON", None)] * 3
