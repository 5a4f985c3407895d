"""The e2e benchmark's sharded endpoint (bench/sharded_moto.py): HAProxy in front of one moto
per table group must send every request to the moto that holds the table it names."""

from __future__ import annotations

from typing import Any, Iterator

import boto3
import pytest

from bench.sharded_moto import ShardedMoto


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ShardedMoto]:
    sharded = ShardedMoto([["p-orders"], ["p-events"]]).start()
    try:
        yield sharded
    finally:
        sharded.stop()


def _client(service: str, url: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def _create(ddb: Any, table: str) -> str:
    ddb.create_table(TableName=table, KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST",
                     StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    return str(ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"])


def test_each_table_lives_on_its_own_moto_and_every_api_reaches_it(endpoint: ShardedMoto) -> None:
    ddb, streams = _client("dynamodb", endpoint.url), _client("dynamodbstreams", endpoint.url)
    arns = {table: _create(ddb, table) for table in ("p-orders", "p-events", "p-leases")}
    assert [_client("dynamodb", moto.url).list_tables()["TableNames"] for moto in endpoint.motos] == [
        ["p-orders"], ["p-events"], ["p-leases"]]

    ddb.batch_write_item(RequestItems={"p-orders": [{"PutRequest": {"Item": {"k": {"S": "a"}}}}]})
    ddb.put_item(TableName="p-events", Item={"k": {"S": "e"}}, ConditionExpression="attribute_not_exists(k)")
    # A lease-like item names another table's stream ARN: it must still go to its own table.
    ddb.put_item(TableName="p-leases", Item={"k": {"S": f"lease#{arns['p-orders']}"}})

    for table, key in (("p-orders", "a"), ("p-events", "e")):
        shard = streams.describe_stream(StreamArn=arns[table])["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(StreamArn=arns[table], ShardId=shard,
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records = streams.get_records(ShardIterator=iterator)["Records"]
        assert [r["dynamodb"]["Keys"]["k"]["S"] for r in records] == [key]
    assert ddb.get_item(TableName="p-leases", Key={"k": {"S": f"lease#{arns['p-orders']}"}})["Item"]
    assert len(endpoint.pids) == 4  # three motos and HAProxy
