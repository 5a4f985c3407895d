"""SNS dead letters: publish the letter's JSON, for fan-out to whoever subscribes.

Send-only: a topic keeps nothing, so there is nothing to replay from. Subscribe an SQS
queue (raw message delivery on, so the body is the letter itself) and replay from the
queue with type ``sqs``.

FIFO topics get the per-shard group and the letter id as deduplication id, as FIFO
queues do (see :mod:`worker.deadletter.sqs`). The size limit is 256 KiB, body plus
attributes; a larger letter raises :class:`DeadLetterTooLarge` without publishing.
"""

from __future__ import annotations

from typing import Any

from worker.deadletter.errors import DeadLetterTooLarge
from worker.deadletter.message import DeadLetter
from worker.deadletter.sqs import SQS_MAX_MESSAGE_BYTES, encoded_size, fifo_fields, message_attributes

SNS_MAX_MESSAGE_BYTES = SQS_MAX_MESSAGE_BYTES

REPLAY_HINT = (
    "an SNS topic keeps no messages, so dead letters cannot be fetched from it: subscribe an SQS "
    "queue to the topic (RawMessageDelivery=true) and replay from that queue with dead-letter type 'sqs'"
)


class SnsDeadLetters:
    """Publishes letters to ``topic_arn``. A destination only, not a :class:`DeadLetterSource`
    (no ``fetch``/``acknowledge``): ``build_dead_letter_source`` refuses type ``sns`` with
    :data:`REPLAY_HINT`."""

    def __init__(self, client: Any, topic_arn: str, *, max_message_bytes: int = SNS_MAX_MESSAGE_BYTES) -> None:
        self._client = client
        self._topic_arn = topic_arn
        self._fifo = topic_arn.endswith(".fifo")
        self._max_message_bytes = max_message_bytes

    async def send(self, message: DeadLetter) -> None:
        body = message.to_json()
        attributes = message_attributes(message)
        size = encoded_size(body, attributes)
        if size > self._max_message_bytes:
            raise DeadLetterTooLarge("SNS", message.id, size, self._max_message_bytes)
        extra = fifo_fields(message) if self._fifo else {}
        await self._client.publish(TopicArn=self._topic_arn, Message=body, MessageAttributes=attributes, **extra)

    async def close(self) -> None:
        # The client is shared and owned by AwsClients.
        return None
