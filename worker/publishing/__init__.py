"""Follow-up events: the envelope and the publishers that deliver it."""

from __future__ import annotations

from worker.publishing.base import Publisher
from worker.publishing.events import Event, derive_event_id
from worker.publishing.factory import build_publisher
from worker.publishing.none import NoPublisher, PublisherNotConfigured

__all__ = ["Event", "NoPublisher", "Publisher", "PublisherNotConfigured", "build_publisher", "derive_event_id"]
