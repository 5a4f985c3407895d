"""An AWS-free harness for the processing engine (ShardPipeline + RouteDelivery + ShardProgress).

A :class:`Scenario` describes one shard: its records (partition keys, event names, which
ones the reader skips), the routes (per-record or batch handlers, max_concurrency, retry policy) and,
per route and record, a failure :class:`Plan` the fake handlers follow. :class:`Harness`
wires the real engine to fake handlers, an in-memory dead-letter destination and an
observer, all of which report to a :class:`Ledger`.

The ledger samples invariants *while* the engine runs (in handlers, in the progress's ``finish``
hook, in the dead-letter destination). A handler or hook must not raise AssertionError (the
engine would treat it as a handler failure, or crash a worker), so problems are collected in
``Ledger.violations`` and asserted at the end by the tests.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from worker.config import RetryConfig
from worker.deadletter import DeadLetter, DeadLetterConfig
from worker.errors import PermanentError, RetryableError
from worker.processing.delivery import BatchResult, DeliveryServices, RouteDelivery
from worker.processing.key_scheduler import CallSlots, sleep_without_slots
from worker.processing.pipeline import ShardPipeline
from worker.processing.router import Route
from worker.processing.progress import ShardProgress
from worker.records import StreamRecord
from worker.testing import make_record as make_kit_record

TABLE = "orders"
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
SHARD_ID = "shardId-00000001"
EVENTS = ("INSERT", "MODIFY", "REMOVE")
HASH_KEY = "pk"
OLD_AGE = 7200.0
MAX_AGE = 3600  # a route's max_record_age_seconds when set: old records are past it


def sequence_of(index: int) -> str:
    """Sequence numbers of varying length (95, 98, 101, ...): never compare them as strings."""
    return str(95 + 3 * index)


def make_record(
    index: int, key: str, event: str = "INSERT", *, sort_key: bool = False, age_seconds: float = 0.0
) -> StreamRecord:
    keys: dict[str, Any] = {HASH_KEY: key}
    if sort_key:
        keys["sk"] = index
    image = {"n": index}
    return make_kit_record(
        event, keys, new_image=None if event == "REMOVE" else image, old_image=image if event == "REMOVE" else None,
        table=TABLE, stream_arn=STREAM_ARN, shard_id=SHARD_ID, sequence_number=sequence_of(index),
        created=datetime.now(timezone.utc) - timedelta(seconds=age_seconds), event_id=f"ev-{index}",
    )


async def fast_sleep(_delay: float) -> None:
    """Injected as RouteDelivery's ``sleep``: back-off costs one loop turn, not wall time,
    and gives the call's concurrency slots back meanwhile, as the app's sleep does."""
    await sleep_without_slots(0)


# -- plans and scenarios -------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How the fake handler treats one record on one route.

    ``ok``: always succeeds; ``flaky``: the first ``failures`` calls fail (retryable), then it
    succeeds; ``permanent``: raises PermanentError; ``always``: fails (retryable) forever.
    """

    kind: str = "ok"
    failures: int = 0

    @property
    def can_succeed(self) -> bool:
        return self.kind in ("ok", "flaky")


OK = Plan()


@dataclass(frozen=True)
class RouteSpec:
    name: str
    batch: bool = False
    batch_size: int = 1
    # Batch handlers: "raise" (raise on the first failing record), "partial" (report failures
    # in a BatchResult; a record whose key already failed in this call is reported failed too,
    # as an order-preserving handler must), "partial-unordered" (report only what failed).
    mode: str = "raise"
    bisect: bool = True
    concurrency: int = 1  # max_concurrency
    max_attempts: int = 3
    events: frozenset[str] = frozenset(EVENTS)
    window: float = 0.0
    max_age: int = -1  # max_record_age_seconds
    plans: tuple[Plan, ...] = ()

    def plan(self, index: int) -> Plan:
        return self.plans[index] if index < len(self.plans) else OK

    @property
    def ordered(self) -> bool:
        """Whether this route promises per-key order (an unordered partial handler does not)."""
        return not (self.batch and self.mode == "partial-unordered")


@dataclass
class Scenario:
    keys: list[str]
    routes: list[RouteSpec]
    events: list[str] = field(default_factory=list)
    skipped: frozenset[int] = frozenset()
    yields: list[int] = field(default_factory=list)
    dead_letters: bool = True
    dead_letter_failures: int = 0
    max_in_flight: int = 100_000
    call_slots: int | None = None  # the process-wide bound, when set
    sort_key: bool = False
    old: int = 0  # the first ``old`` records were created OLD_AGE seconds ago

    def event(self, index: int) -> str:
        return self.events[index] if index < len(self.events) else "INSERT"


# -- the ledger ----------------------------------------------------------------------------


class Ledger:
    """Everything the fakes saw, plus the invariants sampled while the engine ran."""

    def __init__(self, records: list[StreamRecord], routes_of: list[frozenset[str]]) -> None:
        self.records = records
        self.routes_of = routes_of
        self.position = {r.sequence_number: i for i, r in enumerate(records)}
        self.progress: ShardProgress | None = None
        self.calls: Counter[tuple[str, int]] = Counter()     # times passed to the handler
        self.handled: Counter[tuple[str, int]] = Counter()   # successful calls
        self.parked: Counter[tuple[str, int]] = Counter()    # letters stored
        self.finished: Counter[tuple[str, int]] = Counter()  # on_finished calls
        self.observed: Counter[tuple[str, int, str]] = Counter()
        self.letters: list[DeadLetter] = []
        self.send_failures: list[tuple[str, int]] = []
        self.violations: list[str] = []
        self.checkpoints: list[int] = []  # index of finished_up_to at every sample (-1: none)
        # Handler calls in flight (per route, and in all), their peaks, and keys in a call.
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.active_total = 0
        self.peak_total = 0
        self.keys_in_call: Counter[tuple[str, str]] = Counter()
        self._last_success: dict[tuple[str, str], int] = {}

    # -- helpers

    def key(self, index: int) -> str:
        return str(self.records[index].raw["dynamodb"]["Keys"][HASH_KEY]["S"])

    def index(self, record: StreamRecord) -> int:
        return self.position[record.sequence_number]

    def done(self, route: str, index: int) -> bool:
        return self.finished[(route, index)] > 0

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def checkpoint_index(self) -> int:
        assert self.progress is not None
        up_to = self.progress.finished_up_to
        return -1 if up_to is None else self.position[up_to]

    def earlier_same_key(self, route: str, index: int) -> list[int]:
        key = self.key(index)
        return [j for j in range(index) if self.key(j) == key and route in self.routes_of[j]]

    def enter(self, route: str, records: list[StreamRecord]) -> None:
        """A handler call starts: no key may be in two calls of one route at once."""
        self.active[route] += 1
        self.peak[route] = max(self.peak[route], self.active[route])
        self.active_total += 1
        self.peak_total = max(self.peak_total, self.active_total)
        for key in {self.key(self.index(r)) for r in records}:
            if self.keys_in_call[(route, key)]:
                self.fail(f"{route}: key {key} passed to a call while another call holds it")
            self.keys_in_call[(route, key)] += 1

    def leave(self, route: str, records: list[StreamRecord]) -> None:
        self.active[route] -= 1
        self.active_total -= 1
        for key in {self.key(self.index(r)) for r in records}:
            self.keys_in_call[(route, key)] -= 1

    # -- sampled invariants

    def check_checkpoint(self, where: str) -> None:
        """(d): finished_up_to never moves back and never passes an unfinished record."""
        current = self.checkpoint_index()
        previous = self.checkpoints[-1] if self.checkpoints else -1
        if current < previous:
            self.fail(f"{where}: finished_up_to moved back from #{previous} to #{current}")
        self.checkpoints.append(current)
        for i in range(current + 1):
            for route in self.routes_of[i]:
                if not self.done(route, i):
                    self.fail(f"{where}: finished_up_to is #{current} but #{i} is unfinished on {route}")

    def on_call(self, route: str, records: list[StreamRecord]) -> None:
        indexes = [self.index(r) for r in records]
        for i in indexes:
            self.calls[(route, i)] += 1
            if route not in self.routes_of[i]:
                self.fail(f"{route}: got #{i}, which is not routed to it")
            if self.done(route, i):
                self.fail(f"{route}: #{i} passed to the handler again after it finished")
            elif self.handled[(route, i)]:
                self.fail(f"{route}: #{i} passed to the handler again after a successful call")
        by_key: dict[str, list[int]] = {}
        for i in indexes:
            by_key.setdefault(self.key(i), []).append(i)
        for key, seen in by_key.items():
            if seen != sorted(set(seen)):
                self.fail(f"{route}: key {key} passed out of order (or twice) in one call: {seen}")
        self.check_checkpoint(f"{route} handler")

    def on_success(self, route: str, records: list[StreamRecord], ordered: bool = True) -> None:
        """Records the handler processed successfully in this call (in call order)."""
        succeeding: list[int] = []
        for record in records:
            i = self.index(record)
            if ordered:
                for j in self.earlier_same_key(route, i):
                    if not self.done(route, j) and j not in succeeding:
                        self.fail(f"{route}: #{i} succeeded while earlier #{j} of key {self.key(i)} is unfinished")
                last = self._last_success.get((route, self.key(i)), -1)
                if last >= i:
                    self.fail(f"{route}: #{i} succeeded after #{last} of the same key")
            self._last_success[(route, self.key(i))] = max(i, self._last_success.get((route, self.key(i)), -1))
            self.handled[(route, i)] += 1
            succeeding.append(i)

    def on_finished(self, route: str, record: StreamRecord, ordered: bool = True) -> None:
        i = self.index(record)
        self.finished[(route, i)] += 1
        if self.finished[(route, i)] > 1:
            self.fail(f"{route}: #{i} finished {self.finished[(route, i)]} times")
        outcomes = self.handled[(route, i)] + self.parked[(route, i)]
        if outcomes != 1:
            self.fail(f"{route}: #{i} finished with {self.handled[(route, i)]} successes "
                      f"and {self.parked[(route, i)]} letters")
        if ordered:
            for j in self.earlier_same_key(route, i):
                if not self.done(route, j):
                    self.fail(f"{route}: #{i} finished before earlier #{j} of key {self.key(i)}")

    def on_send(self, message: DeadLetter, stored: bool) -> None:
        i = self.position[message.sequence_number]
        route = message.route
        if self.done(route, i):
            self.fail(f"{route}: letter for #{i} sent after the record finished")
        if self.checkpoint_index() >= i:
            self.fail(f"{route}: finished_up_to passed #{i} before its letter was stored")
        if stored:
            self.parked[(route, i)] += 1
            self.letters.append(message)
            if self.handled[(route, i)]:
                self.fail(f"{route}: #{i} parked although it was handled")
        else:
            self.send_failures.append((route, i))
        self.check_checkpoint(f"{route} dead letters")

    def observe(self, record: StreamRecord, route: str, outcome: str, started: float, ended: float) -> None:
        self.observed[(route, self.index(record), outcome)] += 1

    # -- final checks

    def assert_no_violations(self) -> None:
        assert not self.violations, "\n".join(self.violations[:20])

    def assert_complete(self, routes: list[str]) -> None:
        """(a) exactly one outcome per routed (record, route); (c) the tracker is at the end."""
        self.assert_no_violations()
        for i in range(len(self.records)):
            for route in routes:
                handled, parked = self.handled[(route, i)], self.parked[(route, i)]
                if route in self.routes_of[i]:
                    assert (handled, parked) in ((1, 0), (0, 1)), (
                        f"{route}: #{i} handled {handled}x and parked {parked}x")
                    assert self.finished[(route, i)] == 1, f"{route}: #{i} finished {self.finished[(route, i)]}x"
                else:
                    assert self.calls[(route, i)] == 0 and self.finished[(route, i)] == 0
                assert self.observed[(route, i, "ok")] == handled, f"{route}: #{i} observed ok != handled"
                assert self.observed[(route, i, "dead_lettered")] == parked, f"{route}: #{i} observed parks"
        assert self.progress is not None
        assert self.progress.finished_up_to == self.records[-1].sequence_number
        assert self.progress.idle and self.progress.in_flight == 0


# -- fakes ---------------------------------------------------------------------------------


class FakeDeadLetters:
    """In-memory destination; the first ``fail_first`` sends raise (the contract: raise = not stored)."""

    def __init__(self, ledger: Ledger, fail_first: int = 0) -> None:
        self._ledger = ledger
        self.fail_first = fail_first
        self.sends = 0

    async def send(self, message: DeadLetter) -> None:
        self.sends += 1
        attempt = self.sends
        await asyncio.sleep(0)
        if attempt <= self.fail_first:
            self._ledger.on_send(message, stored=False)
            raise ConnectionError("dead-letter destination unavailable")
        self._ledger.on_send(message, stored=True)

    async def close(self) -> None:
        return None


class FakeHandlers:
    """Handlers for the routes of a scenario, following each route's plans."""

    def __init__(self, ledger: Ledger, yields: list[int]) -> None:
        self._ledger = ledger
        self._yields = yields
        self._failures: Counter[tuple[str, int]] = Counter()
        self._calls = 0

    def _error(self, spec: RouteSpec, index: int) -> Exception | None:
        """Consume one call of the record's plan: the exception it fails with, or None."""
        plan = spec.plan(index)
        if plan.kind == "ok":
            return None
        if plan.kind == "permanent":
            return PermanentError(f"bad record #{index}")
        if plan.kind == "flaky":
            if self._failures[(spec.name, index)] >= plan.failures:
                return None
            self._failures[(spec.name, index)] += 1
            # Any exception is retryable; mix the declared class with a plain one.
            return RetryableError(f"flaky #{index}") if index % 2 else RuntimeError(f"flaky #{index}")
        return RetryableError(f"always failing #{index}")

    async def _pause(self, records: list[StreamRecord]) -> None:
        turns = max((self._yields[self._ledger.index(r)] for r in records if
                     self._ledger.index(r) < len(self._yields)), default=0)
        for _ in range(turns):
            await asyncio.sleep(0)

    def for_route(self, spec: RouteSpec) -> Any:
        ledger = self._ledger

        async def per_record(record: StreamRecord, ctx: Any) -> None:
            ledger.on_call(spec.name, [record])
            ledger.enter(spec.name, [record])
            try:
                await self._pause([record])
            finally:
                ledger.leave(spec.name, [record])
            error = self._error(spec, ledger.index(record))
            if error is not None:
                raise error
            ledger.on_success(spec.name, [record])

        async def batch(records: list[StreamRecord], ctx: Any) -> Any:
            ledger.on_call(spec.name, records)
            ledger.enter(spec.name, records)
            try:
                await self._pause(records)
            finally:
                ledger.leave(spec.name, records)
            failed: list[StreamRecord] = []
            failed_keys: set[str] = set()
            for record in records:
                i = ledger.index(record)
                if spec.mode == "partial" and ledger.key(i) in failed_keys:
                    failed.append(record)  # not attempted: an earlier record of its key failed
                    continue
                error = self._error(spec, i)
                if error is None:
                    continue
                if spec.mode == "raise":
                    raise error
                failed.append(record)
                failed_keys.add(ledger.key(i))
            ledger.on_success(spec.name, [r for r in records if r not in failed], ordered=spec.ordered)
            return self._report(failed)

        return batch if spec.batch else per_record

    def _report(self, failed: list[StreamRecord]) -> Any:
        """Every shape the engine accepts, in turn."""
        self._calls += 1
        shape = self._calls % 5
        if shape == 0:
            return BatchResult(failed=tuple(failed))
        if shape == 1:
            return BatchResult(failed=tuple(r.sequence_number for r in failed))
        if shape == 2:
            return list(failed)
        if shape == 3:
            return [r.sequence_number for r in failed]
        return BatchResult(failed=tuple(failed)) if failed else None


# -- the harness ---------------------------------------------------------------------------


def build_route(spec: RouteSpec, handler: Any, dead_letters: bool) -> Route:
    return Route(
        name=spec.name,
        table=TABLE,
        events=spec.events,
        new_image={},
        old_image={},
        handler=handler,
        options={},
        is_batch=spec.batch,
        batch_size=spec.batch_size if spec.batch else 1,
        batching_window_seconds=spec.window,
        max_concurrency=spec.concurrency,
        timeout_seconds=30.0,  # runs every call under the watchdog (one per concurrent call)
        retry=RetryConfig(
            max_attempts=spec.max_attempts,
            max_record_age_seconds=spec.max_age,
            initial_backoff_seconds=0.001,
            max_backoff_seconds=0.002,
            bisect_batch_on_error=spec.bisect,
        ),
        dead_letter=DeadLetterConfig(type="jsonl", path="unused") if dead_letters else None,
    )


class Harness:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.specs = {spec.name: spec for spec in scenario.routes}
        self.records = [
            make_record(i, key, scenario.event(i), sort_key=scenario.sort_key,
                        age_seconds=OLD_AGE if i < scenario.old else 0.0)
            for i, key in enumerate(scenario.keys)
        ]
        handlers_by_route: dict[str, Any] = {}
        routes_of: list[frozenset[str]] = []
        # Routes first (with placeholder handlers) to compute the routing, then the ledger.
        probe = [build_route(spec, None, scenario.dead_letters) for spec in scenario.routes]
        for i, record in enumerate(self.records):
            names = frozenset(r.name for r in probe if r.matches(record))
            routes_of.append(frozenset() if i in scenario.skipped else names)
        self.ledger = Ledger(self.records, routes_of)
        self.handlers = FakeHandlers(self.ledger, scenario.yields)
        for spec in scenario.routes:
            handlers_by_route[spec.name] = self.handlers.for_route(spec)
        self.routes = [build_route(spec, handlers_by_route[spec.name], scenario.dead_letters)
                       for spec in scenario.routes]
        self.dead_letters = (FakeDeadLetters(self.ledger, scenario.dead_letter_failures)
                             if scenario.dead_letters else None)
        self.progress = ShardProgress()
        self.ledger.progress = self.progress
        self.failures = 0
        self.services = DeliveryServices(
            publisher=None,  # type: ignore[arg-type]
            tables=None,  # type: ignore[arg-type]
            config=None,
            worker_id="w",
            observers=[self.ledger.observe],
        )
        self.pipeline = ShardPipeline(
            routes_for=lambda record: [r for r in self.routes if r.matches(record)],
            delivery_for=self._delivery_for,
            progress=self.progress,
            max_in_flight=scenario.max_in_flight,
            hash_key=HASH_KEY,
            stream_label=TABLE,
            call_slots=None if scenario.call_slots is None else CallSlots(scenario.call_slots),
        )

    def _delivery_for(self, route: Route) -> RouteDelivery:
        return RouteDelivery(
            route, self.services, self.dead_letters,
            progress=_WatchedProgress(self, route.name), sleep=fast_sleep,  # type: ignore[arg-type]
        )

    async def feed(self, *, throttle: bool = True) -> None:
        """What the shard consumer does: wait for capacity, then submit (or skip) in order."""
        for i, record in enumerate(self.records):
            if throttle:
                await self.pipeline.wait_for_capacity()
            if i in self.scenario.skipped:
                self.pipeline.skip(record)
            else:
                self.pipeline.submit(record)
            self.ledger.check_checkpoint(f"after feeding #{i}")

    async def run(self, timeout: float = 30.0) -> Ledger:
        """Feed everything and drain; a run that does not finish in ``timeout`` s fails."""
        try:
            async with asyncio.timeout(timeout):
                await self.feed()
                await self.pipeline.drain()
        finally:
            await self.pipeline.close()
        return self.ledger

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0)


class _WatchedProgress:
    """What one route's delivery sees as the shard's progress: the harness's ShardProgress,
    with the ledger told (and the checkpoint invariant sampled) around every call."""

    def __init__(self, harness: Harness, route: str) -> None:
        self._harness = harness
        self._route = route
        self._ordered = harness.specs[route].ordered

    def finish(self, record: StreamRecord) -> None:
        ledger = self._harness.ledger
        ledger.on_finished(self._route, record, ordered=self._ordered)
        self._harness.progress.finish(record)
        ledger.check_checkpoint(f"{self._route} finish")

    def failing(self) -> None:
        self._harness.failures += 1
        self._harness.progress.failing()
