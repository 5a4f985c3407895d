"""Errors of the dead-letter destinations.

Both are :class:`~worker.errors.PermanentError`: sending the same message again gives the
same failure, so a caller must not retry them blindly. Every other failure of a
destination (AWS errors, ``OSError``) propagates unchanged, so that the caller holds the
checkpoint and retries the send like any other transient trouble.
"""

from __future__ import annotations

from worker.errors import PermanentError


class DeadLetterTooLarge(PermanentError):
    """The encoded message exceeds what the destination accepts.

    The record was not parked. The caller decides what to do: hold the checkpoint (and
    alert), or fall back to a destination with a larger limit (a JSONL file has none,
    DynamoDB takes 400 KB, SQS up to 1 MiB when the queue's ``MaximumMessageSize`` allows).
    """

    def __init__(self, destination: str, message_id: str, size: int, limit: int) -> None:
        self.destination = destination
        self.message_id = message_id
        self.size = size
        self.limit = limit
        super().__init__(
            f"dead letter {message_id} is {size} bytes, over the {destination} limit of {limit} bytes; "
            "it was not parked"
        )


class DeadLetterDecodeError(PermanentError, ValueError):
    """A stored message is not a dead letter this version can read."""
