"""HandlerInvoker: the route's timeout and the batch failure report, for delivery and replay."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from worker.errors import PermanentError, RetryableError
from worker.processing.invocation import BatchResult, DeliveryServices, HandlerInvoker
from worker.processing.progress import ShardProgress
from worker.processing.router import Route
from worker.records import StreamRecord
from tests.unit.pipeline_fakes import make_record

SERVICES = DeliveryServices(publisher=None, tables=None, config=None,  # type: ignore[arg-type]
                            worker_id="w", observers=[])


def invoker(handler: Any, *, timeout: float | None = None, batch: bool = False) -> HandlerInvoker:
    route = Route(name="r", table="orders", events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=handler, options={}, timeout_seconds=timeout, is_batch=batch,
                  batch_size=10 if batch else 1)
    return HandlerInvoker(route, SERVICES, structlog.get_logger())


async def test_a_call_past_the_route_timeout_fails_as_retryable() -> None:
    cancelled = asyncio.Event()

    async def slow(record: StreamRecord, ctx: Any) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(RetryableError, match="timed out after 0.05 s"):
        await invoker(slow, timeout=0.05).handle(make_record(1, "a"))
    assert cancelled.is_set()


async def test_batch_report_names_failed_records_by_record_or_sequence_number() -> None:
    records = [make_record(i, "a") for i in range(4)]

    async def report(batch: list[StreamRecord], ctx: Any) -> BatchResult:
        return BatchResult(failed=(batch[1], batch[3].sequence_number))

    assert await invoker(report, batch=True).handle_batch(records) == [records[1], records[3]]


@pytest.mark.parametrize("result, failed", [
    (None, []),
    (BatchResult(), []),
    ([], []),
    ({"batchItemFailures": []}, []),
    ({"batchItemFailures": [{"itemIdentifier": "SEQ2"}]}, [2]),  # Lambda's partial-batch response
    (["SEQ0", "SEQ3"], [0, 3]),
    ({"SEQ1"}, [1]),
], ids=["none", "empty-result", "empty-list", "lambda-empty", "lambda", "list", "set"])
async def test_batch_handler_return_values_and_their_meaning(result: Any, failed: list[int]) -> None:
    records = [make_record(i, "a") for i in range(4)]
    result = _with_sequence_numbers(result, records)

    async def report(batch: list[StreamRecord], ctx: Any) -> Any:
        return result

    assert await invoker(report, batch=True).handle_batch(records) == [records[i] for i in failed]


@pytest.mark.parametrize("result", [True, 3, "SEQ1", {"failed": ["SEQ1"]}], ids=["bool", "int", "str", "dict"])
async def test_a_batch_handler_returning_anything_else_is_a_permanent_error(result: Any) -> None:
    async def report(batch: list[StreamRecord], ctx: Any) -> Any:
        return result

    with pytest.raises(PermanentError, match=f"route 'r' returned {type(result).__name__}: return None"):
        await invoker(report, batch=True).handle_batch([make_record(0, "a")])


def _with_sequence_numbers(result: Any, records: list[StreamRecord]) -> Any:
    """Put the records' real sequence numbers where the cases say SEQ<index>."""
    def real(value: str) -> str:
        return records[int(value[3:])].sequence_number
    if isinstance(result, dict):
        return {"batchItemFailures": [{"itemIdentifier": real(f["itemIdentifier"])}
                                      for f in result["batchItemFailures"]]}
    if isinstance(result, (list, set)):
        return type(result)(real(v) for v in result)
    return result


async def test_context_names_the_route_and_binds_the_record() -> None:
    seen: list[Any] = []

    async def handler(record: StreamRecord, ctx: Any) -> None:
        seen.append(ctx)

    record = make_record(2, "order-9")
    await invoker(handler).handle(record)
    assert seen[0].route == "r"
    assert structlog.get_context(seen[0].log.bind())["seq"] == record.sequence_number


def test_progress_wakes_the_checkpoint_loop_and_the_waiters() -> None:
    progress = ShardProgress()
    first, second = make_record(1, "a"), make_record(2, "b")
    progress.add(first, 1)
    progress.add(second, 1)
    assert not progress.moved.is_set() and progress.in_flight == 2

    progress.finish(second)  # out of order: the prefix does not move past the first
    assert progress.moved.is_set() and progress.changed.is_set()
    assert progress.finished_up_to is None

    progress.failing()
    assert progress.urgent.is_set()
    progress.finish(first)
    assert progress.finished_up_to == second.sequence_number and progress.idle


async def test_concurrent_calls_each_keep_their_own_timeout() -> None:
    """A route's calls of different keys run at once on one invoker: a hanging call is cut
    off at its own deadline while a quick one beside it succeeds, every time."""

    async def handler(record: StreamRecord, ctx: Any) -> None:
        await asyncio.sleep(10 if record.keys["pk"] == "hang" else 0.01)

    shared = invoker(handler, timeout=0.2)
    records = [make_record(i, "hang" if i % 2 else "quick") for i in range(6)]
    results = await asyncio.gather(*(shared.handle(r) for r in records), return_exceptions=True)
    for record, result in zip(records, results):
        if record.keys["pk"] == "hang":
            assert isinstance(result, RetryableError) and "timed out after 0.2 s" in str(result)
        else:
            assert result is None
