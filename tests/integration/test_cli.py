"""The CLI commands as a user runs them: demo on the embedded endpoint, create-tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import REPO, seed_document

pytestmark = pytest.mark.integration
STREAM_WORKER = str(Path(sys.executable).with_name("stream-worker"))


def test_demo_runs_the_chain_on_the_embedded_endpoint() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    result = subprocess.run(
        [STREAM_WORKER, "demo", "--orders", "3", "--timeout", "60"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Execution table for order-001" in result.stdout
    for order in ("order-001", "order-002", "order-003"):
        assert f"| {order} | PROCESSING   | DISPATCHED | 1      |" in result.stdout
    assert "OK: 3 orders went NEW -> PROCESSING -> shipment DISPATCHED" in result.stdout


async def test_create_tables_creates_streams_and_lease_table(
    tmp_path: Path, endpoint_url: str, prefix: str, aws: dict[str, Any]
) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(seed_document(endpoint_url, prefix)))
    first = subprocess.run([STREAM_WORKER, "create-tables", "--config", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([STREAM_WORKER, "create-tables", "--config", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing (all tables exist)" in again.stdout
    ddb = aws["dynamodb"]
    for logical, streamed in (("orders", True), ("events", True), ("shipments", False)):
        table = (await ddb.describe_table(TableName=f"{prefix}{logical}"))["Table"]
        spec = table.get("StreamSpecification") or {}
        assert bool(spec.get("StreamEnabled")) is streamed, logical
        if streamed:
            assert spec["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    lease = (await ddb.describe_table(TableName=f"{prefix}leases"))["Table"]
    assert sorted((k["AttributeName"], k["KeyType"]) for k in lease["KeySchema"]) == [("pk", "HASH"), ("sk", "RANGE")]
    assert lease["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


async def test_status_reports_lag_of_unprocessed_records(endpoint_url: str, prefix: str, aws: dict[str, Any]) -> None:
    import asyncio

    from tests.integration.helpers import chain_done, seed_config, setup_tables, wait_until, write_orders
    from worker.app import App
    from worker.operations import collect_status

    config = seed_config(endpoint_url, prefix)
    await setup_tables(config)
    app = App(config)
    await app.start()  # creates the lease rows, then stops with nothing to do
    await app.stop()
    await write_orders(aws["dynamodb"], config, ["lag-1"])
    await asyncio.sleep(1.5)
    behind = {s["table"]: s for s in (await collect_status(config))["shards"]}
    assert behind["orders"]["lag_seconds"] >= 1.0  # the order waits, unhandled
    assert behind["events"]["lag_seconds"] == 0.0

    app = App(config)
    await app.start()
    try:
        await wait_until(lambda: chain_done(aws["dynamodb"], config, ["lag-1"]), timeout=30)
        await asyncio.sleep(config.processing.checkpoint_interval_seconds + 0.5)
    finally:
        await app.stop()
    caught_up = {s["table"]: s for s in (await collect_status(config))["shards"]}
    # The order's status update emits a MODIFY that no route takes; it is acknowledged too.
    assert caught_up["orders"]["lag_seconds"] == 0.0
    assert caught_up["events"]["lag_seconds"] == 0.0
