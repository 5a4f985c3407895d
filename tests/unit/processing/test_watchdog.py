"""The watchdog: handler timeouts with at most one timer per watchdog (one per concurrent call)."""

from __future__ import annotations

import asyncio

import pytest

from worker.processing.watchdog import HandlerTimeout, Watchdog


async def _quick(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def test_calls_in_time_return_their_result_and_share_one_timer() -> None:
    watchdog = Watchdog()
    assert await watchdog.run(_quick(1), timeout=5.0) == 1
    timer = watchdog._timer
    assert timer is not None
    results = [await watchdog.run(_quick(n), timeout=5.0) for n in range(200)]
    assert results == list(range(200))
    assert watchdog._timer is timer  # armed once, not once per call


async def test_a_hanging_call_times_out_after_an_early_timer_rearms() -> None:
    watchdog = Watchdog()
    assert await watchdog.run(_quick(1), timeout=0.5) == 1  # arms a timer for its own deadline
    first_timer = watchdog._timer
    await asyncio.sleep(0.3)
    # This call's deadline is later than the pending timer's: the timer fires early, finds
    # this call still running, and re-arms for its deadline.
    with pytest.raises(HandlerTimeout):
        await watchdog.run(asyncio.sleep(30), timeout=0.5)
    assert first_timer is not None and watchdog._timer is None  # fired, re-armed, fired
    assert await watchdog.run(_quick(2), timeout=0.5) == 2  # usable after a timeout


async def test_a_cancellation_from_outside_is_not_a_timeout() -> None:
    watchdog = Watchdog()
    started = asyncio.Event()

    async def lane() -> None:
        async def hang() -> None:
            started.set()
            await asyncio.sleep(30)

        await watchdog.run(hang(), timeout=10.0)

    task = asyncio.create_task(lane())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_one_call_at_a_time() -> None:
    watchdog = Watchdog()
    first = asyncio.create_task(watchdog.run(asyncio.sleep(0.05), timeout=5.0))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one call at a time"):
        await watchdog.run(_quick(1), timeout=5.0)
    await first


async def test_a_call_that_swallows_the_timeout_leaves_no_cancel_request_behind() -> None:
    watchdog = Watchdog()

    async def stubborn() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "finished anyway"
        return "not reached"

    task = asyncio.current_task()
    assert task is not None
    assert await watchdog.run(stubborn(), timeout=0.02) == "finished anyway"
    assert task.cancelling() == 0
