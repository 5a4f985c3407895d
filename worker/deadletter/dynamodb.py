"""DynamoDB dead letters: one row per letter, kept after replay for audit.

The table needs only a hash key ``id`` (S). Each row holds the letter's JSON in
``message`` plus its fields as top-level attributes (``route``, ``table``,
``streamArn``, ``shardId``, ``sequenceNumber``, ``errorClass``, ``errorType``,
``errorMessage``, ``attempts``, ``firstFailureAt``, ``lastFailureAt``,
``deadLetteredAt``, ``workerId``) so an operator can query and filter without parsing
JSON, and ``status``: ``PARKED``, then ``REPLAYED`` with ``replayedAt``.

Idempotency: the put is conditional on the row being absent or still ``PARKED``. Parking
the same record for the same route again (same id) overwrites a parked row with the
newer failure details, but never resurrects a ``REPLAYED`` row: the record has been
replayed, and a late duplicate must not make the replayer run it a second time.

Size: a row may hold 400 KB; a larger letter raises :class:`DeadLetterTooLarge`
without writing anything.
"""

from __future__ import annotations

from typing import Any

import structlog
from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError

from worker.aws_errors import is_conditional_check_failed, utc_now
from worker.deadletter.base import Parked
from worker.deadletter.errors import DeadLetterDecodeError, DeadLetterTooLarge
from worker.deadletter.message import DeadLetter, utc_iso

log = structlog.get_logger(__name__)

DYNAMODB_MAX_ITEM_BYTES = 400 * 1024
PARKED = "PARKED"
REPLAYED = "REPLAYED"

# DynamoDB stores a number in at most 21 bytes; counting the maximum keeps the estimate safe.
_NUMBER_BYTES = 21


def to_item(message: DeadLetter) -> dict[str, Any]:
    """The row for ``message`` (plain Python values, for the resource API)."""
    return {
        "id": message.id,
        "route": message.route,
        "table": message.table,
        "streamArn": message.stream_arn,
        "shardId": message.shard_id,
        "sequenceNumber": message.sequence_number,
        "errorClass": message.error_class,
        "errorType": message.error_type,
        "errorMessage": message.error_message,
        "attempts": message.attempts,
        "firstFailureAt": message.first_failure_at,
        "lastFailureAt": message.last_failure_at,
        "deadLetteredAt": message.dead_lettered_at,
        "workerId": message.worker_id,
        "message": message.to_json(),
        "status": PARKED,
    }


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's item size (attribute names plus values) for the flat rows of :func:`to_item`."""
    size = 0
    for name, value in item.items():
        size += len(name.encode("utf-8"))
        size += _NUMBER_BYTES if isinstance(value, int) else len(str(value).encode("utf-8"))
    return size


class DynamoDbDeadLetters:
    """Parks letters as rows of ``table`` (an aioboto3 resource Table) and replays them.

    ``scan_page_size`` (default: DynamoDB's 1 MB pages) bounds the rows read per Scan call.
    """

    def __init__(self, table: Any, *, scan_page_size: int | None = None) -> None:
        self._table = table
        self._scan_page_size = scan_page_size

    async def send(self, message: DeadLetter) -> None:
        item = to_item(message)
        size = item_size(item)
        if size > DYNAMODB_MAX_ITEM_BYTES:
            raise DeadLetterTooLarge("DynamoDB", message.id, size, DYNAMODB_MAX_ITEM_BYTES)
        try:
            await self._table.put_item(
                Item=item, ConditionExpression=Attr("id").not_exists() | Attr("status").eq(PARKED)
            )
        except ClientError as exc:
            if not is_conditional_check_failed(exc):
                raise
            # Already replayed: see the module docstring.

    async def fetch(self, limit: int) -> list[Parked]:
        """Up to ``limit`` parked letters, in the table's (hash) order, scanning page by page.

        A row whose ``message`` cannot be decoded is logged and skipped.
        """
        found: list[Parked] = []
        request: dict[str, Any] = {"FilterExpression": Attr("status").eq(PARKED), "ConsistentRead": True}
        if self._scan_page_size is not None:
            request["Limit"] = self._scan_page_size
        while len(found) < limit:
            page = await self._table.scan(**request)
            for item in page.get("Items", []):
                try:
                    message = DeadLetter.from_json(str(item["message"]))
                    found.append(Parked(message=message, handle=str(item["id"])))
                except (DeadLetterDecodeError, KeyError) as exc:
                    log.warning("skip dead-letter row that cannot be decoded", id=item.get("id"), error=str(exc))
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]

    async def acknowledge(self, parked: Parked) -> None:
        """Flips the row to ``REPLAYED`` with ``replayedAt``; a second acknowledge (or one for a
        row that is gone) changes nothing, so the first replay time is kept."""
        try:
            await self._table.update_item(
                Key={"id": parked.handle},
                UpdateExpression="SET #status = :replayed, replayedAt = :now",
                ConditionExpression="#status = :parked",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":replayed": REPLAYED,
                    ":parked": PARKED,
                    ":now": utc_iso(utc_now()),
                },
            )
        except ClientError as exc:
            if not is_conditional_check_failed(exc):
                raise

    async def close(self) -> None:
        # The resource is shared and owned by AwsClients.
        return None
