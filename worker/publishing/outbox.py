"""Outbox publisher: one row per event in a DynamoDB table whose stream the worker reads.

When this process reads that stream too (the seed's chain), ``on_written`` wakes its idle
readers of it (worker/retrieval/idle_budget.py), so the event's consumer does not wait out
an idle back-off: the second hop of a chain then costs about what the first does."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Callable

from worker.idempotency import put_if_absent
from worker.publishing.events import Event


def _to_dynamodb_values(value: Any) -> Any:
    # The resource API wants Decimal, never float.
    return json.loads(json.dumps(value), parse_float=Decimal)


class OutboxPublisher:
    """Writes the event once: the conditional put makes a redelivered publish a no-op."""

    def __init__(self, table: Any, on_written: Callable[[], None] | None = None) -> None:
        self._table = table
        self._on_written = on_written

    async def publish(self, event: Event) -> None:
        item = _to_dynamodb_values(json.loads(event.to_json()))
        await put_if_absent(self._table, item, "eventId")
        if self._on_written is not None:
            self._on_written()

    async def close(self) -> None:
        return None
