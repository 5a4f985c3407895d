"""EventBridge publisher: one PutEvents entry per event.

EventBridge has no deduplication, so a redelivered record publishes the same event a
second time. The envelope in ``detail`` carries the deterministic ``eventId``: consumers
deduplicate on ``detail.eventId``, never on EventBridge's own per-put ``id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from worker.errors import RetryableError
from worker.publishing.events import Event


def _parse_time(value: str) -> datetime:
    # Event.time is ISO 8601 with a "Z" suffix, which fromisoformat accepts on 3.11+.
    return datetime.fromisoformat(value)


class EventBridgePublisher:
    """Puts each event on ``event_bus``; a failed entry is raised so the caller retries.

    PutEvents answers HTTP 200 even when an entry fails, reporting it only through
    ``FailedEntryCount``; ignoring that would silently drop the event.
    """

    def __init__(self, client: Any, event_bus: str) -> None:
        self._client = client
        self._event_bus = event_bus

    async def publish(self, event: Event) -> None:
        response = await self._client.put_events(
            Entries=[
                {
                    "Source": event.source,
                    "DetailType": event.type,
                    "Detail": event.to_json(),
                    "EventBusName": self._event_bus,
                    # The cause's time, not "now": a redelivery publishes the same event.
                    "Time": _parse_time(event.time),
                }
            ]
        )
        if response.get("FailedEntryCount", 0):
            entry: dict[str, Any] = next((e for e in response.get("Entries", []) if e.get("ErrorCode")), {})
            raise RetryableError(
                f"EventBridge rejected event {event.id} on bus {self._event_bus!r}: "
                f"{entry.get('ErrorCode', 'unknown error')}: {entry.get('ErrorMessage', 'no message')}"
            )

    async def close(self) -> None:
        # The client is shared and owned by AwsClients.
        return None
