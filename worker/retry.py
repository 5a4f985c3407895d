"""Shared tenacity policy for AWS calls: throttling, 5xx and connection errors back off
with jitter and retry until they succeed or the task is cancelled."""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from worker.aws import is_retryable_aws_error
from worker.aws_errors import error_code
from worker.observability import metrics

T = TypeVar("T")
log = structlog.get_logger(__name__)

FIRST_BACKOFF_SECONDS = 0.05


def _note_retry(operation: str, attempt: int, exc: BaseException | None) -> None:
    code = (error_code(exc) or type(exc).__name__) if exc else "unknown"
    metrics.aws_retries.labels(operation, code).inc()
    log.warning("retry aws call", operation=operation, attempt=attempt, error=code, detail=str(exc)[:200])


async def call_aws(operation: str, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` and retry retryable AWS errors forever with capped, jittered back-off."""
    # The common case is one call: tenacity's machinery is built only after a failure
    # (it is a measurable share of an idle shard's poll).
    try:
        return await fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - retryable errors go on below, others propagate
        if not is_retryable_aws_error(exc):
            raise
        _note_retry(operation, 1, exc)
    await asyncio.sleep(FIRST_BACKOFF_SECONDS * (1 + random.random()))

    def before_sleep(state: RetryCallState) -> None:
        _note_retry(operation, state.attempt_number + 1, state.outcome.exception() if state.outcome else None)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_retryable_aws_error),
        wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=FIRST_BACKOFF_SECONDS),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            return await fn(*args, **kwargs)
    raise AssertionError("unreachable: tenacity either returns or raises")
