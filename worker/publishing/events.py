"""The event envelope that handlers publish, with ids derived from their cause.

Redelivering a record must not publish a second, different event, so an event id
is a UUIDv5 of the event type and a deduplication key that the handler chooses
(a business key such as the order id, or the source record's stream position).
The event time is the source record's creation time, not "now", for the same reason.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from worker.aws_errors import utc_now

# Fixed namespace: ids stay stable across versions and processes.
EVENT_ID_NAMESPACE = uuid.UUID("4f1c2a7e-6b1d-5c3e-9a8f-2d7b6e0c1a95")


def derive_event_id(event_type: str, dedup_key: str) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{event_type}\x1f{dedup_key}"))


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    source: str
    correlation_id: str
    causation_id: str
    time: str
    payload: dict[str, Any] = field(default_factory=dict)
    # W3C trace context of the publish (worker/observability/tracing.py sets it when tracing
    # is on), so the consumer of this event continues the producer's trace.
    traceparent: str | None = None

    @classmethod
    def derive(
        cls,
        *,
        type: str,
        source: str,
        dedup_key: str,
        correlation_id: str,
        causation_id: str,
        time: datetime | None,
        payload: dict[str, Any],
    ) -> "Event":
        moment = (time or utc_now()).astimezone(timezone.utc)
        return cls(
            id=derive_event_id(type, dedup_key),
            type=type,
            source=source,
            correlation_id=correlation_id,
            causation_id=causation_id,
            time=moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            payload=payload,
        )

    def to_dict(self) -> dict[str, Any]:
        envelope = {
            "eventId": self.id,
            "type": self.type,
            "source": self.source,
            "correlationId": self.correlation_id,
            "causationId": self.causation_id,
            "time": self.time,
            "payload": self.payload,
        }
        if self.traceparent is not None:
            envelope["traceparent"] = self.traceparent
        return envelope

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
