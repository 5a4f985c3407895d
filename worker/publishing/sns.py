"""SNS publisher: the envelope as the message.

FIFO topics get the same group and deduplication ids as FIFO queues (see
:mod:`worker.publishing.sqs`); standard topics cannot deduplicate, so subscribers
dedupe on the ``eventId`` attribute (also in the message).
"""

from __future__ import annotations

from typing import Any

from worker.publishing.events import Event
from worker.publishing.sqs import _attributes, _fifo_fields


class SnsPublisher:
    """Publishes one message per event to ``topic_arn``."""

    def __init__(self, client: Any, topic_arn: str) -> None:
        self._client = client
        self._topic_arn = topic_arn
        self._fifo = topic_arn.endswith(".fifo")

    async def publish(self, event: Event) -> None:
        extra = _fifo_fields(event) if self._fifo else {}
        await self._client.publish(
            TopicArn=self._topic_arn,
            Message=event.to_json(),
            MessageAttributes=_attributes(event),
            **extra,
        )

    async def close(self) -> None:
        # The client is shared and owned by AwsClients.
        return None
