"""Shared set-up for integration tests: a seed config on the test's endpoint (moto or
DynamoDB Local), a recorder, table snapshots and a polling wait."""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import yaml
from botocore.exceptions import ClientError

from worker.aws import AwsClients
from worker.aws_errors import error_code
from worker.config import Config, parse_config
from worker.deadletter import DeadLetter
from worker.local.tables import create_tables
from worker.records import StreamRecord

REPO = Path(__file__).resolve().parents[2]
SEED_CONFIG = REPO / "config" / "worker.yaml"


def seed_document(endpoint_url: str, prefix: str) -> dict[str, Any]:
    """config/worker.yaml with prefixed table names and test-speed timings."""
    doc = yaml.safe_load(SEED_CONFIG.read_text())
    doc = copy.deepcopy(doc)
    doc["worker"]["id"] = f"{prefix}worker"
    doc["aws"] = {"region": "us-east-1", "endpoint_url": endpoint_url}
    for logical, table in doc["tables"].items():
        table["name"] = f"{prefix}{logical}"
    doc["leases"].update({"table": f"{prefix}leases", "poll_interval_seconds": 0.2, "duration_seconds": 3})
    doc["reader"].update({"idle_poll_seconds": 0.05, "max_idle_poll_seconds": 0.2, "discovery_interval_seconds": 1,
                          "parent_poll_seconds": 0.1})
    doc["processing"]["retry"] = {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}
    doc["observability"] = {"metrics": {"port": 0}, "logging": {"level": "WARNING", "format": "console"}}
    return doc


def seed_config(endpoint_url: str, prefix: str, mutate: Callable[[dict[str, Any]], None] | None = None) -> Config:
    doc = seed_document(endpoint_url, prefix)
    if mutate is not None:
        mutate(doc)
    return parse_config(doc, env={})


async def setup_tables(config: Config) -> None:
    clients = AwsClients(config.aws)
    try:
        await create_tables(config, clients)
    finally:
        await clients.close()


@dataclass
class Call:
    route: str
    outcome: str
    sequence_number: str
    shard_id: str
    key: str
    new_image: dict[str, Any] | None


@dataclass
class Recorder:
    """A ProcessingObserver that keeps every handler call, in order."""

    calls: list[Call] = field(default_factory=list)

    def __call__(self, record: StreamRecord, route: str, outcome: str, started: float, ended: float) -> None:
        image = record.new_image or {}
        key = image.get("orderId") or (image.get("payload") or {}).get("orderId") or record.item_key
        self.calls.append(Call(route, outcome, record.sequence_number, record.shard_id, str(key), record.new_image))

    def ok(self, route: str) -> list[Call]:
        return [c for c in self.calls if c.route == route and c.outcome == "ok"]


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def scan_all(client: Any, table_name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table_name, "ConsistentRead": True}
    while True:
        page = await client.scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def snapshot(client: Any, config: Config) -> dict[str, list[dict[str, Any]]]:
    """Every application table's items, sorted, for before/after comparisons."""
    result = {}
    for logical, table in config.tables.items():
        items = await scan_all(client, table.name)
        result[logical] = sorted(items, key=lambda item: repr(sorted(item.items())))
    return result


async def run_orders(app: Any, client: Any, config: Config, order_ids: list[str], timeout: float = 60) -> None:
    """Start ``app`` (a worker App), write ``order_ids`` and wait until each one's chain is
    done, then stop ``app`` (also when the wait fails)."""
    await app.start()
    try:
        await write_orders(client, config, order_ids)
        await wait_until(lambda: chain_done(client, config, order_ids), timeout=timeout)
    finally:
        await app.stop()


async def write_orders(client: Any, config: Config, order_ids: list[str]) -> None:
    for order_id in order_ids:
        await client.put_item(
            TableName=config.tables["orders"].name,
            Item={"orderId": {"S": order_id}, "status": {"S": "NEW"}, "amount": {"N": "12.5"}},
        )


async def chain_done(client: Any, config: Config, order_ids: list[str]) -> bool:
    shipments = await scan_all(client, config.tables["shipments"].name)
    dispatched = {s["orderId"]["S"] for s in shipments if s["status"]["S"] == "DISPATCHED"}
    return set(order_ids) <= dispatched


async def stream_sequence_numbers(streams: Any, ddb: Any, table_name: str) -> list[str]:
    """Every record's sequence number in the table's stream, read from TRIM_HORIZON."""
    arn = (await ddb.describe_table(TableName=table_name))["Table"]["LatestStreamArn"]
    shards = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]
    found: list[str] = []
    for shard in shards:
        iterator = (await streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                                     ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
        while iterator:
            page = await streams.get_records(ShardIterator=iterator)
            found.extend(r["dynamodb"]["SequenceNumber"] for r in page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return found


async def lease_rows(client: Any, config: Config) -> list[dict[str, Any]]:
    """Lease rows (not worker rows) of the config's lease table, as plain dicts."""
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    rows = await scan_all(client, config.leases.table)
    plain = [{k: deserializer.deserialize(v) for k, v in row.items()} for row in rows]
    return [row for row in plain if str(row["pk"]).startswith("lease#")]


def checkpoint_of(rows: list[dict[str, Any]], logical_table: str) -> str | None:
    matching = [row for row in rows if row.get("table") == logical_table]
    assert len(matching) == 1, f"expected one lease for {logical_table}, got {matching}"
    return matching[0].get("checkpoint")


async def stream_records(aws: dict[str, Any], config: Config, logical: str) -> list[dict[str, Any]]:
    """Every raw record of the table's stream, read from TRIM_HORIZON with our own client."""
    ddb, streams = aws["dynamodb"], aws["dynamodbstreams"]
    arn = (await ddb.describe_table(TableName=config.tables[logical].name))["Table"]["LatestStreamArn"]
    shards = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"]
    found: list[dict[str, Any]] = []
    for shard in shards:
        found.extend(await _read_shard(streams, arn, shard["ShardId"]))
    return found


async def _read_shard(streams: Any, arn: str, shard_id: str, tries: int = 5) -> list[dict[str, Any]]:
    """A shard's records from TRIM_HORIZON. DynamoDB Local may answer a horizon iterator with
    TrimmedDataAccessException when other tables' writes moved its sequence counter on (nothing
    was lost; docs/failures.md): read the shard again from a fresh iterator."""
    for attempt in range(1, tries + 1):
        records: list[dict[str, Any]] = []
        iterator = (await streams.get_shard_iterator(StreamArn=arn, ShardId=shard_id,
                                                     ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
        try:
            while iterator:
                page = await streams.get_records(ShardIterator=iterator)
                records.extend(page["Records"])
                if not page["Records"]:
                    break
                iterator = page.get("NextShardIterator")
        except ClientError as exc:
            if error_code(exc) != "TrimmedDataAccessException" or attempt == tries:
                raise
            continue
        return records
    raise AssertionError("unreachable")


def seq(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


async def checkpoint(ddb: Any, config: Config, logical: str) -> str | None:
    rows = [row for row in await lease_rows(ddb, config) if row.get("table") == logical]
    assert len(rows) <= 1, rows
    return rows[0].get("checkpoint") if rows else None


async def wait_checkpoint(ddb: Any, config: Config, logical: str, expected: str, timeout: float = 10) -> None:
    async def reached() -> bool:
        return await checkpoint(ddb, config, logical) == expected

    await wait_until(reached, timeout=timeout, interval=0.05)


def jsonl_letters(path: Path) -> list[DeadLetter]:
    if not path.exists():
        return []
    return [DeadLetter.from_json(line) for line in path.read_text().splitlines() if line.strip()]
