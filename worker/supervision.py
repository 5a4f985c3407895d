"""Supervision helpers shared by every background loop and every shard consumer.

* :func:`sleep_until_stopped`: the one way to wait for a while unless a stop comes first.
* :class:`RestartBackoff`: the one restart policy. A crash is followed by a delay that
  starts at 0.5 s and doubles up to 30 s while the crashes repeat; a run that lasted
  ``HEALTHY_RUN_SECONDS`` before crashing is a new incident and starts over at 0.5 s.
  Without the start-over, a few transient crashes over a process's life left every later
  one stopped for 30 s (for the lease taker: no lease taken and no loss noticed for 30 s).
* :func:`supervise`: runs a loop body until it returns or a stop is asked; a crash is
  logged, counted and the body restarted after the back-off.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from worker.observability import metrics


async def sleep_until_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; True when it was set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return stop.is_set()
    return True


class RestartBackoff:
    INITIAL_SECONDS = 0.5
    MAX_SECONDS = 30.0
    HEALTHY_RUN_SECONDS = 30.0

    def __init__(self) -> None:
        self._delay = self.INITIAL_SECONDS
        self._began = time.monotonic()

    def started(self) -> None:
        """The supervised thing (re)started now."""
        self._began = time.monotonic()

    def after_crash(self) -> float:
        """The delay before the next start, after a crash now."""
        if time.monotonic() - self._began >= self.HEALTHY_RUN_SECONDS:
            self._delay = self.INITIAL_SECONDS
        delay = self._delay
        self._delay = min(self._delay * 2, self.MAX_SECONDS)
        return delay


async def supervise(
    name: str,
    body: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    *,
    log: Any,
    on_crash: Callable[[str], None] = lambda name: None,
    backoff: RestartBackoff | None = None,
) -> None:
    """Run ``body(stop)``; restart it after a crash (logged, counted, ``on_crash(name)``)."""
    backoff = backoff or RestartBackoff()
    while not stop.is_set():
        backoff.started()
        try:
            await body(stop)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            delay = backoff.after_crash()
            metrics.loop_crashes.labels(name).inc()
            on_crash(name)
            log.exception("restart crashed loop", loop=name, delay=delay)
            await sleep_until_stopped(stop, delay)
