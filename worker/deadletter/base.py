"""The interfaces every dead-letter destination implements.

Parking is part of processing: a record counts as handled once it is parked, so the
checkpoint may move past it. That is only safe if ``send`` returning means the letter is
durably stored, hence the contract: ``send`` raises on any failure and the caller then
holds the checkpoint (and retries or stops the shard). Nothing is ever dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from worker.deadletter.message import DeadLetter


@runtime_checkable
class DeadLetterDestination(Protocol):
    """Where a worker parks records.

    ``send`` is idempotent per ``message.id`` where the destination can deduplicate
    (FIFO queues, the DynamoDB table); elsewhere a repeated send stores a second copy
    with the same id, and replay deduplicates on it.
    """

    async def send(self, message: DeadLetter) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Parked:
    """A letter fetched for replay, with the handle its destination needs to acknowledge it
    (an SQS receipt handle, the DynamoDB row id, the JSONL letter id)."""

    message: DeadLetter
    handle: str


@runtime_checkable
class DeadLetterSource(Protocol):
    """Where a replayer reads parked records from.

    ``fetch`` returns up to ``limit`` letters not yet acknowledged; ``acknowledge`` marks
    one as replayed so that no later fetch returns it. A replayer acknowledges only after
    the replay succeeded: an unacknowledged letter comes back on a later fetch.
    """

    async def fetch(self, limit: int) -> list[Parked]: ...

    async def acknowledge(self, parked: Parked) -> None: ...

    async def close(self) -> None: ...
