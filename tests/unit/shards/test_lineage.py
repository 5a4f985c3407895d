"""Shard lineage: graph order, DescribeStream pagination, and the consumer's parent wait."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from worker.config import StreamSettings, Config, parse_config
from worker.leases.model import SHARD_END, Lease
from worker.lifecycle.consumer import ShardConsumer
from worker.retrieval.reader import TRIM_HORIZON, StartPosition
from worker.shards.discovery import describe_shards
from worker.shards.lineage import Shard, ShardGraph
from tests.unit.fakes import FakeLeaseTable, FakeStreamsClient

ARN = "arn:aws:dynamodb:us-east-1:1:table/orders/stream/2024"


def shard(shard_id: str, parent: str | None = None, closed: bool = False) -> Shard:
    return Shard(shard_id, parent, "1", "99" if closed else None)


def graph_of(*shards: Shard) -> ShardGraph:
    graph = ShardGraph(ARN)
    for s in shards:
        graph.add(s)
    return graph


def ids(shards: list[Shard]) -> list[str]:
    return [s.shard_id for s in shards]


# ---- ShardGraph -----------------------------------------------------------------------------


def test_split_orders_parent_before_both_children() -> None:
    # Children's ids sort before the parent's: id order alone would be wrong.
    graph = graph_of(shard("c-right", "p-parent"), shard("p-parent", closed=True), shard("a-left", "p-parent"))

    assert ids(graph.in_lineage_order()) == ["p-parent", "a-left", "c-right"]
    assert graph.children_of("p-parent") == ["a-left", "c-right"]
    assert graph.children_of("a-left") == []
    assert graph.parents_of("a-left") == ["p-parent"]
    assert graph.parents_of("p-parent") == []
    assert sorted(ids(graph.open_shards())) == ["a-left", "c-right"]


def test_chain_of_rotations_is_ordered_oldest_first() -> None:
    # s4 <- s3 <- s2 <- s1 (s1 newest), inserted in a scrambled order with ids sorting backwards.
    graph = graph_of(
        shard("s2", "s3", closed=True),
        shard("s1", "s2"),
        shard("s4", closed=True),
        shard("s3", "s4", closed=True),
    )

    assert ids(graph.in_lineage_order()) == ["s4", "s3", "s2", "s1"]
    assert graph.children_of("s4") == ["s3"]
    assert graph.children_of("s1") == []
    assert ids(graph.open_shards()) == ["s1"]


def test_lineage_order_with_aged_out_parent_and_independent_shards() -> None:
    graph = graph_of(
        shard("b", "gone"),  # parent aged out of the stream
        shard("a"),
        shard("d", "b"),
        shard("c", "a"),
    )

    order = ids(graph.in_lineage_order())

    assert sorted(order) == ["a", "b", "c", "d"]  # each shard exactly once
    assert order.index("a") < order.index("c")
    assert order.index("b") < order.index("d")
    assert "gone" not in graph
    assert "b" in graph


def test_lineage_order_terminates_on_a_cycle() -> None:
    graph = graph_of(shard("x", "y"), shard("y", "x"))

    assert sorted(ids(graph.in_lineage_order())) == ["x", "y"]


# ---- describe_shards ------------------------------------------------------------------------


async def test_describe_shards_follows_pagination_across_three_pages() -> None:
    client = FakeStreamsClient(ARN, describe_page_size=2)
    client.add_shard("shard-1", closed=True)
    client.add_shard("shard-2", parent="shard-1", closed=True)
    client.add_shard("shard-3", parent="shard-1")
    client.add_shard("shard-4", parent="shard-2")
    client.add_shard("shard-5")

    graph = await describe_shards(client, ARN)

    calls = client.calls_of("DescribeStream")
    assert [c.get("ExclusiveStartShardId") for c in calls] == [None, "shard-2", "shard-4"]
    assert all(c["StreamArn"] == ARN for c in calls)
    assert sorted(graph.shards) == ["shard-1", "shard-2", "shard-3", "shard-4", "shard-5"]
    assert graph.shards["shard-4"].parent_shard_id == "shard-2"
    assert graph.shards["shard-1"].closed and not graph.shards["shard-5"].closed
    assert graph.children_of("shard-1") == ["shard-2", "shard-3"]
    assert ids(graph.in_lineage_order()) == ["shard-1", "shard-2", "shard-3", "shard-4", "shard-5"]


async def test_describe_shards_retries_throttling() -> None:
    client = FakeStreamsClient(ARN, describe_page_size=1)
    client.add_shard("shard-1")
    client.add_shard("shard-2")
    client.fail_next("DescribeStream", "LimitExceededException", times=2)

    graph = await describe_shards(client, ARN)

    assert sorted(graph.shards) == ["shard-1", "shard-2"]
    assert [c.get("ExclusiveStartShardId") for c in client.calls_of("DescribeStream")] == [
        None,
        None,
        None,
        "shard-1",
    ]


# ---- ShardConsumer: waiting on parents ------------------------------------------------------


def make_config(parent_poll_seconds: float = 0.005) -> Config:
    return parse_config(
        {
            "tables": {"orders": {"name": "orders"}, "events": {"name": "events"}},
            "reader": {"parent_poll_seconds": parent_poll_seconds},
            "routes": [{"name": "r", "table": "orders", "handler": "worker.handlers.orders:process_order"}],
        },
        env={},
    )


class Topology:
    """The consumer's view of the shard graph; ``children`` is what ``children_of`` answers."""

    def __init__(self, **children: list[str]) -> None:
        self.children = children

    async def children_of(self, stream_arn: str, shard_id: str) -> list[str]:
        assert stream_arn == ARN
        return self.children.get(shard_id, [])


def child_lease(*parents: str, checkpoint: str | None = None) -> Lease:
    return Lease(stream_arn=ARN, shard_id="child", table="orders", owner="w1", counter=1,
                 checkpoint=checkpoint, parent_shard_ids=tuple(parents))


def make_consumer(lease: Lease, table: FakeLeaseTable, topology: Topology,
                  starting_position: str = "TRIM_HORIZON", parent_poll_seconds: float = 0.005) -> ShardConsumer:
    return ShardConsumer(
        lease,
        streams_client=object(),
        lease_table=table,  # type: ignore[arg-type]
        pipelines=None,  # type: ignore[arg-type]  # never reached: these tests end before processing
        lineage=topology,
        config=make_config(parent_poll_seconds),
        stream=StreamSettings(starting_position=starting_position),  # type: ignore[arg-type]
    )


async def wait_polls(table: FakeLeaseTable, count: int) -> None:
    table.polled.clear()
    table.notify_after = len(table.get_calls) + count
    await asyncio.wait_for(table.polled.wait(), timeout=2)


async def test_child_waits_until_parent_lease_is_finished() -> None:
    table = FakeLeaseTable()
    parent = Lease(stream_arn=ARN, shard_id="parent", table="orders", owner="w2", counter=3, checkpoint="500")
    table.put(parent)
    consumer = make_consumer(child_lease("parent"), table, Topology())
    stop = asyncio.Event()

    task = asyncio.create_task(consumer._wait_for_parents(stop))
    await wait_polls(table, 3)
    assert not task.done()  # parent still has records to hand out

    table.put(replace(parent, checkpoint="900"))  # progress, but not finished
    await wait_polls(table, 2)
    assert not task.done()

    table.put(replace(parent, checkpoint=SHARD_END))
    assert await asyncio.wait_for(task, timeout=2) is True
    assert set(table.get_calls) == {(ARN, "parent")}


async def test_parent_lease_without_any_checkpoint_is_waited_on() -> None:
    table = FakeLeaseTable()
    table.put(Lease(stream_arn=ARN, shard_id="parent", table="orders"))  # created, never read
    consumer = make_consumer(child_lease("parent"), table, Topology())
    stop = asyncio.Event()

    task = asyncio.create_task(consumer._wait_for_parents(stop))
    await wait_polls(table, 3)
    assert not task.done()

    stop.set()
    assert await asyncio.wait_for(task, timeout=2) is False


async def test_child_with_two_parents_waits_for_both() -> None:
    table = FakeLeaseTable()
    table.put(Lease(stream_arn=ARN, shard_id="p1", table="orders", checkpoint=SHARD_END))
    table.put(Lease(stream_arn=ARN, shard_id="p2", table="orders", checkpoint="7"))
    consumer = make_consumer(child_lease("p1", "p2"), table, Topology())

    task = asyncio.create_task(consumer._wait_for_parents(asyncio.Event()))
    await wait_polls(table, 4)
    assert not task.done()

    table.put(Lease(stream_arn=ARN, shard_id="p2", table="orders", checkpoint=SHARD_END))
    assert await asyncio.wait_for(task, timeout=2) is True
    # A finished parent is not asked about again.
    assert table.get_calls.count((ARN, "p1")) == 1


async def test_absent_parent_lease_counts_as_done() -> None:
    # Discovery creates a parent's lease before its children's and deletes it only once
    # it finished and its children progressed, or once it aged out of the stream.
    table = FakeLeaseTable()
    consumer = make_consumer(child_lease("aged-out"), table, Topology())

    assert await asyncio.wait_for(consumer._wait_for_parents(asyncio.Event()), timeout=2) is True
    assert table.get_calls == [(ARN, "aged-out")]


async def test_waiting_child_starts_once_parent_lease_is_finished_after_several_polls() -> None:
    table = FakeLeaseTable()
    table.put(Lease(stream_arn=ARN, shard_id="parent", table="orders", checkpoint="1"))
    consumer = make_consumer(child_lease("parent"), table, Topology())

    task = asyncio.create_task(consumer._wait_for_parents(asyncio.Event()))
    await wait_polls(table, 2)
    assert not task.done()
    table.put(Lease(stream_arn=ARN, shard_id="parent", table="orders", checkpoint=SHARD_END))

    assert await asyncio.wait_for(task, timeout=2) is True


async def test_stop_while_waiting_on_parents_returns_false() -> None:
    table = FakeLeaseTable()
    table.put(Lease(stream_arn=ARN, shard_id="parent", table="orders", checkpoint="1"))
    # A long poll: only the stop event can end the wait inside the guard below.
    consumer = make_consumer(child_lease("parent"), table, Topology(), parent_poll_seconds=30)
    stop = asyncio.Event()

    task = asyncio.create_task(consumer._wait_for_parents(stop))
    await wait_polls(table, 1)
    stop.set()

    assert await asyncio.wait_for(task, timeout=2) is False
    assert table.get_calls == [(ARN, "parent")]


async def test_child_that_made_progress_does_not_wait_again() -> None:
    table = FakeLeaseTable()
    table.put(Lease(stream_arn=ARN, shard_id="parent", table="orders", checkpoint="1"))
    consumer = make_consumer(child_lease("parent", checkpoint="42"), table, Topology())

    assert await asyncio.wait_for(consumer._wait_for_parents(asyncio.Event()), timeout=2) is True
    assert table.get_calls == []


async def test_no_parents_returns_at_once_without_lookups() -> None:
    table = FakeLeaseTable()
    consumer = make_consumer(child_lease(), table, Topology())

    assert await consumer._wait_for_parents(asyncio.Event()) is True
    stopped = asyncio.Event()
    stopped.set()
    assert await consumer._wait_for_parents(stopped) is False
    assert table.get_calls == []


@pytest.mark.parametrize(
    ("lease", "starting_position", "expected"),
    [
        (child_lease("parent", checkpoint="123"), "LATEST", StartPosition.after("123")),
        (child_lease(checkpoint="123"), "TRIM_HORIZON", StartPosition.after("123")),
        (child_lease("parent"), "LATEST", TRIM_HORIZON),
        (child_lease(), "LATEST", StartPosition("LATEST")),
        (child_lease(), "TRIM_HORIZON", TRIM_HORIZON),
    ],
)
def test_start_position(lease: Lease, starting_position: str, expected: StartPosition) -> None:
    consumer = make_consumer(lease, FakeLeaseTable(), Topology(), starting_position)

    assert consumer._start_position() == expected
