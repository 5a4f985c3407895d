"""Runs the routes of one record to success, retrying failed routes with back-off.

A route that already succeeded for this record is not called again while another
route of the same record is retried. The checkpoint never passes a record that has
not finished every route it matched; a record that matches no route is acknowledged
and counted.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Protocol

import structlog
from tenacity import AsyncRetrying, RetryCallState, wait_exponential_jitter

from worker.config import Config, RetryConfig
from worker.observability import metrics
from worker.processing.context import HandlerContext, TableProvider
from worker.processing.router import Route, Router
from worker.publishing.base import Publisher
from worker.records import StreamRecord

log = structlog.get_logger(__name__)


class ProcessingObserver(Protocol):
    """Told about every handler call (demo trace, tests). Must not raise or block."""

    def __call__(self, record: StreamRecord, route: str, outcome: str, started: float, ended: float) -> None: ...


class RecordProcessor:
    def __init__(
        self,
        router: Router,
        *,
        publisher: Publisher,
        tables: TableProvider,
        config: Config,
        observers: list[ProcessingObserver] | None = None,
    ) -> None:
        self._router = router
        self._publisher = publisher
        self._tables = tables
        self._config = config
        self._retry: RetryConfig = config.processing.retry
        self.observers: list[ProcessingObserver] = list(observers or [])

    def _notify(self, record: StreamRecord, route: str, outcome: str, started: float, ended: float) -> None:
        for observer in self.observers:
            observer(record, route, outcome, started, ended)

    async def process(
        self, record: StreamRecord, on_retry: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Return when every matching route succeeded. ``on_retry`` runs once, before the
        first retry, so the caller can checkpoint the records before this one."""
        routes = self._router.routes_for(record)
        if not routes:
            metrics.records_unrouted.labels(record.table).inc()
            return
        created = record.approximate_creation_time
        if created is not None:
            age = (datetime.now(timezone.utc) - created).total_seconds()
            metrics.last_record_age.labels(record.table).set(max(age, 0.0))
        for route in routes:
            await self._run_route(route, record, on_retry)
            on_retry = None  # the prefix was checkpointed already if it ran

    async def _run_route(
        self, route: Route, record: StreamRecord, on_retry: Callable[[], Awaitable[None]] | None
    ) -> None:
        bound = log.bind(
            route=route.name, stream=record.table, shard=record.shard_id, seq=record.sequence_number
        )
        context = HandlerContext(
            route=route.name,
            options=route.options,
            publisher=self._publisher,
            config=self._config,
            log=bound,
            _tables=self._tables,
        )
        pending_hook: list[Any] = [on_retry]

        async def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            metrics.handler_retries.labels(route.name).inc()
            bound.warning(
                "retry failed handler",
                attempt=state.attempt_number,
                error=type(exc).__name__,
                detail=str(exc)[:300],
            )
            hook = pending_hook[0]
            if hook is not None:
                pending_hook[0] = None
                await hook()

        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(
                multiplier=self._retry.initial_backoff_seconds,
                max=self._retry.max_backoff_seconds,
                jitter=self._retry.initial_backoff_seconds,
            ),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                started = time.monotonic()
                try:
                    await route.handler(record, context)
                except Exception:
                    ended = time.monotonic()
                    metrics.records_handled.labels(record.table, route.name, "error").inc()
                    metrics.handler_duration.labels(route.name).observe(ended - started)
                    self._notify(record, route.name, "error", started, ended)
                    raise
                ended = time.monotonic()
                metrics.records_handled.labels(record.table, route.name, "ok").inc()
                metrics.handler_duration.labels(route.name).observe(ended - started)
                self._notify(record, route.name, "ok", started, ended)
