"""Found by the chaos run: a lease taken from a stale read must not move the checkpoint back.

A thief reads the lease rows, the owner checkpoints (the counter does not change on a
checkpoint), then the thief's conditional take succeeds. The thief must continue from the
checkpoint as of the take, not from the one it read: otherwise it restarts behind it and
its first checkpoint writes the row backwards (docs/leases.md, invariant 3).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from worker.aws import AwsClients
from worker.checkpoint.checkpointer import Checkpointer
from worker.config import AwsConfig
from worker.errors import LeaseLostError
from worker.leases.model import Lease
from worker.leases.table import LeaseTable

pytestmark = pytest.mark.integration

STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
SHARD = "shardId-00001"
SEQ = 10**20  # 21 digits, like stream sequence numbers


@pytest.fixture
async def tables(endpoint_url: str, prefix: str) -> AsyncIterator[tuple[LeaseTable, LeaseTable]]:
    clients = [AwsClients(AwsConfig(region="us-east-1", endpoint_url=endpoint_url)) for _ in range(2)]
    try:
        made = []
        for aws in clients:
            table = LeaseTable(await aws.client("dynamodb"), await aws.dynamodb_resource(), f"{prefix}leases")
            await table.create_if_missing()
            made.append(table)
        yield made[0], made[1]
    finally:
        for aws in clients:
            await aws.close()


async def test_take_continues_from_the_checkpoint_written_after_the_read(
    tables: tuple[LeaseTable, LeaseTable],
) -> None:
    owner_table, thief_table = tables
    assert await owner_table.create_lease(Lease(stream_arn=STREAM, shard_id=SHARD, table="orders"))
    fresh = await owner_table.get_lease(STREAM, SHARD)
    assert fresh is not None
    held = await owner_table.take(fresh, "owner")
    assert held is not None
    owner = Checkpointer(owner_table, held, "orders")
    assert await owner.checkpoint(str(SEQ + 50))

    stale = await thief_table.get_lease(STREAM, SHARD)  # the thief's lease pass reads the row ...
    assert stale is not None and stale.checkpoint == str(SEQ + 50)
    assert await owner.checkpoint(str(SEQ + 100))  # ... the owner checkpoints meanwhile ...
    taken = await thief_table.take(stale, "thief")  # ... and the take still succeeds (same counter)
    assert taken is not None and taken.owner == "thief"

    # The thief starts after the checkpoint as of the take, and never writes below it.
    assert taken.checkpoint == str(SEQ + 100)
    thief = Checkpointer(thief_table, taken, "orders")
    assert not await thief.checkpoint(str(SEQ + 60))
    row = await thief_table.get_lease(STREAM, SHARD)
    assert row is not None and row.checkpoint == str(SEQ + 100) and row.counter == taken.counter

    # The previous owner is fenced.
    with pytest.raises(LeaseLostError):
        await owner.checkpoint(str(SEQ + 120))
