"""A failing handler holds the checkpoint and is retried; bad config and bad tables exit 2."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration import flaky_handlers
from tests.integration.helpers import (
    Recorder,
    chain_done,
    checkpoint_of,
    lease_rows,
    seed_config,
    seed_document,
    setup_tables,
    wait_until,
    write_orders,
)
from worker.app import App
from worker.errors import SetupError

pytestmark = pytest.mark.integration
STREAM_WORKER = str(Path(sys.executable).with_name("stream-worker"))


def _with_flaky_route(doc: dict[str, Any]) -> None:
    doc["routes"].insert(
        0,
        {"name": "flaky", "table": "orders", "events": ["INSERT"],
         "handler": "tests.integration.flaky_handlers:flaky"},
    )


async def test_failing_handler_holds_checkpoint_then_retries(endpoint_url: str, prefix: str, aws: dict[str, Any]) -> None:
    ddb = aws["dynamodb"]
    config = seed_config(endpoint_url, prefix, _with_flaky_route)
    await setup_tables(config)
    flaky_handlers.failing.clear()
    flaky_handlers.failing.add("f-3")
    flaky_handlers.allow.clear()
    flaky_handlers.attempts.clear()
    order_ids = [f"f-{i}" for i in range(6)]
    recorder = Recorder()
    app = App(config, observers=[recorder])
    await app.start()
    try:
        await write_orders(ddb, config, order_ids)

        async def retried_twice() -> bool:
            return flaky_handlers.attempts.get("f-3", 0) >= 3

        await wait_until(retried_twice, timeout=30)
        # Held at f-3: the records before it are checkpointed, the checkpoint does not pass it;
        # the other keys of the failing route and the other route went on meanwhile.
        before_failure = [c for c in recorder.ok("flaky") if c.key == "f-2"][0]

        async def checkpoint_held() -> bool:
            return checkpoint_of(await lease_rows(ddb, config), "orders") == before_failure.sequence_number

        await wait_until(checkpoint_held, timeout=10)
        await wait_until(lambda: _handled(recorder, "flaky", [k for k in order_ids if k != "f-3"]), timeout=10)
        await wait_until(lambda: _handled(recorder, "order-processing", order_ids), timeout=10)
        assert checkpoint_of(await lease_rows(ddb, config), "orders") == before_failure.sequence_number

        flaky_handlers.allow.set()
        await wait_until(lambda: chain_done(ddb, config, order_ids), timeout=30)
    finally:
        await app.stop()

    # The failed route ran until it succeeded, once (last: nothing waited for it); the other
    # route ran once per order; a route that had succeeded for a record was not re-run.
    flaky_ok = [c.key for c in recorder.ok("flaky")]
    assert sorted(flaky_ok) == order_ids and flaky_ok[-1] == "f-3"
    assert sorted(c.key for c in recorder.ok("order-processing")) == order_ids  # concurrent keys
    failures = [c.key for c in recorder.calls if c.outcome == "error"]
    assert set(failures) == {"f-3"} and len(failures) >= 2
    assert {k: v for k, v in flaky_handlers.attempts.items() if k != "f-3"} == {k: 1 for k in order_ids if k != "f-3"}


async def _handled(recorder: Recorder, route: str, keys: list[str]) -> bool:
    return sorted(c.key for c in recorder.ok(route)) == sorted(keys)


async def test_table_without_stream_is_a_setup_error(endpoint_url: str, prefix: str, aws: dict[str, Any]) -> None:
    config = seed_config(endpoint_url, prefix)
    await aws["dynamodb"].create_table(
        TableName=config.tables["orders"].name,
        KeySchema=[{"AttributeName": "orderId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "orderId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    app = App(config)
    with pytest.raises(SetupError, match=r"tables\.orders: .* has no stream enabled"):
        try:
            await app.start()
        finally:
            await app.stop()


async def test_keys_only_stream_is_rejected_for_image_routes(endpoint_url: str, prefix: str, aws: dict[str, Any]) -> None:
    config = seed_config(endpoint_url, prefix)
    await aws["dynamodb"].create_table(
        TableName=config.tables["orders"].name,
        KeySchema=[{"AttributeName": "orderId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "orderId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"},
    )
    app = App(config)
    with pytest.raises(SetupError, match=r"view type KEYS_ONLY, but its routes read the new image"):
        try:
            await app.start()
        finally:
            await app.stop()


def _write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["routes"][0].update(table="ordrs"), "routes[0].table: unknown table 'ordrs'"),
        (lambda d: d["reader"].update(max_records=5000), "reader.max_records: Input should be less than or equal to 1000"),
        (lambda d: d["leases"].update(bogus=1), "leases.bogus: unknown key; (known here: create_table, "),
        (lambda d: d["routes"][1].update(handler="tests.integration.flaky_handlers:not_async"),
         "routes[1].handler: 'tests.integration.flaky_handlers:not_async' is not an async callable"),
        (lambda d: d["routes"][0].update(handler="no.such.module:fn"), "routes[0].handler: cannot import module 'no.such.module'"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, endpoint_url: str, prefix: str, mutate: Any, expected: str) -> None:
    doc = seed_document(endpoint_url, prefix)
    mutate(doc)
    path = _write_config(tmp_path, doc)
    for command in ("check-config", "run"):
        result = subprocess.run(
            [STREAM_WORKER, command, "--config", str(path)], capture_output=True, text=True, timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert result.returncode == 2, (command, result.stderr)
        assert expected in result.stderr, (command, result.stderr)


def test_run_against_missing_tables_exits_2(tmp_path: Path, endpoint_url: str, prefix: str) -> None:
    path = _write_config(tmp_path, seed_document(endpoint_url, prefix))
    result = subprocess.run([STREAM_WORKER, "run", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"tables.events: table '{prefix}events' does not exist" in result.stderr


async def test_run_process_chain_then_sigterm_exits_0_and_releases(
    tmp_path: Path, endpoint_url: str, prefix: str, aws: dict[str, Any]
) -> None:
    ddb = aws["dynamodb"]
    doc = seed_document(endpoint_url, prefix)
    doc["observability"]["logging"] = {"level": "INFO", "format": "json"}
    path = _write_config(tmp_path, doc)
    config = seed_config(endpoint_url, prefix)
    await setup_tables(config)
    process = await asyncio.create_subprocess_exec(
        STREAM_WORKER, "run", "--config", str(path), "--metrics-port", "0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    order_ids = [f"p-{i}" for i in range(5)]
    try:
        await write_orders(ddb, config, order_ids)
        await wait_until(lambda: chain_done(ddb, config, order_ids), timeout=60)
        async def held() -> bool:
            return all(row.get("owner") for row in await lease_rows(ddb, config))
        await wait_until(held, timeout=10)
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=config.worker.shutdown_timeout_seconds + 5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert returncode == 0
    stderr = (await process.stderr.read()).decode() if process.stderr else ""
    assert '"event": "stop worker"' in stderr
    # JSON logs, context bound once: worker, stream, shard, sequence number, route, correlation.
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    handled = [line for line in lines if line["event"] == "set order processing"]
    assert sorted(line["correlation_id"] for line in handled) == order_ids
    for line in handled:
        assert line["worker_id"] == doc["worker"]["id"] and line["route"] == "order-processing"
        assert line["stream"] == "orders" and line["shard"] and line["seq"] and line["level"] == "info"
    assert not any("NewImage" in json.dumps(line) for line in lines), "item images must not be logged"
    rows = await lease_rows(ddb, config)
    assert len(rows) == 2 and all("owner" not in row for row in rows)


# A child interpreter whose import of worker.cli (the ~0.3 s of SDK and pydantic imports
# that follow the console script's start) is preceded by a SIGTERM to itself: what a
# container stop at that moment delivers. Without worker/entry.py's early handler the
# process dies by the signal; with it, the signal is remembered and honoured once the loop runs.
_SIGTERM_WHILE_IMPORTING = """
import importlib.abc, os, signal, sys
class SignalOnCliImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "worker.cli":
            os.kill(os.getpid(), signal.SIGTERM)
        return None
sys.meta_path.insert(0, SignalOnCliImport())
sys.argv = ["stream-worker", "run", "--config", sys.argv[1], "--metrics-port", "0"]
from worker.entry import main
raise SystemExit(main())
"""


async def test_sigterm_while_the_cli_imports_is_a_graceful_stop(
    tmp_path: Path, endpoint_url: str, prefix: str, aws: dict[str, Any]
) -> None:
    doc = seed_document(endpoint_url, prefix)
    doc["observability"]["logging"] = {"level": "INFO", "format": "json"}
    path = _write_config(tmp_path, doc)
    await setup_tables(seed_config(endpoint_url, prefix))
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _SIGTERM_WHILE_IMPORTING, str(path)],
        capture_output=True, text=True, timeout=90, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line).get("event") for line in result.stderr.splitlines() if line.startswith("{")]
    assert "stop on signal" in events and events[-1] == "stop worker"
