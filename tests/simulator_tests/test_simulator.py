"""The stream simulator against the real aioboto3/aiobotocore clients (no mocks on the client side)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import aioboto3
import pytest
from botocore.exceptions import ClientError

from worker.local.simulator import RemoteSimulator, Simulator
from tests.simulator_tests.conftest import NO_RETRIES

REPO_ROOT = Path(__file__).resolve().parents[2]


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


async def iterator(streams: Any, arn: str, shard_id: str, kind: str = "TRIM_HORIZON", seq: str | None = None) -> str:
    kwargs: dict[str, Any] = {"StreamArn": arn, "ShardId": shard_id, "ShardIteratorType": kind}
    if seq is not None:
        kwargs["SequenceNumber"] = seq
    return str((await streams.get_shard_iterator(**kwargs))["ShardIterator"])


async def drain(streams: Any, it: str | None, limit: int = 1000, max_calls: int = 50) -> tuple[list[dict[str, Any]], Any]:
    """Read until an empty page or shard end; returns (records, last response)."""
    records: list[dict[str, Any]] = []
    response: Any = None
    for _ in range(max_calls):
        if it is None:
            break
        response = await streams.get_records(ShardIterator=it, Limit=limit)
        records.extend(response["Records"])
        it = response.get("NextShardIterator")
        if not response["Records"]:
            break
    return records, response


def seqs(records: list[dict[str, Any]]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in records]


# --------------------------------------------------------------------------- discovery


async def test_describe_stream_paginates_250_shards_in_3_pages(sim: Simulator, streams: Any) -> None:
    arn = sim.create_stream("orders", shards=250)
    expected = [s["ShardId"] for s in sim.shards(arn)]
    assert len(expected) == len(set(expected)) == 250

    pages: list[list[str]] = []
    kwargs: dict[str, Any] = {"StreamArn": arn, "Limit": 100}
    while True:
        desc = (await streams.describe_stream(**kwargs))["StreamDescription"]
        pages.append([s["ShardId"] for s in desc["Shards"]])
        if "LastEvaluatedShardId" not in desc:
            break
        assert desc["LastEvaluatedShardId"] == pages[-1][-1]
        kwargs["ExclusiveStartShardId"] = desc["LastEvaluatedShardId"]

    assert [len(p) for p in pages] == [100, 100, 50]
    assert [s for p in pages for s in p] == expected
    assert desc["StreamStatus"] == "ENABLED"
    assert desc["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert desc["TableName"] == "orders"
    assert desc["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    first = (await streams.describe_stream(StreamArn=arn, Limit=1))["StreamDescription"]["Shards"][0]
    assert set(first) == {"ShardId", "SequenceNumberRange"}  # open root shard: no parent, no end
    assert set(first["SequenceNumberRange"]) == {"StartingSequenceNumber"}
    # Default Limit is 100.
    assert len((await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]) == 100


async def test_list_streams_filter_and_pagination(sim: Simulator, streams: Any) -> None:
    a = sim.create_stream("alpha")
    b = sim.create_stream("beta", shards=2)
    c = sim.create_stream("gamma")

    listed = (await streams.list_streams())["Streams"]
    assert [(s["StreamArn"], s["TableName"]) for s in listed] == [(a, "alpha"), (b, "beta"), (c, "gamma")]
    assert all(s["StreamLabel"] == s["StreamArn"].rsplit("/", 1)[1] for s in listed)
    assert a.startswith("arn:aws:dynamodb:us-east-1:123456789012:table/alpha/stream/")

    page1 = await streams.list_streams(Limit=2)
    assert [s["StreamArn"] for s in page1["Streams"]] == [a, b]
    assert page1["LastEvaluatedStreamArn"] == b
    page2 = await streams.list_streams(Limit=2, ExclusiveStartStreamArn=b)
    assert [s["StreamArn"] for s in page2["Streams"]] == [c]
    assert "LastEvaluatedStreamArn" not in page2

    only_beta = await streams.list_streams(TableName="beta")
    assert [s["StreamArn"] for s in only_beta["Streams"]] == [b]
    with pytest.raises(ClientError) as err:
        await streams.list_streams(TableName="nope")
    assert code_of(err) == "ResourceNotFoundException"


async def test_describe_table_of_simulated_tables_only(sim: Simulator, ddb: Any) -> None:
    arn = sim.create_stream("orders", shards=2, key_schema=("pk", "sk"), attribute_types={"sk": "N"})
    table = (await ddb.describe_table(TableName="orders"))["Table"]
    assert table["TableName"] == "orders"
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "N"},
    ]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["LatestStreamArn"] == arn

    with pytest.raises(ClientError) as err:
        await ddb.describe_table(TableName="not-simulated")
    assert code_of(err) == "ResourceNotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as err:
        await ddb.get_item(TableName="orders", Key={"pk": {"S": "a"}})
    assert code_of(err) == "UnknownOperationException"


async def test_reenabled_stream_gets_new_arn_and_old_one_is_disabled(sim: Simulator, streams: Any, ddb: Any) -> None:
    old = sim.create_stream("orders", shards=2)
    sim.put_record("orders", {"pk": "a"}, {"v": 1})
    sim.disable_stream("orders")
    table = (await ddb.describe_table(TableName="orders"))["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": False}
    assert table["LatestStreamArn"] == old
    desc = (await streams.describe_stream(StreamArn=old))["StreamDescription"]
    assert desc["StreamStatus"] == "DISABLED"
    assert all("EndingSequenceNumber" in s["SequenceNumberRange"] for s in desc["Shards"])
    with pytest.raises(ValueError):
        sim.put_record("orders", {"pk": "a"}, {"v": 2})

    new = sim.create_stream("orders", shards=1)
    assert new != old
    assert (await ddb.describe_table(TableName="orders"))["Table"]["LatestStreamArn"] == new
    assert [s["StreamArn"] for s in (await streams.list_streams(TableName="orders"))["Streams"]] == [old, new]


# --------------------------------------------------------------------------- reading


async def test_get_records_order_limit_and_record_shape(sim: Simulator, streams: Any) -> None:
    arn = sim.create_stream("orders", shards=4)
    shard = sim.shards(arn)[2]["ShardId"]
    written = [sim.put_record("orders", {"pk": f"k{i}"}, {"n": i}, shard_id=shard) for i in range(10)]
    assert all(s == shard for s, _ in written)

    it = await iterator(streams, arn, shard)
    sizes = []
    got: list[dict[str, Any]] = []
    for _ in range(3):
        page = await streams.get_records(ShardIterator=it, Limit=4)
        sizes.append(len(page["Records"]))
        got.extend(page["Records"])
        it = page["NextShardIterator"]
    assert sizes == [4, 4, 2]
    assert seqs(got) == [seq for _, seq in written]
    as_ints = [int(s) for s in seqs(got)]
    assert as_ints == sorted(as_ints) and len(set(as_ints)) == 10
    assert all(len(s) == 21 for s in seqs(got))

    # Open shard at its tip: no records, but an iterator to keep polling.
    tip = await streams.get_records(ShardIterator=it)
    assert tip["Records"] == []
    assert "NextShardIterator" in tip
    sim.put_record("orders", {"pk": "late"}, {"n": 99}, shard_id=shard)
    after = await streams.get_records(ShardIterator=tip["NextShardIterator"])
    assert [r["dynamodb"]["Keys"] for r in after["Records"]] == [{"pk": {"S": "late"}}]

    record = got[3]
    assert record["eventName"] == "INSERT"
    assert record["eventVersion"] == "1.1"
    assert record["eventSource"] == "aws:dynamodb"
    assert record["awsRegion"] == "us-east-1"
    assert len(record["eventID"]) == 32
    body = record["dynamodb"]
    assert body["Keys"] == {"pk": {"S": "k3"}}
    assert body["NewImage"] == {"pk": {"S": "k3"}, "n": {"N": "3"}}
    assert "OldImage" not in body
    assert body["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert body["SizeBytes"] > 0
    # botocore parses the epoch-seconds number into an aware datetime (local tz).
    created = body["ApproximateCreationDateTime"]
    assert isinstance(created, datetime) and created.tzinfo is not None
    assert abs(created.timestamp() - sim.now()) < 5


async def test_modify_remove_typed_values_and_view_types(sim: Simulator, streams: Any) -> None:
    arn = sim.create_stream("orders", shards=1)
    keys_only = sim.create_stream("thin", shards=1, view_type="KEYS_ONLY")
    sim.put_record("orders", {"pk": "a"}, {"f": 1.25, "b": b"\x00\x01", "s": {"x", "y"}, "m": {"n": None, "t": True}},
                   {"f": 1})
    sim.put_record("orders", {"pk": {"S": "a"}}, None, {"f": {"N": "1.25"}})
    sim.put_record("thin", {"pk": "z"}, {"big": "x" * 100})

    records, _ = await drain(streams, await iterator(streams, arn, sim.shards(arn)[0]["ShardId"]))
    assert [r["eventName"] for r in records] == ["MODIFY", "REMOVE"]
    modify, remove = (r["dynamodb"] for r in records)
    modify["NewImage"]["s"]["SS"].sort()  # set order is not defined (as in DynamoDB)
    assert modify["NewImage"] == {
        "pk": {"S": "a"},
        "f": {"N": "1.25"},
        "b": {"B": b"\x00\x01"},
        "s": {"SS": ["x", "y"]},
        "m": {"M": {"n": {"NULL": True}, "t": {"BOOL": True}}},
    }
    assert modify["OldImage"] == {"pk": {"S": "a"}, "f": {"N": "1"}}
    assert "NewImage" not in remove and remove["OldImage"] == {"pk": {"S": "a"}, "f": {"N": "1.25"}}

    thin, _ = await drain(streams, await iterator(streams, keys_only, sim.shards(keys_only)[0]["ShardId"]))
    assert thin[0]["dynamodb"]["Keys"] == {"pk": {"S": "z"}}
    assert "NewImage" not in thin[0]["dynamodb"] and thin[0]["dynamodb"]["StreamViewType"] == "KEYS_ONLY"


async def test_closed_shard_read_to_end_has_no_next_iterator(sim: Simulator, streams: Any) -> None:
    arn = sim.create_stream("orders", shards=1)
    shard = sim.shards(arn)[0]["ShardId"]
    written = [sim.put_record("orders", {"pk": f"k{i}"}, {"n": i})[1] for i in range(5)]
    child = sim.rotate_shard(arn, shard)

    it = await iterator(streams, arn, shard)
    first = await streams.get_records(ShardIterator=it, Limit=3)
    assert seqs(first["Records"]) == written[:3]
    last = await streams.get_records(ShardIterator=first["NextShardIterator"], Limit=3)
    assert seqs(last["Records"]) == written[3:]
    assert "NextShardIterator" not in last  # eager: the page holding the last records ends the shard

    desc = {s["ShardId"]: s for s in (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]}
    assert desc[shard]["SequenceNumberRange"]["EndingSequenceNumber"] == written[-1]
    assert desc[child]["ParentShardId"] == shard
    assert int(desc[child]["SequenceNumberRange"]["StartingSequenceNumber"]) > int(written[-1])

    # LATEST on a closed shard: an immediately finished read.
    done = await streams.get_records(ShardIterator=await iterator(streams, arn, shard, "LATEST"))
    assert done["Records"] == [] and "NextShardIterator" not in done


async def test_lazy_shard_end_needs_one_more_empty_read(sim: Simulator, streams: Any) -> None:
    sim.configure(eager_shard_end=False)
    arn = sim.create_stream("orders", shards=1)
    shard = sim.shards(arn)[0]["ShardId"]
    sim.put_record("orders", {"pk": "a"}, {"n": 1})
    sim.rotate_all(arn)
    page = await streams.get_records(ShardIterator=await iterator(streams, arn, shard))
    assert len(page["Records"]) == 1 and "NextShardIterator" in page
    end = await streams.get_records(ShardIterator=page["NextShardIterator"])
    assert end["Records"] == [] and "NextShardIterator" not in end


async def test_empty_reads_and_response_size_cap(sim: Simulator, streams: Any) -> None:
    sim.set_throttle(enabled=False)
    arn = sim.create_stream("orders", shards=1)
    shard = sim.shards(arn)[0]["ShardId"]
    written = [sim.put_record("orders", {"pk": "k"}, {"blob": "x" * 400})[1] for _ in range(6)]
    it = await iterator(streams, arn, shard)

    sim.configure(empty_read_rate=1.0)
    spurious = await streams.get_records(ShardIterator=it)
    assert spurious["Records"] == [] and "NextShardIterator" in spurious  # data is there nonetheless

    sim.configure(empty_read_rate=0.0, max_response_bytes=2000)  # ~2 records of ~900 bytes each
    pages, it2 = [], spurious["NextShardIterator"]
    while True:
        page = await streams.get_records(ShardIterator=it2)
        if not page["Records"]:
            break
        pages.append(seqs(page["Records"]))
        it2 = page["NextShardIterator"]
    assert pages == [written[0:2], written[2:4], written[4:6]]


async def test_iterator_positions_latest_at_after(sim: Simulator, streams: Any) -> None:
    sim.set_throttle(enabled=False)  # many reads of one shard within a second
    arn = sim.create_stream("orders", shards=1)
    shard = sim.shards(arn)[0]["ShardId"]
    written = [sim.put_record("orders", {"pk": "k"}, {"n": i})[1] for i in range(5)]

    latest = await iterator(streams, arn, shard, "LATEST")
    assert (await streams.get_records(ShardIterator=latest))["Records"] == []
    newer = sim.put_record("orders", {"pk": "k"}, {"n": 5})[1]
    assert seqs((await streams.get_records(ShardIterator=latest))["Records"]) == [newer]

    at, _ = await drain(streams, await iterator(streams, arn, shard, "AT_SEQUENCE_NUMBER", written[2]))
    assert seqs(at) == [*written[2:], newer]
    after, _ = await drain(streams, await iterator(streams, arn, shard, "AFTER_SEQUENCE_NUMBER", written[2]))
    assert seqs(after) == [*written[3:], newer]
    horizon, _ = await drain(streams, await iterator(streams, arn, shard, "TRIM_HORIZON"))
    assert seqs(horizon) == [*written, newer]

    with pytest.raises(ClientError) as err:
        await iterator(streams, arn, shard, "AT_SEQUENCE_NUMBER", "1" + "0" * 20)  # botocore: min length 21
    assert code_of(err) == "ValidationException"
    with pytest.raises(ClientError) as err:
        await iterator(streams, arn, "shardId-00000000000000000000-00000000")
    assert code_of(err) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as err:
        await streams.get_records(ShardIterator="garbage")
    assert code_of(err) == "ValidationException"
    with pytest.raises(ClientError) as err:
        await streams.get_records(ShardIterator=latest, Limit=1001)
    assert code_of(err) == "ValidationException"


async def test_sequence_numbers_compare_as_integers_across_length_change() -> None:
    with Simulator(seq_start=10**21 - 300, seq_jitter=100, seed=7) as sim:
        arn = sim.create_stream("orders", shards=1)
        written = [sim.put_record("orders", {"pk": "k"}, {"n": i})[1] for i in range(12)]
        assert {len(s) for s in written} == {21, 22}
        assert [int(s) for s in written] == sorted(int(s) for s in written)
        assert written != sorted(written)  # lexicographic order is wrong on purpose


# --------------------------------------------------------------------------- resharding


async def test_split_closes_parent_and_routes_key_to_one_child(sim: Simulator, streams: Any) -> None:
    arn = sim.create_stream("orders", shards=2)
    key = {"pk": "customer-42"}
    parent = sim.shard_for_key(arn, key)
    before = [sim.put_record("orders", key, {"n": i}) for i in range(3)]
    assert {s for s, _ in before} == {parent}

    a, b = sim.split_shard(arn, parent)
    after = [sim.put_record("orders", key, {"n": i}) for i in range(3, 6)]
    child = after[0][0]
    assert child in (a, b) and {s for s, _ in after} == {child}

    desc = {s["ShardId"]: s for s in (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]}
    assert len(desc) == 4
    assert desc[parent]["SequenceNumberRange"]["EndingSequenceNumber"] == before[-1][1]
    assert desc[a]["ParentShardId"] == desc[b]["ParentShardId"] == parent
    for c in (a, b):
        assert int(desc[c]["SequenceNumberRange"]["StartingSequenceNumber"]) > int(before[-1][1])
        assert "EndingSequenceNumber" not in desc[c]["SequenceNumberRange"]

    parent_records, end = await drain(streams, await iterator(streams, arn, parent))
    assert "NextShardIterator" not in end
    child_records, _ = await drain(streams, await iterator(streams, arn, child))
    assert [r["dynamodb"]["NewImage"]["n"]["N"] for r in parent_records] == ["0", "1", "2"]
    assert [r["dynamodb"]["NewImage"]["n"]["N"] for r in child_records] == ["3", "4", "5"]
    assert min(int(s) for s in seqs(child_records)) > max(int(s) for s in seqs(parent_records))

    # Keys spread over both children (routing by hash range halves).
    targets = {sim.shard_for_key(arn, {"pk": f"x{i}"}) for i in range(200)}
    assert {a, b} <= targets and parent not in targets
    with pytest.raises(ValueError):
        sim.split_shard(arn, parent)


async def test_auto_rotation_on_simulated_clock() -> None:
    with Simulator(start_time=1_700_000_000.0, auto_rotate_seconds=4 * 3600) as sim:
        arn = sim.create_stream("orders", shards=3)
        roots = [s["ShardId"] for s in sim.shards(arn)]
        sim.advance(4 * 3600)
        shards = sim.shards(arn)
        assert len(shards) == 6
        assert [s["ParentShardId"] for s in shards[3:]] == roots
        assert [s["Open"] for s in shards] == [False] * 3 + [True] * 3


# --------------------------------------------------------------------------- retention, expiry, throttling, faults


@pytest.mark.parametrize("sim_knobs", [{"start_time": 1_700_000_000.0, "retention_seconds": 100}])
async def test_retention_trims_records_and_expires_closed_shards(sim: Simulator, streams: Any) -> None:
    arn = sim.create_stream("orders", shards=1)
    shard = sim.shards(arn)[0]["ShardId"]
    old = [sim.put_record("orders", {"pk": "k"}, {"n": i})[1] for i in range(3)]
    early = await iterator(streams, arn, shard)  # points at old[0]
    sim.advance(60)
    new = [sim.put_record("orders", {"pk": "k"}, {"n": i})[1] for i in range(3, 5)]
    sim.advance(50)  # old records are 110 s old now, new ones 50 s

    for kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        with pytest.raises(ClientError) as err:
            await iterator(streams, arn, shard, kind, old[1])
        assert code_of(err) == "TrimmedDataAccessException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as err:
        await streams.get_records(ShardIterator=early)
    assert code_of(err) == "TrimmedDataAccessException"

    horizon, _ = await drain(streams, await iterator(streams, arn, shard))
    assert seqs(horizon) == new
    assert [r["dynamodb"]["SequenceNumber"] for r in sim.records(arn, shard)] == new

    # A closed shard disappears once closed and emptied for longer than the retention.
    child = sim.rotate_shard(arn, shard)
    sim.advance(99)
    ids = [s["ShardId"] for s in (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]]
    assert ids == [shard, child]
    sim.advance(2)
    ids = [s["ShardId"] for s in (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]]
    assert ids == [child]
    with pytest.raises(ClientError) as err:
        await iterator(streams, arn, shard)
    assert code_of(err) == "ResourceNotFoundException"


@pytest.mark.parametrize("sim_knobs", [{"start_time": 1_700_000_000.0}])
async def test_iterator_expires_after_ttl(sim: Simulator, streams: Any) -> None:
    arn = sim.create_stream("orders", shards=1)
    shard = sim.shards(arn)[0]["ShardId"]
    it = await iterator(streams, arn, shard)
    sim.advance(899)
    fresh = (await streams.get_records(ShardIterator=it))["NextShardIterator"]
    sim.advance(2)  # `it` is 901 s old now, `fresh` 2 s
    with pytest.raises(ClientError) as err:
        await streams.get_records(ShardIterator=it)
    assert code_of(err) == "ExpiredIteratorException"
    assert (await streams.get_records(ShardIterator=fresh))["Records"] == []
    assert sim.errors("GetRecords", "ExpiredIteratorException") == 1


async def test_throttle_per_shard_and_switch_off(sim: Simulator, streams: Any) -> None:
    arn = sim.create_stream("orders", shards=2)
    one, two = (s["ShardId"] for s in sim.shards(arn))
    it = await iterator(streams, arn, one)
    for _ in range(5):
        it = (await streams.get_records(ShardIterator=it))["NextShardIterator"]
    with pytest.raises(ClientError) as err:
        await streams.get_records(ShardIterator=it)
    assert code_of(err) == "LimitExceededException"
    # Another shard has its own budget.
    await streams.get_records(ShardIterator=await iterator(streams, arn, two))

    sim.set_throttle(enabled=False)
    for _ in range(10):
        it = (await streams.get_records(ShardIterator=it))["NextShardIterator"]
    sim.set_throttle(enabled=True, per_shard_per_second=1)
    it = (await streams.get_records(ShardIterator=it))["NextShardIterator"]
    with pytest.raises(ClientError) as err:
        await streams.get_records(ShardIterator=it)
    assert code_of(err) == "LimitExceededException"
    assert sim.errors("GetRecords", "LimitExceededException") == 2


async def test_injected_errors_latency_and_stats(sim: Simulator, streams: Any) -> None:
    arn = sim.create_stream("orders", shards=1)

    sim.fail_next(2, operation="DescribeStream")
    for _ in range(2):
        with pytest.raises(ClientError) as err:
            await streams.describe_stream(StreamArn=arn)
        assert code_of(err) == "InternalServerError"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    await streams.list_streams()  # not the targeted operation
    await streams.describe_stream(StreamArn=arn)

    sim.fail_next(1, "ProvisionedThroughputExceededException", message="slow down")
    with pytest.raises(ClientError) as err:
        await streams.list_streams()
    assert code_of(err) == "ProvisionedThroughputExceededException"
    assert err.value.response["Error"]["Message"] == "slow down"

    sim.configure(error_rate=1.0)
    with pytest.raises(ClientError) as err:
        await streams.list_streams()
    assert code_of(err) == "InternalServerError"
    sim.configure(error_rate=0.0)

    sim.set_faults(latency_seconds=0.2)
    started = time.monotonic()
    await streams.list_streams()
    assert time.monotonic() - started >= 0.2
    sim.clear_faults()

    stats = sim.stats()["operations"]
    assert stats["DescribeStream"] == {"calls": 3, "errors": 2, "error_codes": {"InternalServerError": 2}}
    assert stats["ListStreams"] == {
        "calls": 4,
        "errors": 2,
        "error_codes": {"ProvisionedThroughputExceededException": 1, "InternalServerError": 1},
    }
    sim.reset_stats()
    assert sim.stats()["operations"] == {}


async def test_disconnect_fault_is_a_connection_error(sim: Simulator, streams: Any) -> None:
    sim.create_stream("orders")
    sim.fail_next(1, "DISCONNECT")
    with pytest.raises(Exception) as err:
        await streams.list_streams()
    assert not isinstance(err.value, ClientError)
    assert (await streams.list_streams())["Streams"]


async def test_wire_error_shape(sim: Simulator) -> None:
    sim.create_stream("orders")
    async with aiohttp.ClientSession() as http:
        headers = {
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDBStreams_20120810.DescribeStream",
        }
        async with http.post(sim.url + "/", data=b'{"StreamArn": "arn:nope"}', headers=headers) as response:
            assert response.status == 400
            assert response.headers["Content-Type"] == "application/x-amz-json-1.0"
            body = await response.json(content_type=None)
        assert body["__type"] == "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException"
        assert "arn:nope" in body["message"]
        sim.fail_next(1)
        async with http.post(sim.url + "/", data=b"{}", headers={**headers, "X-Amz-Target": "DynamoDBStreams_20120810.ListStreams"}) as response:
            assert response.status == 500
            assert (await response.json(content_type=None))["__type"].endswith("#InternalServerError")


# --------------------------------------------------------------------------- scale, threads, processes


async def test_thousand_shards_are_cheap(sim: Simulator, streams: Any) -> None:
    sim.set_throttle(enabled=False)
    started = time.monotonic()
    arn = sim.create_stream("big", shards=1000)
    shard_ids = [s["ShardId"] for s in sim.shards(arn)]
    sim.put_records("big", [{"keys": {"pk": f"k{i}"}, "new_image": {"n": i}} for i in range(5000)])
    assert sum(s["Records"] for s in sim.shards(arn)) == 5000
    setup = time.monotonic() - started

    started = time.monotonic()
    listed: list[str] = []
    kwargs: dict[str, Any] = {"StreamArn": arn}
    while True:
        desc = (await streams.describe_stream(**kwargs))["StreamDescription"]
        listed += [s["ShardId"] for s in desc["Shards"]]
        if "LastEvaluatedShardId" not in desc:
            break
        kwargs["ExclusiveStartShardId"] = desc["LastEvaluatedShardId"]
    assert listed == shard_ids

    async def poll(shard_id: str) -> int:
        it = await iterator(streams, arn, shard_id)
        return len((await streams.get_records(ShardIterator=it))["Records"])

    counts = await asyncio.gather(*(poll(s) for s in shard_ids[:200]))
    assert sum(counts) == sum(s["Records"] for s in sim.shards(arn)[:200])
    wire = time.monotonic() - started
    assert setup < 1.5, setup
    assert wire < 3.0, wire  # 10 DescribeStream pages + 400 calls through the real client


async def test_concurrent_writer_thread_and_reader_keep_order(sim: Simulator, streams: Any) -> None:
    sim.set_throttle(enabled=False)
    arn = sim.create_stream("orders", shards=1)
    shard = sim.shards(arn)[0]["ShardId"]
    total = 2000

    def writer() -> None:
        for i in range(total):
            sim.put_record("orders", {"pk": "k"}, {"n": i})

    thread = threading.Thread(target=writer)
    thread.start()
    it: str | None = await iterator(streams, arn, shard)
    got: list[int] = []
    deadline = time.monotonic() + 5
    while len(got) < total and time.monotonic() < deadline:
        assert it is not None
        page = await streams.get_records(ShardIterator=it, Limit=300)
        got += [int(r["dynamodb"]["NewImage"]["n"]["N"]) for r in page["Records"]]
        it = page.get("NextShardIterator")
    thread.join()
    assert got == list(range(total))


async def test_upstream_forwarding_for_everything_not_simulated() -> None:
    with Simulator() as upstream:
        other = upstream.create_stream("other", shards=1)
        upstream.put_record("other", {"pk": "u"}, {"n": 1})
        with Simulator(upstream_url=upstream.url) as sim:
            mine = sim.create_stream("mine", shards=1)
            session = aioboto3.Session(region_name="us-east-1")
            async with (
                session.client("dynamodb", endpoint_url=sim.url, config=NO_RETRIES) as ddb,
                session.client("dynamodbstreams", endpoint_url=sim.url, config=NO_RETRIES) as streams,
            ):
                assert (await ddb.describe_table(TableName="mine"))["Table"]["LatestStreamArn"] == mine
                assert (await ddb.describe_table(TableName="other"))["Table"]["LatestStreamArn"] == other
                shard = (await streams.describe_stream(StreamArn=other))["StreamDescription"]["Shards"][0]["ShardId"]
                records, _ = await drain(streams, await iterator(streams, other, shard))
                assert [r["dynamodb"]["Keys"] for r in records] == [{"pk": {"S": "u"}}]
                with pytest.raises(ClientError) as err:
                    await ddb.describe_table(TableName="neither")
                assert code_of(err) == "ResourceNotFoundException"
            assert sim.stats()["forwarded"] == 6  # DescribeTable x2, DescribeStream, GetShardIterator, GetRecords x2
            assert upstream.calls("DescribeTable") == 2


async def test_separate_process_mode() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.local.simulator", "--port", "0", "--streams", "orders:4", "--streams", "users:2:id,ts"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        lines = [proc.stdout.readline().split() for _ in range(2)]
        arns = {table: arn for _, table, arn in lines}
        assert set(arns) == {"orders", "users"}

        remote = RemoteSimulator(url)
        shard, seq = remote.put_record(table_name="orders", keys={"pk": "a"}, new_image={"n": 1})
        session = aioboto3.Session(region_name="us-east-1")
        async with session.client("dynamodbstreams", endpoint_url=url, config=NO_RETRIES) as streams:
            desc = (await streams.describe_stream(StreamArn=arns["orders"]))["StreamDescription"]
            assert len(desc["Shards"]) == 4 and shard in [s["ShardId"] for s in desc["Shards"]]
            users = (await streams.describe_stream(StreamArn=arns["users"]))["StreamDescription"]
            assert users["KeySchema"] == [
                {"AttributeName": "id", "KeyType": "HASH"},
                {"AttributeName": "ts", "KeyType": "RANGE"},
            ]
            records, _ = await drain(streams, await iterator(streams, arns["orders"], shard))
            assert seqs(records) == [seq]
        assert remote.calls(operation="DescribeStream") == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
