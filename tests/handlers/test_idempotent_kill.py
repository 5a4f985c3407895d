"""An @idempotent handler whose worker is killed (SIGKILL) after the effect, before the
checkpoint: the next worker gets the record again and does not repeat the effect.

Real worker processes (``stream-worker run``) on a real moto server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import checkpoint, setup_tables, stream_sequence_numbers, wait_until
from worker.config import parse_config

pytestmark = pytest.mark.integration
STREAM_WORKER = str(Path(sys.executable).with_name("stream-worker"))
REPO = Path(__file__).resolve().parents[2]


def document(moto_url: str, prefix: str) -> dict[str, Any]:
    tables = {name: {"name": f"{prefix}{name}", "key": key}
              for name, key in (("payments", "id"), ("charges", "id"), ("idempotency", "id"), ("events", "eventId"))}
    return {
        "aws": {"region": "us-east-1", "endpoint_url": moto_url},
        "tables": tables,
        "leases": {"table": f"{prefix}leases", "poll_interval_seconds": 0.2, "duration_seconds": 3},
        "reader": {"idle_poll_seconds": 0.05, "max_idle_poll_seconds": 0.2, "discovery_interval_seconds": 1},
        "processing": {"retry": {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2},
                       "checkpoint_interval_seconds": 0.2},
        "observability": {"metrics": {"port": 0}, "logging": {"level": "INFO", "format": "json"}},
        "routes": [{"name": "charge", "table": "payments", "events": ["INSERT"],
                    "handler": "tests.handlers.idem_handlers:charge_and_maybe_get_killed"}],
    }


async def start_worker(path: Path, worker_id: str, kill_after_effect: bool) -> asyncio.subprocess.Process:
    env = {**os.environ, "WORKER_ID": worker_id, "IDEM_TEST_KILL_AFTER_EFFECT": "1" if kill_after_effect else "0"}
    return await asyncio.create_subprocess_exec(
        STREAM_WORKER, "run", "--config", str(path), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=REPO,
    )


async def test_killed_between_effect_and_checkpoint_the_effect_is_not_repeated(
    tmp_path: Path, moto_url: str, prefix: str, aws: dict[str, Any]
) -> None:
    ddb = aws["dynamodb"]
    doc = document(moto_url, prefix)
    doc["worker"] = {"id": "${WORKER_ID}"}
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = parse_config(doc, env={"WORKER_ID": "test"})
    await setup_tables(config)
    await ddb.put_item(TableName=config.tables["payments"].name, Item={"id": {"S": "p-1"}, "amount": {"N": "5"}})
    [sequence] = await stream_sequence_numbers(aws["dynamodbstreams"], ddb, config.tables["payments"].name)

    async def charged() -> int:
        item = (await ddb.get_item(TableName=config.tables["charges"].name, Key={"id": {"S": "p-1"}},
                                   ConsistentRead=True)).get("Item")
        return int(item["charged"]["N"]) if item else 0

    first = await start_worker(path, "first", kill_after_effect=True)
    try:
        assert await asyncio.wait_for(first.wait(), timeout=60) == -signal.SIGKILL
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    assert await charged() == 1
    assert await checkpoint(ddb, config, "payments") != sequence  # killed before the checkpoint

    second = await start_worker(path, "second", kill_after_effect=False)
    try:
        async def passed() -> bool:
            return await checkpoint(ddb, config, "payments") == sequence
        await wait_until(passed, timeout=60)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), timeout=30) == 0
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()
    log = (await second.stderr.read()).decode() if second.stderr else ""
    assert '"event": "skip repeated call"' in log  # the record came again, the handler was skipped
    assert await charged() == 1
