"""Handlers for failure tests, referenced from test configs by import string."""

from __future__ import annotations

import asyncio

from worker.processing.context import HandlerContext
from worker.records import StreamRecord

# Records of these order ids fail until ``allow`` is set; attempts are counted.
failing: set[str] = set()
allow = asyncio.Event()
attempts: dict[str, int] = {}


async def flaky(record: StreamRecord, ctx: HandlerContext) -> None:
    order_id = str((record.new_image or {}).get("orderId"))
    attempts[order_id] = attempts.get(order_id, 0) + 1
    if order_id in failing and not allow.is_set():
        raise RuntimeError(f"injected failure for {order_id}")


def not_async(record: StreamRecord, ctx: HandlerContext) -> None:
    """A synchronous function: the registry must reject it."""
