"""The one interface every publisher implements."""

from __future__ import annotations

from typing import Protocol

from worker.publishing.events import Event


class Publisher(Protocol):
    """Publishes follow-up events. ``publish`` is idempotent per ``event.id`` where the
    destination can deduplicate (outbox table, FIFO queues and topics); elsewhere the
    id travels with the event so that consumers can deduplicate."""

    async def publish(self, event: Event) -> None: ...

    async def close(self) -> None: ...
