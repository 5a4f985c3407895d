"""The publisher of a config without one: publishing is a permanent, clearly named error.

A worker whose handlers publish nothing needs no outbox table, queue or topic. A handler
that does call ``ctx.publisher.publish`` gets :class:`PublisherNotConfigured`, a
``PermanentError``: retrying cannot help, so the record is parked (where the route has a
dead-letter destination) with a message that names the route and the fix.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from worker.errors import PermanentError
from worker.publishing.base import Publisher
from worker.publishing.events import Event

_Handler = TypeVar("_Handler", bound=Callable[..., object])


class PublisherNotConfigured(PermanentError):
    """A handler published an event, but the config has no ``publisher`` section."""


class NoPublisher:
    """Stands in for a publisher when the config has none (``type: none`` or no section)."""

    def __init__(self, route: str | None = None) -> None:
        self._route = route

    async def publish(self, event: Event) -> None:
        where = f"route {self._route!r}" if self._route else "a handler"
        raise PublisherNotConfigured(
            f"{where} published a {event.type!r} event, but the config has no publisher: "
            "add a 'publisher' section (type outbox, eventbridge, sqs or sns)"
        )

    async def close(self) -> None:
        return None


def for_route(publisher: Publisher, route: str) -> Publisher:
    """The publisher a route's handlers get: the same one, or a stand-in naming the route."""
    return NoPublisher(route) if isinstance(publisher, NoPublisher) else publisher


def publishes_events(handler: _Handler) -> _Handler:
    """Mark a handler that always publishes, so a config without a publisher fails at load."""
    setattr(handler, "publishes_events", True)
    return handler
