"""The fast GetRecords decode path gives the same records as the SDK's own parser."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aioboto3
import pytest
from botocore.exceptions import ClientError

from worker.records import StreamRecord
from worker.retrieval.fast_decode import install_fast_get_records

pytestmark = pytest.mark.integration


async def _read_all(client: Any, arn: str) -> list[StreamRecord]:
    shard = (await client.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = (await client.get_shard_iterator(StreamArn=arn, ShardId=shard,
                                                 ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
    page = await client.get_records(ShardIterator=iterator, Limit=1000)
    assert page.get("NextShardIterator")
    return [StreamRecord(raw, table="t", stream_arn=arn, shard_id=shard) for raw in page["Records"]]


async def test_fast_decode_matches_the_sdk(endpoint_url: str, prefix: str, aws: dict[str, Any]) -> None:
    ddb = aws["dynamodb"]
    table = f"{prefix}typed"
    created = await ddb.create_table(
        TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    arn = created["TableDescription"]["LatestStreamArn"]
    item = {
        "pk": {"S": "k1"}, "n": {"N": "12.50"}, "b": {"B": b"\x00\xffbin"}, "t": {"BOOL": True},
        "z": {"NULL": True}, "m": {"M": {"inner": {"S": "x"}, "deep": {"L": [{"N": "1"}, {"B": b"\x01"}]}}},
        "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"\x02", b"\x03"]},
    }
    await ddb.put_item(TableName=table, Item=item)
    await ddb.put_item(TableName=table, Item={**item, "n": {"N": "13"}})
    await ddb.delete_item(TableName=table, Key={"pk": {"S": "k1"}})

    session = aioboto3.Session(region_name="us-east-1")
    async with session.client("dynamodbstreams", endpoint_url=endpoint_url) as sdk, \
            session.client("dynamodbstreams", endpoint_url=endpoint_url) as fast:
        install_fast_get_records(fast)
        expected = await _read_all(sdk, arn)
        got = await _read_all(fast, arn)
        # Errors still come from the SDK's parser, with their codes.
        with pytest.raises(ClientError) as sdk_error:
            await sdk.get_records(ShardIterator="bogus")
        with pytest.raises(ClientError) as fast_error:
            await fast.get_records(ShardIterator="bogus")
    assert sdk_error.value.response["Error"]["Code"] == fast_error.value.response["Error"]["Code"]

    assert [r.event_name for r in got] == [r.event_name for r in expected]
    assert [r.event_name.value for r in got] == ["INSERT", "MODIFY", "REMOVE"]
    for fast_record, sdk_record in zip(got, expected, strict=True):
        assert fast_record.sequence_number == sdk_record.sequence_number
        assert fast_record.event_id == sdk_record.event_id
        assert fast_record.keys == sdk_record.keys
        assert fast_record.new_image == sdk_record.new_image
        assert fast_record.old_image == sdk_record.old_image
        fast_time, sdk_time = fast_record.approximate_creation_time, sdk_record.approximate_creation_time
        assert fast_time is not None and sdk_time is not None
        assert abs((fast_time - sdk_time).total_seconds()) < 0.001
    first = got[0].new_image
    assert first is not None
    assert first["b"].value == b"\x00\xffbin"
    assert first["n"] == Decimal("12.50")
    assert {b.value for b in first["bs"]} == {b"\x02", b"\x03"}
    assert first["m"]["deep"][1].value == b"\x01"
