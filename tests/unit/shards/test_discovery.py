"""sync_leases: which shards get a lease row, with which parents, and in which order."""

from __future__ import annotations

from worker.leases.model import Lease
from worker.shards.discovery import StreamInfo, sync_leases
from worker.shards.lineage import Shard, ShardGraph
from tests.unit.fakes import FakeLeaseTable

ARN = "arn:aws:dynamodb:us-east-1:1:table/orders/stream/2024"
STREAM = StreamInfo(table="orders", table_name="orders-table", stream_arn=ARN, view_type="NEW_AND_OLD_IMAGES")


def graph_of(*shards: Shard) -> ShardGraph:
    graph = ShardGraph(ARN)
    for s in shards:
        graph.add(s)
    return graph


def closed(shard_id: str, parent: str | None = None) -> Shard:
    return Shard(shard_id, parent, "1", "99")


def opened(shard_id: str, parent: str | None = None) -> Shard:
    return Shard(shard_id, parent, "100", None)


def parents(table: FakeLeaseTable) -> dict[str, tuple[str, ...]]:
    return {shard_id: lease.parent_shard_ids for (_, shard_id), lease in table.leases.items()}


# s1 (closed, parent aged out) -> s2 (closed) -> split into s3 and s4 (open).
ROTATED = (closed("s1", "aged-out"), closed("s2", "s1"), opened("s4", "s2"), opened("s3", "s2"))


async def test_trim_horizon_creates_every_shard_parents_first() -> None:
    table = FakeLeaseTable()

    created = await sync_leases(table, STREAM, graph_of(*ROTATED), "TRIM_HORIZON")

    assert created == 4
    assert table.created == ["s1", "s2", "s3", "s4"]
    # The aged-out parent is not waited on: nothing is left to read in it.
    assert parents(table) == {"s1": (), "s2": ("s1",), "s3": ("s2",), "s4": ("s2",)}
    assert all(lease.table == "orders" and lease.owner is None for lease in table.leases.values())


async def test_second_pass_creates_nothing_new() -> None:
    table = FakeLeaseTable()
    graph = graph_of(*ROTATED)
    await sync_leases(table, STREAM, graph, "TRIM_HORIZON")

    assert await sync_leases(table, STREAM, graph, "TRIM_HORIZON") == 0
    assert table.created == ["s1", "s2", "s3", "s4"]


async def test_latest_first_pass_creates_open_shards_only_without_parents() -> None:
    table = FakeLeaseTable()

    created = await sync_leases(table, STREAM, graph_of(*ROTATED), "LATEST")

    assert created == 2
    assert sorted(table.created) == ["s3", "s4"]
    assert parents(table) == {"s3": (), "s4": ()}


async def test_latest_later_passes_never_go_back_to_closed_ancestors() -> None:
    """Regression: the second pass used to create leases for s1 and s2, so hours-old
    records were read (from TRIM_HORIZON) after the worker had started at LATEST."""
    table = FakeLeaseTable()
    graph = graph_of(*ROTATED)
    await sync_leases(table, STREAM, graph, "LATEST")

    assert await sync_leases(table, STREAM, graph, "LATEST") == 0
    assert sorted(table.created) == ["s3", "s4"]


async def test_latest_later_pass_leases_new_children_with_their_parent() -> None:
    table = FakeLeaseTable()
    await sync_leases(table, STREAM, graph_of(*ROTATED), "LATEST")
    # s3 rotates: it closes and gets a child s5.
    later = graph_of(closed("s1", "aged-out"), closed("s2", "s1"), closed("s3", "s2"), opened("s4", "s2"),
                     opened("s5", "s3"))

    assert await sync_leases(table, STREAM, later, "LATEST") == 1
    assert table.created[-1] == "s5"
    assert parents(table)["s5"] == ("s3",)


async def test_existing_leases_of_other_streams_do_not_count() -> None:
    table = FakeLeaseTable()
    table.put(Lease(stream_arn="arn:other", shard_id="s3", table="orders"))

    created = await sync_leases(table, STREAM, graph_of(*ROTATED), "LATEST")

    assert created == 2
    assert sorted(table.created) == ["s3", "s4"]
