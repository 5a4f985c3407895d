"""ShardReader: reads one shard in order through GetShardIterator/GetRecords.

It owns the shard iterator and the position of the last record it handed out, so it
can recover by itself:

* ``ExpiredIteratorException`` (iterators live 15 minutes): a fresh iterator
  ``AFTER_SEQUENCE_NUMBER`` the last record handed out; nothing lost, nothing repeated.
* ``TrimmedDataAccessException`` (position older than the 24 h retention): by the
  trimmed-data policy (worker/retrieval/trimmed.py), restart at ``TRIM_HORIZON`` or raise
  ``TrimmedDataError``; met while still at ``TRIM_HORIZON`` (nothing lost), a fresh
  ``TRIM_HORIZON`` iterator, quietly.
* Throttling (``LimitExceededException``), 5xx and connection errors: back off and retry.
* ``ResourceNotFoundException``: the stream or shard is gone (``ShardGoneError``).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import ClientError

from worker.aws_errors import error_code
from worker.config import ReaderConfig
from worker.errors import ShardGoneError
from worker.observability import metrics
from worker.retrieval.idle_budget import IdlePollBudget
from worker.retrieval.trimmed import TrimmedDataPolicy
from worker.retry import call_aws

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StartPosition:
    """Where a reader starts: an iterator type and, for the sequence types, a number."""

    iterator_type: str  # TRIM_HORIZON | LATEST | AFTER_SEQUENCE_NUMBER | AT_SEQUENCE_NUMBER
    sequence_number: str | None = None

    @classmethod
    def after(cls, sequence_number: str) -> "StartPosition":
        return cls("AFTER_SEQUENCE_NUMBER", sequence_number)


TRIM_HORIZON = StartPosition("TRIM_HORIZON")


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    shard_end: bool


class ShardReader:
    def __init__(
        self,
        client: Any,
        *,
        stream_arn: str,
        shard_id: str,
        stream_label: str,
        start: StartPosition,
        config: ReaderConfig,
        budget: IdlePollBudget | None = None,
    ) -> None:
        self._client = client
        self._budget = budget
        self.stream_arn = stream_arn
        self.shard_id = shard_id
        self._label = stream_label
        self._start = start
        self._config = config
        self._trimmed = TrimmedDataPolicy.from_config(config, stream_label, shard_id)
        self._iterator: str | None = None
        self._last_sequence: str | None = None
        self._ended = False
        self.last_tip_at = time.monotonic()
        self._log = log.bind(stream=stream_label, shard=shard_id)

    @property
    def position(self) -> StartPosition:
        """Where a fresh iterator must start so that nothing handed out is read again."""
        if self._last_sequence is not None:
            return StartPosition.after(self._last_sequence)
        return self._start

    async def _get_iterator(self, position: StartPosition) -> str | None:
        kwargs: dict[str, Any] = {
            "StreamArn": self.stream_arn,
            "ShardId": self.shard_id,
            "ShardIteratorType": position.iterator_type,
        }
        if position.sequence_number is not None:
            kwargs["SequenceNumber"] = position.sequence_number
        response = await call_aws("GetShardIterator", self._client.get_shard_iterator, **kwargs)
        iterator = response.get("ShardIterator")
        return str(iterator) if iterator else None

    @property
    def at_trim_horizon(self) -> bool:
        """Still reading from TRIM_HORIZON: no record handed out since (re)starting there."""
        return self._last_sequence is None and self._start.iterator_type == "TRIM_HORIZON"

    async def _on_trimmed(self, exc: ClientError) -> None:
        self._trimmed.records_lost(self._log, str(self.position), "position is past retention", exc)
        # Records between our position and the horizon are gone: say so loudly, then go on.
        self._log.error("restart at trim horizon after trimmed data", position=str(self.position))
        self._start = TRIM_HORIZON
        self._last_sequence = None
        # read_page fetches the new iterator (at self.position == TRIM_HORIZON) inside its
        # own error handling, so a shard that aged out meanwhile is a ShardGoneError.
        self._iterator = None

    async def read_page(self) -> Page:
        """One GetRecords call (plus any iterator recovery it needs)."""
        if self._ended:
            return Page([], True)
        at_horizon_retries = 0
        while True:
            try:
                if self._iterator is None:
                    self._iterator = await self._get_iterator(self.position)
                    if self._iterator is None:
                        self._ended = True
                        return Page([], True)
                started = time.monotonic()
                response = await call_aws(
                    "GetRecords", self._client.get_records, ShardIterator=self._iterator, Limit=self._config.max_records
                )
                metrics.get_records_latency.labels(self._label).observe(time.monotonic() - started)
                metrics.get_records_calls.labels(self._label, "ok").inc()
                break
            except ClientError as exc:
                code = error_code(exc)
                metrics.get_records_calls.labels(self._label, code or "error").inc()
                if code == "ExpiredIteratorException":
                    metrics.iterators_expired.labels(self._label).inc()
                    self._log.info("renew expired iterator", position=str(self.position))
                    self._iterator = None
                    continue
                if code == "TrimmedDataAccessException" and self.at_trim_horizon:
                    at_horizon_retries += 1
                    self._iterator = None
                    await self._trimmed.stale_at_horizon(self._log, at_horizon_retries)
                    continue
                if code == "TrimmedDataAccessException":
                    await self._on_trimmed(exc)
                    continue
                if code == "ResourceNotFoundException":
                    raise ShardGoneError(f"{self.stream_arn} {self.shard_id}: {exc}") from exc
                raise
        records: list[dict[str, Any]] = response.get("Records", [])
        self._iterator = response.get("NextShardIterator")
        if records:
            self._last_sequence = records[-1]["dynamodb"]["SequenceNumber"]
            metrics.records_read.labels(self._label).inc(len(records))
        else:
            self.last_tip_at = time.monotonic()
        if self._iterator is None:
            self._ended = True
        return Page(records, self._ended)

    async def next_page(self, stop: asyncio.Event) -> Page | None:
        """Poll until a page has records or the shard ends; None if ``stop`` is set first.

        Empty reads back off from ``idle_poll_seconds`` to ``max_idle_poll_seconds``, or
        further when the process's idle shards would exceed the shared
        :class:`IdlePollBudget`, whose ticks then time the polls; a page with records is
        followed by the next read at once, and so is a wake of this stream by a writer in
        this process (:meth:`IdlePollBudget.wake`).
        """
        delay = self._config.idle_poll_seconds
        configured = self._config.max_idle_poll_seconds
        idle = False
        # One waiter on ``stop`` for the whole idle spell, not a task per poll.
        stopped: asyncio.Future[Any] | None = None
        try:
            while not stop.is_set():
                read_at = time.monotonic()
                page = await self.read_page()
                if page.records or page.shard_end:
                    return page
                if stopped is None:
                    stopped = asyncio.ensure_future(stop.wait())
                waits: tuple[asyncio.Future[Any], ...] = (stopped,)
                woken: asyncio.Future[None] | None = None
                if self._budget is not None:
                    if not idle:
                        idle = True
                        self._budget.enter_idle(self._label)
                    woken = self._budget.woken(self._label, since=read_at)
                    waits = (stopped, woken)
                if self._budget is not None and delay >= configured:
                    await asyncio.wait((self._budget.tick_after(delay), *waits), return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                if woken is not None and woken.done():
                    # This process just wrote to the stream: poll now, and keep polling at
                    # the short pace while the writes go on.
                    delay = self._config.idle_poll_seconds
                    continue
                delay = min(max(delay * 2, 0.05), configured)
                ceiling = self._budget.ceiling(configured) if self._budget is not None else configured
                if delay >= configured and ceiling > configured:
                    # Past the configured back-off, go straight to the budget's pace, spread
                    # at random so that many idle shards do not all poll in the same tick.
                    delay = ceiling * random.uniform(0.5, 1.5)
            return None
        finally:
            if stopped is not None:
                stopped.cancel()
            if idle and self._budget is not None:
                self._budget.leave_idle(self._label)
