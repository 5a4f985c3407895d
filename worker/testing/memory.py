"""In-memory publisher and dead-letter destination, for tests of handlers and deliveries.

They keep what they are given, in order: ``MemoryPublisher.events`` the events a handler
published, ``MemoryDeadLetters.letters`` the records a delivery parked (each a full
:class:`~worker.deadletter.DeadLetter`, as a real destination would store it). The route
harness uses both; a test that drives a ``RouteDelivery`` itself can too.
"""

from __future__ import annotations

from worker.deadletter import DeadLetter
from worker.publishing.events import Event


class MemoryPublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)

    async def close(self) -> None:
        return None


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, message: DeadLetter) -> None:
        self.letters.append(message)

    async def close(self) -> None:
        return None
