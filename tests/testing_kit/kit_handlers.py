"""Handlers the testing-kit tests name in their configs. State is module-level and cleared
by :func:`reset` (an autouse fixture in the tests)."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from worker import BatchResult, HandlerContext, PermanentError, RetryableError, StreamRecord

contexts: list[dict[str, Any]] = []
fail_first: set[str] = set()  # keys whose first call raises RetryableError
poison: set[str] = set()  # keys a batch raises on while they are in it
batches: list[list[str]] = []


def reset() -> None:
    for collection in (contexts, fail_first, poison, batches, handled):
        collection.clear()


def _key(record: StreamRecord) -> str:
    return str(record.keys["id"])


async def note_context(record: StreamRecord, ctx: HandlerContext) -> None:
    """Keeps what the context tells; fails the first call of keys in ``fail_first``."""
    await asyncio.sleep(0.01)
    contexts.append({"key": _key(record), "route": ctx.route, "shard_id": ctx.shard_id, "attempt": ctx.attempt,
                     "remaining": ctx.remaining_seconds(), "options": dict(ctx.options)})
    if _key(record) in fail_first:
        fail_first.discard(_key(record))
        raise RetryableError("first call fails")


async def copy_to_mirror(record: StreamRecord, ctx: HandlerContext) -> None:
    """Copies the new image into the ``mirror`` table; a ``bad`` image is a permanent error."""
    image = record.new_image or {}
    if image.get("bad"):
        raise PermanentError(f"item {_key(record)} is marked bad")
    mirror = await ctx.table("mirror")
    await mirror.put_item(Item={**image, "seenBy": ctx.route})


async def batch_with_poison(records: list[StreamRecord], ctx: HandlerContext) -> BatchResult:
    """Raises while any poison key is in the batch (so delivery bisects around it)."""
    keys = [_key(record) for record in records]
    batches.append(keys)
    if poison & set(keys):
        raise RuntimeError(f"poison in {keys}")
    return BatchResult()


async def always_fails(record: StreamRecord, ctx: HandlerContext) -> None:
    raise RuntimeError("this handler never succeeds")


class Item(BaseModel):
    """The model the ``model:`` tests name."""

    id: str
    n: int


handled: list[str] = []


async def note_key(record: StreamRecord, ctx: HandlerContext) -> None:
    handled.append(_key(record))


async def note_keys(records: list[StreamRecord], ctx: HandlerContext) -> None:
    handled.extend(_key(record) for record in records)


NOT_A_MODEL = 42


async def send_to_queue(record: StreamRecord, ctx: HandlerContext) -> None:
    """A handler with an SQS client of its own (the queue URL in the route's options)."""
    import aioboto3

    async with aioboto3.Session().client("sqs") as sqs:
        await sqs.send_message(QueueUrl=ctx.options["queue_url"], MessageBody=_key(record))
