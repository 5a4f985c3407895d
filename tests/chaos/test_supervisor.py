"""Found by the chaos run: a background loop's restart delay must not only ever grow.

Under throttling the taker loop crashes now and then (its lease-table calls are not
retried in place). The supervisor doubles the restart delay up to 30 s, but never
started over: after a handful of transient crashes in a process's life, every later one
stopped the taker for 30 s, i.e. no lease taken and no lost lease noticed for 30 s.
A loop that ran fine for a while before crashing starts again at the shortest delay.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from worker.supervision import RestartBackoff, supervise


class _Log:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def exception(self, event: str, **fields: Any) -> None:
        self.delays.append(fields["delay"])

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


async def test_restart_delay_starts_over_after_a_healthy_run() -> None:
    class QuickBackoff(RestartBackoff):
        HEALTHY_RUN_SECONDS = 0.3

    log = _Log()
    calls = 0

    async def body(stop: asyncio.Event) -> None:
        nonlocal calls
        calls += 1
        if calls in (1, 2):  # a crash loop: the delay doubles
            raise RuntimeError("throttled")
        if calls == 3:  # ran fine for a while, then one more transient crash
            await asyncio.sleep(0.4)
            raise RuntimeError("throttled again")
        return  # the fourth run ends normally

    started = time.monotonic()
    await asyncio.wait_for(supervise("taker", body, asyncio.Event(), log=log, backoff=QuickBackoff()), timeout=10)
    assert calls == 4
    assert log.delays == [0.5, 1.0, 0.5]
    assert time.monotonic() - started < 5
