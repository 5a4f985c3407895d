"""SQS publisher: the envelope as the message body.

On a FIFO queue the message group is the correlation id (events of one business key
stay in order) and the deduplication id is the event id, so SQS drops a redelivered
publish within its 5-minute deduplication window. Standard queues cannot deduplicate:
consumers dedupe on the ``eventId`` message attribute (also in the body).
"""

from __future__ import annotations

from typing import Any

from worker.publishing.events import Event


def _attributes(event: Event) -> dict[str, dict[str, str]]:
    # Attributes let consumers filter or dedupe without parsing the body.
    return {
        "eventId": {"DataType": "String", "StringValue": event.id},
        "type": {"DataType": "String", "StringValue": event.type},
    }


def _fifo_fields(event: Event) -> dict[str, str]:
    return {"MessageGroupId": event.correlation_id, "MessageDeduplicationId": event.id}


class SqsPublisher:
    """Sends one message per event to ``queue_url``."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url
        self._fifo = queue_url.endswith(".fifo")

    async def publish(self, event: Event) -> None:
        extra = _fifo_fields(event) if self._fifo else {}
        await self._client.send_message(
            QueueUrl=self._queue_url,
            MessageBody=event.to_json(),
            MessageAttributes=_attributes(event),
            **extra,
        )

    async def close(self) -> None:
        # The client is shared and owned by AwsClients.
        return None
