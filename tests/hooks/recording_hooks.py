"""Hooks and a handler that record what they were called with, in one process-wide journal.

Named by import string in the configs of tests/hooks/ (the worker runs in the test's
process). ``JOURNAL`` is cleared by the tests' fixture; ``BEHAVIOUR`` makes a hook fail or
hang for the test that asks for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from worker import HandlerContext, ShardInfo, StreamRecord, WorkerInfo

JOURNAL: list[tuple[Any, ...]] = []
# hook name -> "raise" | "hang"
BEHAVIOUR: dict[str, str] = {}


@dataclass
class SharedClient:
    """Stands for a client built once (an HTTP session, a connection pool)."""

    calls: list[str] = field(default_factory=list)
    closed: bool = False


async def _act(name: str) -> None:
    behaviour = BEHAVIOUR.get(name)
    if behaviour == "raise":
        raise RuntimeError(f"{name} broke on purpose")
    if behaviour == "hang":
        await asyncio.sleep(3600)


async def on_start(info: WorkerInfo) -> dict[str, Any]:
    JOURNAL.append(("on_start", info.worker_id))
    await _act("on_start")
    return {"client": SharedClient()}


async def on_stop(info: WorkerInfo) -> None:
    JOURNAL.append(("on_stop", info.worker_id, info.resources.client))
    await _act("on_stop")
    info.resources.client.closed = True


def _shard(name: str, info: ShardInfo) -> tuple[Any, ...]:
    return (name, info.shard_id, info.reason, info.checkpoint, info.child_shard_ids, info.table, info.worker_id)


async def on_shard_start(info: ShardInfo) -> None:
    JOURNAL.append(_shard("on_shard_start", info))
    await _act("on_shard_start")


async def on_shard_end(info: ShardInfo) -> None:
    JOURNAL.append(_shard("on_shard_end", info))
    await _act("on_shard_end")


async def on_lease_lost(info: ShardInfo) -> None:
    JOURNAL.append(_shard("on_lease_lost", info))
    await _act("on_lease_lost")


async def handle(record: StreamRecord, ctx: HandlerContext) -> None:
    client: SharedClient = ctx.resources.client
    if client.closed:
        raise RuntimeError("handler called after on_stop closed the client")
    client.calls.append(record.sequence_number)
    JOURNAL.append(("handle", record.shard_id, record.sequence_number))


def names(*wanted: str) -> list[tuple[Any, ...]]:
    """The journal's entries of the given hooks (all but handler calls when none given)."""
    return [entry for entry in JOURNAL if (entry[0] in wanted if wanted else entry[0] != "handle")]
