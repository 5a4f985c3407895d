"""Handlers for the delivery-control tests, referenced from test configs by import string.

All state is module-level and cleared by :func:`reset` (an autouse fixture calls it
before every test). Every call is logged with the key (``orderId``), the ``counter``
attribute and the sequence number, so tests can assert exactly what each handler saw.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from worker.errors import PermanentError
from worker.processing.context import HandlerContext
from worker.processing.delivery import BatchResult
from worker.records import StreamRecord


@dataclass(frozen=True)
class Seen:
    route: str
    key: str
    counter: int | None
    seq: str
    event: str


def seen(record: StreamRecord, route: str) -> Seen:
    image = record.new_image or record.old_image or {}
    key = image.get("orderId", record.keys.get("orderId"))
    counter = image.get("counter")
    return Seen(route, str(key), None if counter is None else int(counter), record.sequence_number,
                str(record.raw.get("eventName")))


# -- state ------------------------------------------------------------------------------

calls: list[Seen] = []  # every per-record handler call, in call order
succeeded: list[Seen] = []  # per-record calls that returned normally
batches: list[list[Seen]] = []  # every batch handler call, in call order
batch_outcomes: list[str] = []  # "ok" | "raised" | "reported" per batch call
fail_keys: set[str] = set()  # per-record: RuntimeError for these keys
permanent_keys: set[str] = set()  # per-record: PermanentError for these keys
slow_keys: set[str] = set()  # per-record: these keys sleep ``options['slow']`` seconds
poison_keys: set[str] = set()  # batch: raise when the batch holds one of these keys
report_once: set[str] = set()  # batch: report these keys failed the first time they are seen
report_as_sequence: bool = False  # batch: report failures by sequence number instead of record
reported: set[str] = set()
allow = asyncio.Event()  # once set, nothing fails any more
active = 0
max_active = 0


def reset() -> None:
    global allow, active, max_active, report_as_sequence
    for collection in (calls, succeeded, batches, batch_outcomes, fail_keys, permanent_keys, slow_keys,
                       poison_keys, report_once, reported):
        collection.clear()
    allow = asyncio.Event()
    active = 0
    max_active = 0
    report_as_sequence = False


def calls_for(key: str) -> list[Seen]:
    return [call for call in calls if call.key == key]


# -- handlers ---------------------------------------------------------------------------


async def record_handler(record: StreamRecord, ctx: HandlerContext) -> None:
    """Per record. ``ctx.options['sleep']`` seconds of work; concurrency is measured."""
    global active, max_active
    call = seen(record, ctx.route)
    calls.append(call)
    active += 1
    max_active = max(max_active, active)
    try:
        await asyncio.sleep(float(ctx.options.get("sleep", 0)))
        if call.key in slow_keys and not allow.is_set():
            await asyncio.sleep(float(ctx.options.get("slow", 0)))
        if not allow.is_set():
            if call.key in permanent_keys:
                raise PermanentError(f"bad data for {call.key}")
            if call.key in fail_keys:
                raise RuntimeError(f"injected failure for {call.key}")
    finally:
        active -= 1
    succeeded.append(call)


async def batch_handler(records: list[StreamRecord], ctx: HandlerContext) -> BatchResult:
    """Per batch: raises if a poison key is in the batch, else reports ``report_once``
    keys as failed the first time, else succeeds."""
    batch = [seen(record, ctx.route) for record in records]
    batches.append(batch)
    await asyncio.sleep(float(ctx.options.get("sleep", 0)))
    if not allow.is_set() and any(item.key in poison_keys for item in batch):
        batch_outcomes.append("raised")
        raise RuntimeError("poison record in batch")
    failed: list[Any] = []
    for record, item in zip(records, batch):
        if item.key in report_once and item.key not in reported:
            reported.add(item.key)
            failed.append(record.sequence_number if report_as_sequence else record)
    batch_outcomes.append("reported" if failed else "ok")
    return BatchResult(failed=tuple(failed))
