"""The seed's order -> shipment chain on each real endpoint (moto, DynamoDB Local), in one worker process."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers import (
    Recorder,
    chain_done,
    checkpoint_of,
    lease_rows,
    run_orders,
    scan_all,
    seed_config,
    setup_tables,
    snapshot,
    stream_sequence_numbers,
    wait_until,
    write_orders,
)
from worker.app import App
from worker.aws import AwsClients
from worker.leases.table import LeaseTable
from worker.publishing.events import derive_event_id

pytestmark = pytest.mark.integration


async def test_chain_for_many_orders(endpoint_url: str, prefix: str, aws: dict[str, Any]) -> None:
    ddb = aws["dynamodb"]
    config = seed_config(endpoint_url, prefix)
    await setup_tables(config)
    recorder = Recorder()
    app = App(config, observers=[recorder])
    order_ids = [f"o-{i:03d}" for i in range(40)]
    await run_orders(app, ddb, config, order_ids)

    orders = {o["orderId"]["S"]: o for o in await scan_all(ddb, config.tables["orders"].name)}
    assert {oid: orders[oid]["status"]["S"] for oid in order_ids} == {oid: "PROCESSING" for oid in order_ids}
    events = await scan_all(ddb, config.tables["events"].name)
    assert sorted(e["correlationId"]["S"] for e in events) == sorted(order_ids)
    for event in events:
        order_id = event["correlationId"]["S"]
        assert event["eventId"]["S"] == derive_event_id("ShipmentRequested", order_id)
        assert event["type"]["S"] == "ShipmentRequested"
        assert event["payload"]["M"] == {"orderId": {"S": order_id}, "action": {"S": "SHIP"}}
        assert event["causationId"]["S"]  # the source record's event id
    shipments = await scan_all(ddb, config.tables["shipments"].name)
    assert sorted(s["orderId"]["S"] for s in shipments) == sorted(order_ids)

    # Each record reached each handler exactly once (orders of different ids run
    # concurrently, so only per-key order is promised; each id has one record here).
    handled = recorder.ok("order-processing")
    assert sorted(c.key for c in handled) == sorted(order_ids)
    assert sorted(c.key for c in recorder.ok("shipment-dispatch")) == sorted(order_ids)

    # The checkpoints reached the last record of each stream, and leases were released.
    rows = await lease_rows(ddb, config)
    for logical in ("orders", "events"):
        sequence_numbers = await stream_sequence_numbers(aws["dynamodbstreams"], ddb, config.tables[logical].name)
        assert checkpoint_of(rows, logical) == sequence_numbers[-1]
    assert all("owner" not in row for row in rows)


async def test_restart_resumes_from_checkpoint(endpoint_url: str, prefix: str, aws: dict[str, Any]) -> None:
    ddb = aws["dynamodb"]
    config = seed_config(endpoint_url, prefix)
    await setup_tables(config)
    first_batch = [f"a-{i:02d}" for i in range(10)]
    second_batch = [f"b-{i:02d}" for i in range(10)]

    first = Recorder()
    app = App(config, observers=[first])
    await run_orders(app, ddb, config, first_batch)
    checkpoint_before = checkpoint_of(await lease_rows(ddb, config), "orders")
    assert checkpoint_before is not None

    # Written while no worker runs: the next worker must pick them up, and only them.
    await write_orders(ddb, config, second_batch)
    second = Recorder()
    app = App(config, observers=[second])
    await app.start()
    try:
        await wait_until(lambda: chain_done(ddb, config, first_batch + second_batch), timeout=60)
    finally:
        await app.stop()

    assert sorted(c.key for c in second.ok("order-processing")) == second_batch
    assert sorted(c.key for c in second.ok("shipment-dispatch")) == second_batch
    assert all(int(c.sequence_number) > int(checkpoint_before) for c in second.calls if c.route == "order-processing")
    checkpoint_after = checkpoint_of(await lease_rows(ddb, config), "orders")
    assert checkpoint_after is not None and int(checkpoint_after) > int(checkpoint_before)


async def test_redelivery_leaves_tables_unchanged(endpoint_url: str, prefix: str, aws: dict[str, Any]) -> None:
    ddb = aws["dynamodb"]
    config = seed_config(endpoint_url, prefix)
    await setup_tables(config)
    order_ids = [f"r-{i:02d}" for i in range(8)]
    app = App(config)
    await run_orders(app, ddb, config, order_ids)
    before = await snapshot(ddb, config)

    # Forget every checkpoint: the next worker replays both streams from TRIM_HORIZON.
    clients = AwsClients(config.aws)
    try:
        lease_table = LeaseTable(await clients.client("dynamodb"), await clients.dynamodb_resource(), config.leases.table)
        for row in await lease_rows(ddb, config):
            await lease_table.reset_checkpoint(row["streamArn"], row["sk"], None)
    finally:
        await clients.close()
    replay = Recorder()
    app = App(config, observers=[replay])
    await app.start()
    try:
        await wait_until(lambda: _replayed(replay, order_ids), timeout=60)
    finally:
        await app.stop()

    assert await snapshot(ddb, config) == before
    assert sorted(c.key for c in replay.ok("order-processing")) == sorted(order_ids)


async def _replayed(recorder: Recorder, order_ids: list[str]) -> bool:
    return sorted(c.key for c in recorder.ok("shipment-dispatch")) == sorted(order_ids)


async def test_a_second_copy_of_an_order_record_publishes_no_second_event(
    endpoint_url: str, prefix: str, aws: dict[str, Any]
) -> None:
    """A crash after the status update but before the publish: the redelivered record
    finds PROCESSING, publishes the same event id, and the chain completes once."""
    ddb = aws["dynamodb"]
    config = seed_config(endpoint_url, prefix)
    await setup_tables(config)
    # The order is already PROCESSING (the update landed) but no event exists yet.
    await ddb.put_item(
        TableName=config.tables["orders"].name,
        Item={"orderId": {"S": "x-1"}, "status": {"S": "NEW"}},
    )
    await ddb.update_item(
        TableName=config.tables["orders"].name,
        Key={"orderId": {"S": "x-1"}},
        UpdateExpression="SET #s = :p",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":p": {"S": "PROCESSING"}},
    )
    app = App(config)
    await app.start()
    try:
        await wait_until(lambda: chain_done(ddb, config, ["x-1"]), timeout=60)
    finally:
        await app.stop()
    events = await scan_all(ddb, config.tables["events"].name)
    assert [e["eventId"]["S"] for e in events] == [derive_event_id("ShipmentRequested", "x-1")]
