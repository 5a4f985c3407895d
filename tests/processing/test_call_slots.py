"""CallSlots: free slots are taken at once, a freed slot goes to the oldest waiter, and a
cancelled waiter neither keeps nor loses a slot."""

from __future__ import annotations

import asyncio

from worker.processing.key_scheduler import CallSlots


async def test_waiters_get_freed_slots_in_order() -> None:
    slots = CallSlots(1)
    await slots.take()
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        order.append(name)

    tasks = [asyncio.create_task(wait(name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    assert order == [] and slots.free == 0
    slots.give()  # to "a", not to the pool
    await asyncio.sleep(0)
    assert order == ["a"] and slots.free == 0
    slots.give()
    await asyncio.gather(*tasks)
    assert order == ["a", "b"] and slots.free == 0
    slots.give()
    assert slots.free == 1


async def test_a_cancelled_waiter_keeps_no_slot_and_loses_none() -> None:
    slots = CallSlots(1)
    await slots.take()
    cancelled = asyncio.create_task(slots.take())
    handed_over = asyncio.create_task(slots.take())
    behind = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    cancelled.cancel()  # cancelled while waiting: the next give skips it
    await asyncio.sleep(0)
    slots.give()  # goes to handed_over ...
    handed_over.cancel()  # ... which is cancelled before it runs: it passes the slot on
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert cancelled.cancelled() and handed_over.cancelled()
    assert behind.done() and slots.free == 0  # "behind" holds the one slot
    slots.give()
    assert slots.free == 1
