"""Handler for the takeover benchmark: counts calls per sequence number in this process;
the key ``poison`` fails until ``heal`` is set (max_attempts -1: it is retried for ever)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

calls: Counter[str] = Counter()  # handler calls per sequence number
succeeded: set[str] = set()
heal = asyncio.Event()


def reset() -> None:
    global heal
    calls.clear()
    succeeded.clear()
    heal = asyncio.Event()


async def count_calls(record: Any, ctx: Any) -> None:
    calls[record.sequence_number] += 1
    if (record.new_image or {}).get("orderId") == "poison" and not heal.is_set():
        raise RuntimeError("poison record")
    succeeded.add(record.sequence_number)
