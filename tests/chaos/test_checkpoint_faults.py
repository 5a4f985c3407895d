"""Found by the chaos run: a throttled checkpoint write must not freeze the checkpoint.

The checkpoint loop wrote without retrying: an error that outlived the SDK's one retry
ended the loop, and while the shard stayed idle nothing noticed. The records were all
handled, but the lease's checkpoint stayed behind (for good on a quiet shard), so the
next owner would redo them all. A transient error is now retried in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.chaos.fault_proxy import FaultProxy
from tests.integration.helpers import (
    chain_done,
    lease_rows,
    seed_config,
    setup_tables,
    stream_sequence_numbers,
    wait_until,
    write_orders,
)
from worker.app import App

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(endpoint_url: str) -> Iterator[FaultProxy]:
    server = FaultProxy(endpoint_url, seed=5).start()
    try:
        yield server
    finally:
        server.stop()


def _consumer_crashes() -> float:
    return REGISTRY.get_sample_value("stream_worker_loop_crashes_total", {"loop": "consumer"}) or 0.0


async def test_throttled_checkpoint_write_is_retried_not_left_behind(
    endpoint_url: str, prefix: str, aws: dict[str, Any], proxy: FaultProxy,
) -> None:
    ddb, streams = aws["dynamodb"], aws["dynamodbstreams"]
    await setup_tables(seed_config(endpoint_url, prefix))
    config = seed_config(proxy.url, prefix)  # the worker goes through the proxy

    async def at_tips() -> bool:
        rows = {row["table"]: row.get("checkpoint") for row in await lease_rows(ddb, config)}
        for logical in ("orders", "events"):
            sequences = await stream_sequence_numbers(streams, ddb, config.tables[logical].name)
            if sequences and rows.get(logical) != max(sequences, key=int):
                return False
        return True

    app = App(config)
    await app.start()
    try:
        await write_orders(ddb, config, ["c-1", "c-2", "c-3"])
        await wait_until(lambda: chain_done(ddb, config, ["c-1", "c-2", "c-3"]), timeout=30)
        await wait_until(at_tips, timeout=15)
        crashes = _consumer_crashes()

        # Both SDK attempts of the orders shard's next checkpoint write are throttled.
        orders_stream = f"table/{config.tables['orders'].name}/stream/"
        proxy.fail_next("throttle", 2, operation="UpdateItem", body_contains=("checkpointedAt", orders_stream))
        await write_orders(ddb, config, ["c-4"])
        await wait_until(lambda: chain_done(ddb, config, ["c-4"]), timeout=30)
        await wait_until(lambda: _async(proxy.pending_targeted() == 0), timeout=15)
        # The shards are idle now: the checkpoints still reach the last records.
        await wait_until(at_tips, timeout=15)
        assert _consumer_crashes() == crashes
        assert proxy.counts()["throttle"] == 2
    finally:
        await app.stop()


async def _async(value: bool) -> bool:
    return value
