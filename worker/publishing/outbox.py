"""Outbox publisher: one row per event in a DynamoDB table whose stream the worker reads."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from worker.idempotency import put_if_absent
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
        await put_if_absent(self._table, item, "eventId")

    async def close(self) -> None:
        return None
