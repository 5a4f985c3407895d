"""Outbox publisher: one row per event in a DynamoDB table whose stream the worker reads."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from worker.aws_errors import is_conditional_check_failed
from worker.publishing.events import Event


def _to_dynamodb_values(value: Any) -> Any:
    # The resource API wants Decimal, never float.
    return json.loads(json.dumps(value), parse_float=Decimal)


class OutboxPublisher:
    """Writes the event once: the conditional put makes a redelivered publish a no-op."""

    def __init__(self, table: Any) -> None:
        self._table = table

    async def publish(self, event: Event) -> None:
        item = _to_dynamodb_values(json.loads(event.to_json()))
        try:
            await self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(eventId)")
        except ClientError as exc:
            if not is_conditional_check_failed(exc):
                raise

    async def close(self) -> None:
        return None
