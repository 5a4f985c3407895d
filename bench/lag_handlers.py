"""Handlers for the lag benchmark: the seed's handlers, each preceded by one JSON line
(route, order id, wall-clock start) in ``<options.dir>/<route>.jsonl``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

from worker.handlers.orders import process_order
from worker.handlers.shipments import dispatch_shipment

_files: dict[str, IO[str]] = {}


def _note(ctx: Any, order_id: Any, written_at: Any, started: float) -> None:
    path = str(Path(ctx.options["dir"]) / f"{ctx.route}.jsonl")
    handle = _files.get(path)
    if handle is None:
        handle = _files[path] = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    line = {"route": ctx.route, "orderId": str(order_id), "startedAt": started,
            "writtenAt": float(written_at) if written_at is not None else None}
    handle.write(json.dumps(line) + "\n")


async def process_order_timed(record: Any, ctx: Any) -> None:
    started = time.time()
    image = record.new_image or {}
    _note(ctx, image.get("orderId"), image.get("writtenAt"), started)
    await process_order(record, ctx)


async def dispatch_shipment_timed(record: Any, ctx: Any) -> None:
    started = time.time()
    payload = (record.new_image or {}).get("payload") or {}
    _note(ctx, payload.get("orderId"), None, started)
    await dispatch_shipment(record, ctx)
