"""SQS dead letters: the letter's JSON as the message body; replay by receive and delete.

FIFO queues (URL ending in ``.fifo``): the message group is derived from the stream and
shard, so letters of one shard stay in parking order; the deduplication id is the
letter id, so re-parking the same record for the same route within SQS's 5-minute
deduplication window stores it once.

Standard queues cannot deduplicate: a repeated send is a second message with the same
letter id (in the body and the ``deadLetterId`` attribute), and ``fetch`` returns both;
the replayer deduplicates on the id.

Size: SQS counts the body plus every message attribute's name, type and value. The
default limit is the classic 256 KiB, which every queue accepts; a queue whose
``MaximumMessageSize`` is larger (up to 1 MiB) can be given ``max_message_bytes``. A
larger letter raises :class:`DeadLetterTooLarge` without sending anything.
"""

from __future__ import annotations

import hashlib
from typing import Any

import structlog

from worker.deadletter.base import Parked
from worker.deadletter.errors import DeadLetterDecodeError, DeadLetterTooLarge
from worker.deadletter.message import DeadLetter

log = structlog.get_logger(__name__)

SQS_MAX_MESSAGE_BYTES = 262_144
# ReceiveMessage returns at most 10 messages per call.
_RECEIVE_BATCH = 10


def message_group_id(stream_arn: str, shard_id: str) -> str:
    """One group per shard: 64 hex characters, well inside SQS's 128-character limit.

    Stream ARNs are up to ~300 characters, so the pair is hashed rather than joined.
    """
    return hashlib.sha256(f"{stream_arn}|{shard_id}".encode()).hexdigest()


def message_attributes(message: DeadLetter) -> dict[str, dict[str, str]]:
    """Attributes let an operator filter (SNS subscription policies) without parsing the
    body. SQS rejects empty attribute values, so empty ones are left out."""
    values = {
        "deadLetterId": message.id,
        "route": message.route,
        "errorClass": message.error_class,
        "table": message.table,
    }
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items() if value}


def fifo_fields(message: DeadLetter) -> dict[str, str]:
    return {
        "MessageGroupId": message_group_id(message.stream_arn, message.shard_id),
        "MessageDeduplicationId": message.id,
    }


def encoded_size(body: str, attributes: dict[str, dict[str, str]]) -> int:
    """The size SQS and SNS check: body plus attribute names, types and values, in UTF-8."""
    size = len(body.encode("utf-8"))
    for name, attribute in attributes.items():
        size += len(name.encode("utf-8")) + len(attribute["DataType"].encode("utf-8"))
        size += len(attribute["StringValue"].encode("utf-8"))
    return size


class SqsDeadLetters:
    """Parks letters in ``queue_url`` and replays them from it.

    ``wait_seconds`` is the long-poll wait of the first receive of a ``fetch`` (later
    receives of the same fetch do not wait, so a drained queue costs one wait);
    ``visibility_timeout`` (default: the queue's) is how long a fetched letter stays hidden
    from other fetches before it comes back unacknowledged.
    """

    def __init__(
        self,
        client: Any,
        queue_url: str,
        *,
        max_message_bytes: int = SQS_MAX_MESSAGE_BYTES,
        wait_seconds: int = 1,
        visibility_timeout: int | None = None,
    ) -> None:
        self._client = client
        self._queue_url = queue_url
        self._fifo = queue_url.endswith(".fifo")
        self._max_message_bytes = max_message_bytes
        self._wait_seconds = wait_seconds
        self._visibility_timeout = visibility_timeout

    async def send(self, message: DeadLetter) -> None:
        body = message.to_json()
        attributes = message_attributes(message)
        size = encoded_size(body, attributes)
        if size > self._max_message_bytes:
            raise DeadLetterTooLarge("SQS", message.id, size, self._max_message_bytes)
        extra = fifo_fields(message) if self._fifo else {}
        await self._client.send_message(
            QueueUrl=self._queue_url, MessageBody=body, MessageAttributes=attributes, **extra
        )

    async def fetch(self, limit: int) -> list[Parked]:
        """Up to ``limit`` letters, receiving at most 10 per call until a receive brings
        nothing new.

        A message received twice in one fetch (possible with a zero visibility timeout)
        is returned once, with its latest receipt handle. A body that is not a dead
        letter is logged and left in the queue (its redrive policy, if any, moves it on).
        On a FIFO queue, SQS hides the rest of a group while some of it is in flight, so
        one fetch returns at most one receive's worth of each shard's letters.
        """
        found: dict[str, Parked] = {}
        wait = self._wait_seconds
        while len(found) < limit:
            request: dict[str, Any] = {
                "QueueUrl": self._queue_url,
                "MaxNumberOfMessages": min(_RECEIVE_BATCH, limit - len(found)),
                "WaitTimeSeconds": wait,
                "MessageAttributeNames": ["All"],
            }
            if self._visibility_timeout is not None:
                request["VisibilityTimeout"] = self._visibility_timeout
            batch = (await self._client.receive_message(**request)).get("Messages", [])
            wait = 0
            before = len(found)
            for raw in batch:
                parked = _parse(raw)
                if parked is not None:
                    found[raw["MessageId"]] = parked
            if len(found) == before:
                break
        return list(found.values())[:limit]

    async def acknowledge(self, parked: Parked) -> None:
        await self._client.delete_message(QueueUrl=self._queue_url, ReceiptHandle=parked.handle)

    async def close(self) -> None:
        # The client is shared and owned by AwsClients.
        return None


def _parse(raw: dict[str, Any]) -> Parked | None:
    try:
        return Parked(message=DeadLetter.from_json(raw["Body"]), handle=raw["ReceiptHandle"])
    except DeadLetterDecodeError as exc:
        log.warning("skip message that is not a dead letter", message_id=raw.get("MessageId"), error=str(exc))
        return None
