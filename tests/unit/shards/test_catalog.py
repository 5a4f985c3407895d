"""StreamCatalog: a shard's children (discovery, lease rows, DescribeStream), every table's
problem reported at once, and a re-enabled stream followed to its new ARN."""

from __future__ import annotations

from typing import Any

import pytest

from worker.config import Config, parse_config
from worker.errors import SetupError
from worker.leases.model import Lease
from worker.shards.catalog import StreamCatalog
from worker.shards.discovery import StreamInfo
from tests.unit.fakes import FakeLeaseTable, FakeStreamsClient, client_error

ARN = "arn:aws:dynamodb:us-east-1:1:table/orders-table/stream/2024"
NEW_ARN = "arn:aws:dynamodb:us-east-1:1:table/orders-table/stream/2025"


class FakeDynamoDb:
    """DescribeTable for the tables in ``streams`` (table name -> latest stream ARN)."""

    def __init__(self, **streams: str) -> None:
        self.streams = streams

    async def describe_table(self, **kwargs: Any) -> dict[str, Any]:
        name = kwargs["TableName"]
        if name not in self.streams:
            raise client_error("ResourceNotFoundException", "DescribeTable")
        return {"Table": {
            "TableName": name, "LatestStreamArn": self.streams[name],
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            "KeySchema": [{"AttributeName": "orderId", "KeyType": "HASH"}],
        }}


def make_config() -> Config:
    return parse_config(
        {
            "tables": {"orders": {"name": "orders-table"}, "events": {"name": "events-table"}},
            "routes": [
                {"name": "o", "table": "orders", "handler": "worker.handlers.orders:process_order"},
                {"name": "e", "table": "events", "handler": "worker.handlers.shipments:dispatch_shipment"},
            ],
        },
        env={},
    )


def catalog_of(streams: FakeStreamsClient, table: FakeLeaseTable, dynamodb: Any = None) -> StreamCatalog:
    info = StreamInfo(table="orders", table_name="orders-table", stream_arn=ARN, view_type="NEW_AND_OLD_IMAGES",
                      hash_key="orderId")
    return StreamCatalog(make_config(), dynamodb=dynamodb, streams_client=streams, lease_table=table,  # type: ignore[arg-type]
                         needs={}, streams={ARN: info})


def split_stream() -> FakeStreamsClient:
    streams = FakeStreamsClient(ARN)
    streams.add_shard("parent", closed=True)
    streams.add_shard("left", parent="parent")
    streams.add_shard("right", parent="parent")
    return streams


async def test_children_come_from_describe_stream_when_nothing_else_knows_them() -> None:
    streams = split_stream()
    catalog = catalog_of(streams, FakeLeaseTable())

    assert await catalog.children_of(ARN, "parent") == ["left", "right"]
    assert len(streams.calls_of("DescribeStream")) == 1


async def test_children_of_a_shard_gone_from_the_stream_come_from_the_lease_rows() -> None:
    streams = split_stream()
    table = FakeLeaseTable()
    table.put(Lease(stream_arn=ARN, shard_id="left", table="orders", parent_shard_ids=("aged-out",)))
    catalog = catalog_of(streams, table)

    assert await catalog.children_of(ARN, "aged-out") == ["left"]  # as discovery recorded them


async def test_discovery_follows_a_re_enabled_stream_and_answers_its_children() -> None:
    streams = split_stream()
    streams.stream_arn = NEW_ARN  # the table's stream was disabled and enabled again
    table = FakeLeaseTable()
    catalog = catalog_of(streams, table, FakeDynamoDb(**{"orders-table": NEW_ARN}))

    created = await catalog.discover()

    assert created == 3
    assert catalog.tables_by_arn() == {NEW_ARN: "orders"}
    assert catalog.hash_key_of(NEW_ARN) == "orderId" and catalog.hash_key_of(ARN) is None
    describes = len(streams.calls_of("DescribeStream"))
    assert await catalog.children_of(NEW_ARN, "parent") == ["left", "right"]
    assert len(streams.calls_of("DescribeStream")) == describes  # known from the discovery pass


async def test_open_reports_every_table_that_does_not_fit_at_once() -> None:
    with pytest.raises(SetupError) as caught:
        await StreamCatalog.open(make_config(), dynamodb=FakeDynamoDb(), streams_client=FakeStreamsClient(ARN),
                                 lease_table=FakeLeaseTable(), needs={})  # type: ignore[arg-type]
    assert "tables.orders: table 'orders-table' does not exist" in str(caught.value)
    assert "tables.events: table 'events-table' does not exist" in str(caught.value)


def wide_split_stream(describe_page_size: int) -> FakeStreamsClient:
    """A parent and its two children among many other shards (several DescribeStream pages)."""
    streams = FakeStreamsClient(ARN, describe_page_size=describe_page_size)
    for n in range(5):
        streams.add_shard(f"other-{n}")
    streams.add_shard("parent", closed=True)
    for n in range(5, 10):
        streams.add_shard(f"other-{n}")
    streams.add_shard("left", parent="parent")
    streams.add_shard("right", parent="parent")
    return streams


async def test_children_by_shard_filter_take_one_filtered_call_where_the_endpoint_honors_it() -> None:
    streams = wide_split_stream(describe_page_size=3)
    streams.shard_filter = "honor"

    assert await catalog_of(streams, FakeLeaseTable()).children_of(ARN, "parent") == ["left", "right"]
    calls = streams.calls_of("DescribeStream")
    assert len(calls) == 1
    assert calls[0]["ShardFilter"] == {"Type": "CHILD_SHARDS", "ShardId": "parent"}


async def test_children_where_the_endpoint_ignores_the_filter_follow_every_page() -> None:
    streams = wide_split_stream(describe_page_size=3)  # 13 shards: 5 pages

    assert await catalog_of(streams, FakeLeaseTable()).children_of(ARN, "parent") == ["left", "right"]
    assert len(streams.calls_of("DescribeStream")) == 5


async def test_children_where_the_endpoint_refuses_the_filter_come_from_a_plain_paged_read() -> None:
    streams = wide_split_stream(describe_page_size=3)
    streams.shard_filter = "refuse"

    assert await catalog_of(streams, FakeLeaseTable()).children_of(ARN, "parent") == ["left", "right"]
    calls = streams.calls_of("DescribeStream")
    assert len(calls) == 1 + 5 and all("ShardFilter" not in call for call in calls[1:])


async def test_lease_children_creates_their_rows_with_the_parent_and_deletes_nothing() -> None:
    streams = wide_split_stream(describe_page_size=100)
    table = FakeLeaseTable()
    parent = Lease(stream_arn=ARN, shard_id="parent", table="orders", checkpoint="SHARD_END")
    table.put(parent)
    # A finished lease of a shard that is not in the partial graph: discovery's full pass
    # would judge it; the shard-end path must not take it for aged out.
    table.put(Lease(stream_arn=ARN, shard_id="other-0", table="orders", checkpoint="SHARD_END"))
    table.put(Lease(stream_arn=ARN, shard_id="right", table="orders", parent_shard_ids=("parent",)))  # by discovery
    catalog = catalog_of(streams, table)

    created = await catalog.lease_children(parent, ["left", "right"])

    assert [(lease.shard_id, lease.parent_shard_ids, lease.owner, lease.counter) for lease in created] == [
        ("left", ("parent",), None, 0)]
    assert await catalog.lease_children(parent, ["left", "right"]) == []  # conditional: once
    assert table.created == ["left"] and table.deleted == []
    assert table.leases[(ARN, "left")].parent_shard_ids == ("parent",)
    assert streams.calls_of("DescribeStream") == []


async def test_lease_children_of_a_stream_no_longer_followed_creates_nothing() -> None:
    table = FakeLeaseTable()
    parent = Lease(stream_arn=NEW_ARN, shard_id="parent", table="orders", checkpoint="SHARD_END")
    assert await catalog_of(split_stream(), table).lease_children(parent, ["left"]) == []
    assert table.created == []
