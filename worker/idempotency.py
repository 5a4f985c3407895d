"""Idempotency for handlers: run a handler's effect once per key, however often its
record is delivered.

Redelivery is normal (a crash before the checkpoint, a lease taken over, a retry). Two
tools, from small to large:

* :func:`put_if_absent` and :func:`update_if`: one conditional write that reports
  whether it happened instead of raising. The built-in handlers and the outbox publisher
  are made idempotent with these alone.
* :func:`idempotent`: a decorator for handlers whose effect is not one conditional write
  (a call to another service, several writes). A row per key in a DynamoDB table records
  the call, in the spirit of Powertools' ``@idempotent``:

  1. before the call, a conditional put claims the key with an ``IN_PROGRESS`` marker
     that expires when the route's timeout would have cancelled the call (plus a margin):
     a worker that dies mid-call does not block the key for longer than that;
  2. after the call, the row becomes ``COMPLETED`` with the handler's result (JSON);
  3. a repeat finds ``COMPLETED`` and returns the stored result without calling the
     handler; one that finds a live ``IN_PROGRESS`` raises :class:`IdempotencyInProgress`
     (retryable: the delivery backs off and tries again);
  4. a handler that raises releases the key, so the retry runs it again;
  5. rows expire by the table's Time to Live attribute (``expiration``, epoch seconds), and
     an expired row that TTL has not deleted yet is treated as absent.

  What it cannot do: a crash after the effect but before step 2 leaves an
  ``IN_PROGRESS`` marker; once it expires, the handler runs again. Keep the effect
  inside as small as possible, or make it a conditional write too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar

from botocore.exceptions import ClientError

from worker.aws_errors import is_conditional_check_failed
from worker.errors import RetryableError

if TYPE_CHECKING:
    from worker.processing.context import HandlerContext, Table
    from worker.records import StreamRecord

T = TypeVar("T")

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
EXPIRATION_ATTRIBUTE = "expiration"
# Used when the route has no timeout: how long a claim blocks the key after a crash.
DEFAULT_IN_PROGRESS_SECONDS = 60.0
# Added to the route's remaining time: the claim must outlive the call it protects.
IN_PROGRESS_MARGIN_SECONDS = 5.0


async def put_if_absent(table: Table, item: dict[str, Any], key_attribute: str) -> bool:
    """Write ``item`` unless a row with its key exists. True when this call wrote it."""
    try:
        await table.put_item(Item=item, ConditionExpression="attribute_not_exists(#key)",
                             ExpressionAttributeNames={"#key": key_attribute})
    except ClientError as exc:
        if is_conditional_check_failed(exc):
            return False
        raise
    return True


async def update_if(table: Table, **update: Any) -> bool:
    """``table.update_item(**update)`` with its ``ConditionExpression``. True when the
    condition held and the item was updated, False when DynamoDB refused it."""
    if "ConditionExpression" not in update:
        raise ValueError("update_if needs a ConditionExpression")
    try:
        await table.update_item(**update)
    except ClientError as exc:
        if is_conditional_check_failed(exc):
            return False
        raise
    return True


class IdempotencyInProgress(RetryableError):
    """Another call holds the key and its claim has not expired yet: retry later."""


class IdempotencyStore:
    """The DynamoDB table of idempotency rows, by its logical name in the config.

    The row key is the table's configured ``key`` attribute (``tables.<name>.key``);
    enable Time to Live on :data:`EXPIRATION_ATTRIBUTE` so that old rows go away.
    """

    def __init__(self, table: str, *, expires_after_seconds: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        if expires_after_seconds <= 0:
            raise ValueError("expires_after_seconds must be positive")
        self.table = table
        self.expires_after_seconds = expires_after_seconds
        self._clock = clock  # epoch seconds; tests move it to expire claims and rows

    async def claim(self, ctx: HandlerContext, key: str) -> tuple[bool, Any]:
        """Claim ``key`` for this call. ``(True, None)``: go ahead and run the handler;
        ``(False, result)``: it completed before, with ``result``. Raises
        :class:`IdempotencyInProgress` while another claim is live."""
        table, key_attribute = await self._table(ctx)
        now = self._clock()
        remaining = ctx.remaining_seconds()
        hold = (DEFAULT_IN_PROGRESS_SECONDS if remaining is None else remaining) + IN_PROGRESS_MARGIN_SECONDS
        row = {
            key_attribute: key,
            "status": IN_PROGRESS,
            EXPIRATION_ATTRIBUTE: int(now + self.expires_after_seconds),
            "inProgressUntil": Decimal(str(round(now + hold, 3))),
        }
        try:
            await table.put_item(
                Item=row,
                ConditionExpression=(
                    "attribute_not_exists(#key) OR #expiration < :now "
                    "OR (#status = :in_progress AND inProgressUntil < :now)"
                ),
                ExpressionAttributeNames={"#key": key_attribute, "#status": "status",
                                          "#expiration": EXPIRATION_ATTRIBUTE},
                ExpressionAttributeValues={":now": Decimal(str(round(now, 3))), ":in_progress": IN_PROGRESS},
            )
        except ClientError as exc:
            if not is_conditional_check_failed(exc):
                raise
            held = (await table.get_item(Key={key_attribute: key}, ConsistentRead=True)).get("Item") or {}
            if held.get("status") == COMPLETED:
                return False, json.loads(str(held.get("result", "null")))
            raise IdempotencyInProgress(f"idempotency key {key!r} is being handled by another call") from None
        return True, None

    async def complete(self, ctx: HandlerContext, key: str, result: Any) -> None:
        """Mark ``key`` done and keep ``result`` (JSON) for the repeats."""
        table, key_attribute = await self._table(ctx)
        stored = "null" if result is None else json.dumps(result, sort_keys=True, default=str)
        await table.update_item(
            Key={key_attribute: key},
            UpdateExpression="SET #status = :completed, #result = :result REMOVE inProgressUntil",
            ExpressionAttributeNames={"#status": "status", "#result": "result"},
            ExpressionAttributeValues={":completed": COMPLETED, ":result": stored},
        )

    async def release(self, ctx: HandlerContext, key: str) -> None:
        """Give the key up after a failed call, so that the retry runs the handler again
        (only our own claim: a row another call completed meanwhile stays)."""
        table, key_attribute = await self._table(ctx)
        try:
            await table.delete_item(Key={key_attribute: key}, ConditionExpression="#status = :in_progress",
                                    ExpressionAttributeNames={"#status": "status"},
                                    ExpressionAttributeValues={":in_progress": IN_PROGRESS})
        except ClientError as exc:
            if not is_conditional_check_failed(exc):
                raise

    async def _table(self, ctx: HandlerContext) -> tuple[Table, str]:
        config = ctx.config.tables.get(self.table)
        if config is None:
            known = ", ".join(sorted(ctx.config.tables)) or "none"
            raise RetryableError(f"idempotency table {self.table!r} is not in the config's tables (known: {known})")
        return await ctx.table(self.table), config.key


RecordHandler = Callable[["StreamRecord", "HandlerContext"], Awaitable[T]]


def idempotent(
    key: Callable[[StreamRecord], Any],
    *,
    table: str | IdempotencyStore,
    expires_after_seconds: float = 3600.0,
) -> Callable[[RecordHandler[T]], RecordHandler[T]]:
    """Make a per-record handler run once per ``key(record)`` (see the module docstring).

    ``table`` is the logical name of the idempotency table in the config (or a store).
    The key is namespaced by the handler's qualified name, so handlers can share a table.
    A ``key`` function that raises fails the record like the handler would.
    """
    store = table if isinstance(table, IdempotencyStore) else IdempotencyStore(
        table, expires_after_seconds=expires_after_seconds)

    def decorate(handler: RecordHandler[T]) -> RecordHandler[T]:
        name = f"{handler.__module__}.{handler.__qualname__}"

        @functools.wraps(handler)
        async def run_once(record: StreamRecord, ctx: HandlerContext) -> T:
            row_key = idempotency_key(name, key(record))
            fresh, stored = await store.claim(ctx, row_key)
            if not fresh:
                ctx.log.info("skip repeated call", idempotency_key=row_key)
                return stored  # type: ignore[no-any-return]
            try:
                result = await handler(record, ctx)
            except Exception:
                await store.release(ctx, row_key)
                raise
            await store.complete(ctx, row_key, result)
            return result

        return run_once

    return decorate


def idempotency_key(namespace: str, value: Any) -> str:
    """The row key: the handler's name and a hash of the key value (any JSON-able value)."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    return f"{namespace}#{digest[:40]}"
