"""Watchdog: handler timeouts without a timer per call.

``asyncio.timeout`` schedules and cancels a timer for every call; at thousands of records a
second that was a sixth of a no-op delivery's CPU. A watchdog serves one call at a time
(``HandlerInvoker`` keeps one per concurrent call): it keeps the running call's deadline
and at most one timer. The timer is armed when none is pending and, when it fires early
(the call it was armed for has finished), it re-arms itself for the deadline of the call
running then, if any. Steady traffic thus
costs one timer per ``timeout`` period instead of one per record.

A call past its deadline is cancelled and :class:`HandlerTimeout` raised in its place. A
cancellation that comes from elsewhere (the pipeline being closed) propagates unchanged; the
bookkeeping (``Task.cancelling``/``uncancel``) is the one ``asyncio.timeout`` uses.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable


class HandlerTimeout(Exception):
    """The call ran past its deadline and was cancelled."""


class Watchdog:
    def __init__(self) -> None:
        self._deadline: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def run(self, call: Awaitable[Any], timeout: float, task: asyncio.Task[Any] | None = None) -> Any:
        """Await ``call``; cancel it and raise :class:`HandlerTimeout` after ``timeout`` s.

        ``task`` is the task this runs in, when the caller knows it (a key scheduler's
        worker does): ``asyncio.current_task()`` is a Python function on 3.11 and this
        runs once per record."""
        loop = asyncio.get_running_loop()
        if task is None:
            task = asyncio.current_task(loop)
        if task is None or self._deadline is not None:
            if asyncio.iscoroutine(call):
                call.close()  # never started: no "never awaited" warning
            raise RuntimeError("Watchdog.run: one call at a time, from a task")
        cancelling = task.cancelling()
        self._task, self._expired = task, False
        self._deadline = deadline = loop.time() + timeout
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._check)
        cancelled = False
        try:
            return await call
        except asyncio.CancelledError:
            cancelled = True
            if self._expired and task.uncancel() <= cancelling:
                raise HandlerTimeout() from None
            raise
        finally:
            if self._expired and not cancelled:
                task.uncancel()  # the call swallowed our cancel: take the request back
            self._deadline = None
            self._task = None

    def _check(self) -> None:
        self._timer = None
        deadline, task = self._deadline, self._task
        if deadline is None or task is None:
            return  # nothing running: the next call arms a new timer
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            self._expired = True
            task.cancel()
        else:
            self._timer = loop.call_at(deadline, self._check)
