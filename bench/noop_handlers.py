"""Handlers for the benchmarks: the least work a consumer must do per record (decode the
new image), so that what is measured is the worker around the handler."""

from __future__ import annotations

import time
from typing import Any

_counted = 0


async def noop(record: Any, ctx: Any) -> None:
    record.new_image


async def noop_counting(record: Any, ctx: Any) -> None:
    """``noop`` that also counts the records it saw; when the count reaches
    ``options.expect`` it writes the wall-clock time to ``options.done_file`` (once)."""
    global _counted
    record.new_image
    _counted += 1
    if _counted == ctx.options["expect"]:
        with open(ctx.options["done_file"], "w", encoding="utf-8") as handle:
            handle.write(f"{time.time():.6f} {_counted}\n")
