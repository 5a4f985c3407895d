"""HandlerInvoker: the one way a route's handler is called, by delivery and by replay alike.

It builds the handler's context, applies the route's ``timeout_seconds`` (a timed-out call
is cancelled and fails as a :class:`RetryableError`), and reads what a batch handler
reports as failed (``BatchResult`` or an iterable of records or sequence numbers).

Timeouts run on a :class:`Watchdog`, which serves one call at a time. An invoker serves
one route of one shard, whose key scheduler runs calls of different keys concurrently:
each call takes an idle watchdog (or a new one), so there are as many as calls ever ran
at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Protocol

from worker.errors import PermanentError, RetryableError
from worker.processing.context import BatchResult, HandlerContext, Resources, TableProvider
from worker.processing.router import Route
from worker.processing.watchdog import HandlerTimeout, Watchdog
from worker.publishing.base import Publisher
from worker.publishing.none import for_route as publisher_for_route
from worker.records import StreamRecord


class ProcessingObserver(Protocol):
    """Told about every handler outcome (demo trace, tests). Must not raise or block.
    ``outcome`` is ``ok``, ``error`` or ``dead_lettered``."""

    def __call__(self, record: StreamRecord, route: str, outcome: str, started: float, ended: float) -> None: ...


@dataclass(frozen=True)
class DeliveryServices:
    """What every route of a worker shares."""

    publisher: Publisher
    tables: TableProvider
    config: Any
    worker_id: str
    observers: list[ProcessingObserver]
    # Filled by hooks.on_start before any record is delivered: ``ctx.resources``.
    resources: Resources = field(default_factory=Resources)


class HandlerInvoker:
    def __init__(self, route: Route, services: DeliveryServices, log: Any) -> None:
        self.route = route
        self._services = services
        # Without a configured publisher, publishing fails with an error naming this route.
        self._publisher = publisher_for_route(services.publisher, route.name)
        self._log = log  # bound to the route; bound to the record on first use by a handler
        self._idle_watchdogs: list[Watchdog] = []
        self._route_name = route.name

    def context(self, record: StreamRecord | None, attempt: int = 1, shard_id: str = "") -> HandlerContext:
        """The handler's context for its ``attempt``-th call with these records; ``record``
        binds ``ctx.log`` to it (None for a batch, whose records come from ``shard_id``)."""
        timeout = self.route.timeout_seconds
        # Positional, in HandlerContext's field order: a call per record, and keyword
        # matching is a measurable part of it.
        return HandlerContext(
            self._route_name, self.route.options, self._publisher, self._services.config,
            self._log if record is None else _RecordLog(self._log, record),
            self._services.tables, shard_id if record is None else record.shard_id, attempt,
            None if timeout is None else time.monotonic() + timeout, self._services.resources,
        )

    async def handle(self, record: StreamRecord, attempt: int = 1, task: asyncio.Task[Any] | None = None) -> None:
        """Call a per-record handler with ``record``; raises what the handler raised.
        ``task``: the task this runs in, when the caller knows it (see Watchdog.run)."""
        await self._call(self.route.handler(record, self.context(record, attempt)), task)

    async def handle_batch(self, records: list[StreamRecord], attempt: int = 1) -> list[StreamRecord]:
        """Call a batch handler; return the records it reported as failed (in order)."""
        context = self.context(None, attempt, records[0].shard_id)
        result = await self._call(self.route.handler(list(records), context))
        failed_ids = {item.sequence_number if isinstance(item, StreamRecord) else str(item)
                      for item in self._reported_failures(result)}
        return [r for r in records if r.sequence_number in failed_ids]

    def _reported_failures(self, result: object) -> list[object]:
        """What a batch handler may return, and what it means (docs/handlers.md):

        * ``None``: every record succeeded;
        * ``BatchResult(failed=...)``: those records (or sequence numbers) failed;
        * Lambda's partial-batch response ``{"batchItemFailures": [{"itemIdentifier": seq}]}``,
          so handlers ported from Lambda keep working;
        * a list, tuple or set of records or sequence numbers: the failed ones (shorthand).

        Anything else is a bug in the handler, not a failure of its records: it is a
        PermanentError naming the route, so the batch is parked (or, without a dead-letter
        destination, retried and logged) instead of being silently read one way or another.
        """
        if result is None:
            return []
        if isinstance(result, BatchResult):
            return list(result.failed)
        if isinstance(result, dict) and isinstance(result.get("batchItemFailures"), list):
            return [item["itemIdentifier"] for item in result["batchItemFailures"]
                    if isinstance(item, dict) and "itemIdentifier" in item]
        if isinstance(result, (list, tuple, set, frozenset)):
            return list(result)
        raise PermanentError(
            f"batch handler of route {self.route.name!r} returned {type(result).__name__}: return None "
            "(all succeeded) or BatchResult(failed=[...]) naming the failed records"
        )

    async def _call(self, call: Awaitable[Any], task: asyncio.Task[Any] | None = None) -> Any:
        timeout = self.route.timeout_seconds
        if timeout is None:
            return await call
        watchdog = self._idle_watchdogs.pop() if self._idle_watchdogs else Watchdog()
        try:
            return await watchdog.run(call, timeout, task)
        except HandlerTimeout:
            raise RetryableError(f"handler timed out after {timeout} s") from None
        finally:
            self._idle_watchdogs.append(watchdog)


class _RecordLog:
    """A handler's logger, bound to its record (shard, sequence number, correlation id) on
    first use: most records are handled without a log line, and binding costs more than
    the rest of a no-op delivery."""

    __slots__ = ("_route_log", "_record", "_bound")

    def __init__(self, route_log: Any, record: StreamRecord) -> None:
        self._route_log = route_log
        self._record = record
        self._bound: Any = None

    def _logger(self) -> Any:
        if self._bound is None:
            record = self._record
            self._bound = self._route_log.bind(shard=record.shard_id, seq=record.sequence_number,
                                               correlation_id=_correlation_id(record))
        return self._bound

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy/pickle probes: not the logger's business
            raise AttributeError(name)
        return getattr(self._logger(), name)

    def __copy__(self) -> Any:
        return self._logger()

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self._logger()

    def __repr__(self) -> str:
        return repr(self._logger())


def _correlation_id(record: StreamRecord) -> str:
    """What ties log lines of one business flow together: an event's ``correlationId``
    (outbox records), else the item's key values (an order's id)."""
    raw_image = record.raw.get("dynamodb", {}).get("NewImage") or {}
    typed = raw_image.get("correlationId")
    if isinstance(typed, dict) and "S" in typed:
        return str(typed["S"])
    keys = record.raw.get("dynamodb", {}).get("Keys") or {}
    return "/".join(str(next(iter(value.values()), "")) for value in keys.values() if isinstance(value, dict))
