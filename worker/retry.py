"""Shared tenacity policy for AWS calls: throttling, 5xx and connection errors back off
with jitter and retry until they succeed or the task is cancelled."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from worker.aws import error_code, is_retryable_aws_error
from worker.observability import metrics

T = TypeVar("T")
log = structlog.get_logger(__name__)


async def call_aws(operation: str, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` and retry retryable AWS errors forever with capped, jittered back-off."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        code = (error_code(exc) or type(exc).__name__) if exc else "unknown"
        metrics.aws_retries.labels(operation, code).inc()
        log.warning(
            "retry aws call",
            operation=operation,
            attempt=state.attempt_number,
            error=error_code(exc) if exc else None,
            detail=str(exc)[:200],
        )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(is_retryable_aws_error),
        wait=wait_exponential_jitter(multiplier=0.05, max=5.0, jitter=0.05),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            return await fn(*args, **kwargs)
    raise AssertionError("unreachable: tenacity either returns or raises")
