"""RouteDelivery.deliver_record (the key scheduler's per-record path) does what deliver([record]) does:
same attempts, same metrics, same parking, same finished records, whichever way the first call goes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker.errors import PermanentError
from worker.observability import metrics
from worker.processing.delivery import RouteDelivery
from worker.processing.invocation import DeliveryServices
from worker.processing.progress import ShardProgress
from worker.processing.router import Route
from worker.records import StreamRecord
from worker.config import RetryConfig
from worker.testing import MemoryDeadLetters
from tests.unit.pipeline_fakes import make_record

OBSERVED: list[tuple[str, str, str]] = []  # (route, sequence number, outcome) from every delivery


def _observer(record: StreamRecord, route: str, outcome: str, started: float, ended: float) -> None:
    assert ended >= started
    OBSERVED.append((route, record.sequence_number, outcome))


SERVICES = DeliveryServices(publisher=None, tables=None, config=None,  # type: ignore[arg-type]
                            worker_id="w", observers=[_observer])


class Script:
    """A handler that fails the first ``failures`` calls of each record (with ``error``)."""

    def __init__(self, failures: int, error: type[Exception] = RuntimeError) -> None:
        self.failures, self.error = failures, error
        self.attempts: list[int] = []

    async def __call__(self, record: StreamRecord, ctx: Any) -> None:
        self.attempts.append(ctx.attempt)
        if len(self.attempts) <= self.failures:
            raise self.error(f"call {len(self.attempts)}")


def _handled(route: str, outcome: str) -> float:
    return metrics.records_handled.labels("orders", route, outcome).value


def _calls_timed(route: str) -> int:
    return sum(metrics.handler_duration.labels(route).counts)


async def _run(path: str, route_name: str, handler: Script, *, max_attempts: int = 3,
               record: StreamRecord | None = None, max_age: int = -1) -> tuple[MemoryDeadLetters, list[str], list[float]]:
    route = Route(name=route_name, table="orders", events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=handler, options={}, timeout_seconds=5.0,
                  retry=RetryConfig(max_attempts=max_attempts, initial_backoff_seconds=0.01,
                                    max_backoff_seconds=0.01, max_record_age_seconds=max_age))
    progress = ShardProgress()
    letters = MemoryDeadLetters()
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    delivery = RouteDelivery(route, SERVICES, letters, progress=progress, sleep=sleep)  # type: ignore[arg-type]
    record = record or make_record(7, "k")
    progress.add(record, 1)
    if path == "fast":
        await delivery.deliver_record(record, asyncio.current_task())
    else:
        await delivery.deliver([record])
    assert progress.idle  # finished exactly once: handled or parked
    assert delivery.oldest_failure_seconds() == 0.0  # nothing left failing
    return letters, [str(progress.finished_up_to)], sleeps


@pytest.mark.parametrize("failures, max_attempts, parked", [(0, 3, False), (2, 3, False), (5, 3, True)])
async def test_fast_and_general_paths_agree(failures: int, max_attempts: int, parked: bool) -> None:
    results = {}
    for path in ("fast", "general"):
        name = f"dr-{path}-{failures}-{max_attempts}"
        handler = Script(failures)
        OBSERVED.clear()
        letters, finished, sleeps = await _run(path, name, handler, max_attempts=max_attempts)
        results[path] = (handler.attempts, [l.attempts for l in letters.letters], finished, len(sleeps),
                         _handled(name, "ok"), _handled(name, "error"), _calls_timed(name),
                         [outcome for _, _, outcome in OBSERVED])
    assert results["fast"] == results["general"]
    attempts, letters, _, sleeps, ok, error, timed, observed = results["fast"]
    expected_calls = min(failures + 1, max_attempts)
    assert attempts == list(range(1, expected_calls + 1))
    assert letters == ([max_attempts] if parked else [])
    assert sleeps == expected_calls - 1  # a back-off between calls, none after the last
    assert (ok, error) == ((0.0, float(max_attempts)) if parked else (1.0, float(failures)))
    assert timed == expected_calls  # one handler-duration observation a call
    assert observed == ["error"] * (expected_calls - (0 if parked else 1)) + (["dead_lettered"] if parked else ["ok"])


async def test_a_permanent_error_on_the_first_call_parks_at_once() -> None:
    handler = Script(1, PermanentError)
    letters, _, sleeps = await _run("fast", "dr-permanent", handler)
    assert handler.attempts == [1] and sleeps == []
    assert [(l.error_class, l.attempts) for l in letters.letters] == [("permanent", 1)]


async def test_a_record_too_old_is_parked_without_a_call() -> None:
    old = make_record(8, "k", age_seconds=3600)
    handler = Script(0)
    letters, _, _ = await _run("fast", "dr-old", handler, record=old, max_age=60)
    assert handler.attempts == []
    assert [l.error_class for l in letters.letters] == ["record_too_old"]


async def test_a_batch_route_refuses_the_per_record_path() -> None:
    route = Route(name="dr-batch", table="orders", events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=Script(0), options={}, is_batch=True, batch_size=10)
    delivery = RouteDelivery(route, SERVICES, None, progress=ShardProgress())
    with pytest.raises(TypeError, match="dr-batch"):
        await delivery.deliver_record(make_record(9, "k"))


def test_the_handler_context_is_what_keyword_construction_gives() -> None:
    """context() builds HandlerContext positionally (a call per record): it must put every
    value in its field."""
    from dataclasses import fields

    from worker.processing.context import HandlerContext, Resources

    route = Route(name="dr-ctx", table="orders", events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=Script(0), options={"x": 1}, timeout_seconds=None)
    services = DeliveryServices(publisher=object(), tables=object(), config=object(),  # type: ignore[arg-type]
                                worker_id="w", observers=[], resources=Resources())
    delivery = RouteDelivery(route, services, None, progress=ShardProgress())
    record = make_record(3, "k")
    ctx = delivery.invoker.context(record, 4)
    expected = HandlerContext(
        route="dr-ctx", options={"x": 1}, publisher=ctx.publisher, config=services.config, log=ctx.log,
        tables=services.tables, shard_id=record.shard_id, attempt=4, deadline=None, resources=services.resources,
    )
    assert [getattr(ctx, f.name) for f in fields(HandlerContext)] == [getattr(expected, f.name) for f in fields(HandlerContext)]
    assert ctx.config is services.config and ctx.tables is services.tables and ctx.resources is services.resources
