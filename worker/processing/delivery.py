"""RouteDelivery: gets records through one route's handler, or parks them.

Per-record handlers see one record at a time. Batch handlers see up to ``batch_size``
records and may report which of them failed (``BatchResult`` or an iterable of records or
sequence numbers); only those are retried, the others count as done.

Failure policy, per route (``RetryConfig``):

* a failed call is retried after exponential back-off with jitter (tenacity's strategy);
* a batch whose handler *raised* is bisected first (when ``bisect_batch_on_error``): the
  halves are retried at once, in order, without counting an attempt, until the failing
  record is alone, so one poison record cannot take its neighbours down with it;
* a failed part of a batch waits out its back-off apart: the parts of other keys go on
  meanwhile, the later records of its keys wait with it (``deliver``'s ``key_of``), so a
  failure holds up only its own keys;
* an error that is not retryable (``PermanentError``: its ``retryable`` is False) skips
  the remaining attempts; ``max_attempts`` (calls) and
  ``max_record_age_seconds`` bound the rest. A record past a bound is written to the
  route's dead-letter destination with everything needed to replay it. Without a
  destination the bounds cannot be set (config check) and a record is retried until it
  succeeds: nothing is ever dropped.
* A dead-letter write that fails is retried until it succeeds; meanwhile the record
  stays unfinished, so the checkpoint cannot pass it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Hashable, Iterable, Sequence

import structlog
from tenacity import wait_exponential_jitter

from worker.aws_errors import utc_now
from worker.deadletter import DeadLetter, DeadLetterDestination, DeadLetterTooLarge
from worker.errors import PermanentError, RetryableError, is_retryable
from worker.observability import metrics, tracing
from worker.processing.context import BatchResult
from worker.processing.invocation import DeliveryServices, HandlerInvoker, ProcessingObserver
from worker.processing.key_scheduler import record_finished
from worker.processing.progress import ShardProgress
from worker.processing.router import Route
from worker.records import StreamRecord
from worker.tracebacks import TracebackGate, failure_site, format_traceback

__all__ = ["BatchResult", "DeliveryServices", "ProcessingObserver", "RecordTooOld", "ReportedFailure", "RouteDelivery"]

log = structlog.get_logger(__name__)

# Shared by every route of the process: one poison record logs its traceback on its first
# failure and then at most once a minute, while the one-line summary logs every retry.
_tracebacks = TracebackGate(interval=60.0)


class ReportedFailure(RetryableError):
    """The batch handler reported the record as failed without raising."""


class RecordTooOld(PermanentError):
    """The record is older than the route's ``max_record_age_seconds``."""


class RouteDelivery:
    def __init__(
        self,
        route: Route,
        services: DeliveryServices,
        dead_letters: DeadLetterDestination | None,
        *,
        progress: ShardProgress,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.route = route
        self._services = services
        self._dead_letters = dead_letters
        self._progress = progress  # the shard's: told of every finished record and failed call
        self._sleep = sleep
        self._batch = route.is_batch
        # Records being retried: id -> time.monotonic() of their first failed call, so that
        # the oldest failing record's age can be read at scrape time.
        self._failing: dict[int, float] = {}
        # How this route's handler is called (its context too: worker.testing builds contexts from it).
        self.invoker = HandlerInvoker(route, services, log.bind(route=route.name, stream=route.table))
        # Resolved once: a labels() lookup per record is a measurable share of a no-op delivery.
        self._handled = {outcome: metrics.records_handled.labels(route.table, route.name, outcome)
                         for outcome in ("ok", "error")}
        self._duration = metrics.handler_duration.labels(route.name)
        self._last_age = metrics.last_record_age.labels(route.table)
        retry = route.retry
        self._wait = wait_exponential_jitter(
            multiplier=retry.initial_backoff_seconds,
            max=retry.max_backoff_seconds,
            jitter=retry.initial_backoff_seconds,
        )

    # -- helpers -----------------------------------------------------------------------

    def _backoff(self, attempts: int) -> float:
        return float(self._wait(SimpleNamespace(attempt_number=max(attempts, 1))))  # type: ignore[arg-type]

    def _too_old(self, record: StreamRecord) -> bool:
        limit = self.route.retry.max_record_age_seconds
        if limit < 0 or self._dead_letters is None:
            return False
        created = record.latest_creation_epoch  # a coarse timestamp must not park a fresh record
        return created is not None and time.time() - created > limit

    def _out_of_attempts(self, attempts: int) -> bool:
        limit = self.route.retry.max_attempts
        return self._dead_letters is not None and limit != -1 and attempts >= limit

    def _parks_permanent(self, error: BaseException) -> bool:
        return self._dead_letters is not None and not is_retryable(error)

    def _failure_details(self, record: StreamRecord, error: BaseException) -> dict[str, str]:
        """``at`` (the failing line) always; ``traceback`` when the gate lets it through.
        Nothing for failures that were never raised (a batch handler's reported records)."""
        if error.__traceback__ is None:
            return {}
        details = {"at": failure_site(error)}
        if _tracebacks.allow((self.route.name, record.shard_id, record.sequence_number)):
            details["traceback"] = format_traceback(error)
        return details

    def _observe(self, records: Iterable[StreamRecord], outcome: str, started: float, ended: float) -> None:
        for record in records:
            for observer in self._services.observers:
                observer(record, self.route.name, outcome, started, ended)

    def oldest_failure_seconds(self) -> float:
        """Seconds since the first failed call of the longest-failing record still being
        retried or parked (0.0 when none is)."""
        firsts = list(self._failing.values())
        return time.monotonic() - min(firsts) if firsts else 0.0

    def _finish(self, record: StreamRecord) -> None:
        self._progress.finish(record)
        if self._batch:
            # Inside a key scheduler's batch call: the record's key goes back as soon as all
            # of its records in the batch are finished, not when the whole batch is.
            record_finished(record)
            self._failing.pop(id(record), None)  # no longer failing, though its batch goes on

    async def _invoke(self, records: list[StreamRecord], attempt: int) -> tuple[list[StreamRecord], float]:
        """Call the handler once (the ``attempt``-th time for these records; see
        HandlerInvoker); return what a batch handler reported as failed and when the call
        started. A call that raised is counted as an error."""
        started = time.monotonic()
        try:
            with tracing.handler_call(self.route, records):
                if self.route.is_batch:
                    failed = await self.invoker.handle_batch(records, attempt)
                else:
                    await self.invoker.handle(records[0], attempt)
                    failed = []
        except Exception:
            self._record(records, "error", started)
            raise
        return failed, started

    def _record(self, records: Sequence[StreamRecord], outcome: str, started: float) -> None:
        ended = time.monotonic()
        self._handled[outcome].inc(len(records))
        self._duration.observe(ended - started, tracing.exemplar())
        if outcome == "ok":
            created = records[-1].approximate_creation_epoch
            if created is not None:
                self._last_age.set(max(time.time() - created, 0.0))
        if self._services.observers:
            self._observe(records, outcome, started, ended)

    # -- per record ----------------------------------------------------------------------

    async def deliver(
        self, records: list[StreamRecord], key_of: Callable[[StreamRecord], Hashable] | None = None
    ) -> None:
        """Return once every record is handled or parked (in order within the call).

        ``key_of`` (batch routes) names each record's partition key: a failed part waits
        out its back-off while the parts of other keys go on; without it every record
        counts as one key and the whole rest of the batch waits behind a failed part."""
        with tracing.delivery(self.route, records):
            if self.route.is_batch:
                await self._deliver_batch(records, key_of or _one_key)
            else:
                for record in records:
                    await self._deliver_one(record)

    async def deliver_record(self, record: StreamRecord, task: asyncio.Task[Any] | None = None) -> None:
        """``deliver([record])`` for a per-record route, in fewer steps when nothing is
        special: tracing off, the record young enough, and a first call that succeeds
        (the key scheduler calls this once per record, with ``task``, the task it runs
        in). Anything else takes the general path, from the first attempt's outcome on."""
        if self._batch:
            raise TypeError(f"route {self.route.name!r} takes batches: deliver() them")
        if tracing.enabled() or self._too_old(record):
            await self.deliver([record])
            return
        started = time.monotonic()
        try:
            await self.invoker.handle(record, 1, task)
        except Exception as exc:  # noqa: BLE001 - the general path applies the policy
            self._record((record,), "error", started)
            first_failure = utc_now()
            self._failing[id(record)] = time.monotonic()
            try:
                if not await self._after_failure([record], exc, 1, {record.sequence_number: first_failure}):
                    await self._deliver_one(record, attempts=1, first_failure=first_failure)
            finally:
                self._failing.pop(id(record), None)
            return
        self._record((record,), "ok", started)
        self._progress.finish(record)

    async def _deliver_one(
        self, record: StreamRecord, attempts: int = 0, first_failure: datetime | None = None
    ) -> None:
        """Call until handled or parked; ``attempts`` calls were made already."""
        try:
            while True:
                if self._too_old(record):
                    await self._park(record, RecordTooOld("older than max_record_age_seconds"), "record_too_old",
                                     attempts, first_failure)
                    return
                attempts += 1
                try:
                    _, started = await self._invoke([record], attempts)
                except Exception as exc:  # noqa: BLE001 - the policy below decides
                    if first_failure is None:
                        first_failure = utc_now()
                        self._failing.setdefault(id(record), time.monotonic())
                    if await self._after_failure([record], exc, attempts, {record.sequence_number: first_failure}):
                        return
                    continue
                self._record([record], "ok", started)
                self._finish(record)
                return
        finally:
            self._failing.pop(id(record), None)

    async def _after_failure(
        self, records: list[StreamRecord], error: BaseException, attempts: int, first: dict[str, datetime]
    ) -> bool:
        """Park or back off after a failed call. True when the records were parked."""
        delay = await self._park_or_backoff(records, error, attempts, first)
        if delay is None:
            return True
        await self._sleep(delay)
        return False

    async def _park_or_backoff(
        self, records: list[StreamRecord], error: BaseException, attempts: int, first: dict[str, datetime]
    ) -> float | None:
        """Park the records after a failed call (None), or the back-off before the next attempt."""
        self._progress.failing()
        if self._parks_permanent(error) or self._out_of_attempts(attempts):
            error_class = "exhausted" if is_retryable(error) else "permanent"
            for record in records:
                await self._park(record, error, error_class, attempts, first.get(record.sequence_number))
            return None
        delay = self._backoff(attempts)
        metrics.handler_retries.labels(self.route.name).inc(len(records))
        level = "warning" if is_retryable(error) else "error"
        getattr(log, level)(
            "retry failed handler", route=self.route.name, stream=self.route.table,
            shard=records[0].shard_id, seq=records[0].sequence_number, records=len(records),
            attempt=attempts, delay=round(delay, 3), error=type(error).__name__, detail=str(error)[:300],
            **self._failure_details(records[0], error),
        )
        return delay

    # -- batches -------------------------------------------------------------------------

    async def _deliver_batch(self, batch: list[StreamRecord], key_of: Callable[[StreamRecord], Hashable]) -> None:
        try:
            await self._deliver_batch_parts(batch, key_of)
        finally:
            for record in batch:
                self._failing.pop(id(record), None)

    async def _deliver_batch_parts(self, batch: list[StreamRecord], key_of: Callable[[StreamRecord], Hashable]) -> None:
        attempts: dict[str, int] = {}
        first: dict[str, datetime] = {}
        queue: list[list[StreamRecord]] = [batch]  # parts to call now, in stream order
        # Failed parts waiting out their back-off: (due, part), with the later records of
        # their keys moved behind them, so only the failed keys wait.
        waiting: list[tuple[float, list[StreamRecord]]] = []
        loop = asyncio.get_running_loop()
        while queue or waiting:
            if not queue:
                due, part = waiting.pop(min(range(len(waiting)), key=lambda i: waiting[i][0]))
                await self._sleep(max(due - loop.time(), 0.0))
                queue.append(part)
            part = queue.pop(0)
            fresh = []
            for record in part:
                if self._too_old(record):
                    await self._park(record, RecordTooOld("older than max_record_age_seconds"), "record_too_old",
                                     attempts.get(record.sequence_number, 0), first.get(record.sequence_number))
                else:
                    fresh.append(record)
            part = fresh
            if not part:
                continue
            error: BaseException
            try:
                attempt = 1 + max(attempts.get(r.sequence_number, 0) for r in part)
                failed, started = await self._invoke(part, attempt)
                error = ReportedFailure("reported failed by the batch handler")
            except Exception as exc:  # noqa: BLE001 - bisect or apply the policy below
                if len(part) > 1 and self.route.retry.bisect_batch_on_error:
                    middle = len(part) // 2
                    queue[0:0] = [part[:middle], part[middle:]]
                    self._progress.failing()
                    continue
                failed, error, started = part, exc, time.monotonic()
            done = [r for r in part if r not in failed]
            if done:
                self._record(done, "ok", started)
                for record in done:
                    self._finish(record)
            if not failed:
                continue
            if isinstance(error, ReportedFailure):
                self._record(failed, "error", started)
            now, failed_at = utc_now(), time.monotonic()
            for record in failed:
                attempts[record.sequence_number] = attempts.get(record.sequence_number, 0) + 1
                first.setdefault(record.sequence_number, now)
                self._failing.setdefault(id(record), failed_at)
            count = max(attempts[r.sequence_number] for r in failed)
            delay = await self._park_or_backoff(failed, error, count, first)
            if delay is None:
                continue
            blocked = {key_of(r) for r in failed}
            held = [r for p in queue for r in p if key_of(r) in blocked]
            queue = [rest for p in queue if (rest := [r for r in p if key_of(r) not in blocked])]
            waiting.append((loop.time() + delay, failed + held))

    # -- parking -------------------------------------------------------------------------

    async def _park(
        self, record: StreamRecord, error: BaseException, error_class: str, attempts: int,
        first_failure: datetime | None,
    ) -> None:
        assert self._dead_letters is not None
        message = DeadLetter.from_failure(
            record, self.route.name, error, error_class, attempts,
            first_failure or utc_now(), self._services.worker_id,
        )
        tries = 0
        while True:
            tries += 1
            try:
                await self._dead_letters.send(message)
                break
            except DeadLetterTooLarge as exc:
                # The destination can never take this letter whole. Park it without the
                # item images (keys, position and error stay) and put the full letter in the
                # error log, the one place left that takes it: nothing is dropped silently.
                log.error("park letter without images: too large for the destination",
                          route=self.route.name, seq=record.sequence_number, size=exc.size, limit=exc.limit,
                          letter=message.to_json())
                message = _without_images(message)
            except Exception as exc:  # noqa: BLE001 - keep the record unfinished and try again
                metrics.dead_letter_failures.labels(self.route.name).inc()
                log.error("retry failed dead-letter write", route=self.route.name, seq=record.sequence_number,
                          attempt=tries, error=type(exc).__name__, detail=str(exc)[:300])
                await self._sleep(self._backoff(tries))
        metrics.records_dead_lettered.labels(self.route.table, self.route.name, error_class).inc()
        tracing.record_park(record, error_class, attempts, error)
        log.warning("park record in dead-letter destination", route=self.route.name, stream=self.route.table,
                    shard=record.shard_id, seq=record.sequence_number, error_class=error_class,
                    attempts=attempts, error=type(error).__name__, detail=str(error)[:300],
                    at=failure_site(error))
        now = time.monotonic()
        self._observe([record], "dead_lettered", now, now)
        self._finish(record)


def _one_key(record: StreamRecord) -> Hashable:
    return None


def _without_images(message: DeadLetter) -> DeadLetter:
    record = dict(message.record)
    record["dynamodb"] = {k: v for k, v in record.get("dynamodb", {}).items() if k not in ("NewImage", "OldImage")}
    note = " [item images dropped: the letter exceeded the destination's size limit; full letter in the error log]"
    return replace(message, record=record, error_message=message.error_message + note)

