"""Lifecycle hooks through the real worker: a simulated stream (shards that end), the
lease table on a moto server, the App in this process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.hooks.conftest import ConfigFactory
from tests.hooks.recording_hooks import JOURNAL, BEHAVIOUR, SharedClient, names
from tests.integration.helpers import wait_until
from worker.local.simulator import Simulator
from worker.app import App
from worker.aws import AwsClients
from worker.errors import StartupError
from worker.leases.table import LeaseTable

pytestmark = pytest.mark.integration


def handled() -> list[str]:
    return [entry[2] for entry in JOURNAL if entry[0] == "handle"]


def failures(hook: str, reason: str) -> float:
    return REGISTRY.get_sample_value("stream_worker_hook_failures_total", {"hook": hook, "reason": reason}) or 0.0


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    async def check() -> bool:
        return bool(predicate())

    await wait_until(check, timeout=timeout, interval=0.05)


async def test_start_and_stop_run_once_around_every_handler_call_and_share_resources(
    make_config: ConfigFactory, sim: Simulator, table: str,
) -> None:
    config = make_config()
    app = App(config)
    await app.start()
    try:
        written = [sim.put_record(table, {"pk": key}, {"pk": key})[1] for key in ("a", "b", "c")]
        await wait_for(lambda: len(handled()) == 3)
    finally:
        await app.stop()

    worker_id = config.worker.id
    hooks_seen = [entry[0] for entry in names()]
    assert hooks_seen == ["on_start", "on_shard_start", "on_stop"]
    assert JOURNAL[0] == ("on_start", worker_id)
    assert JOURNAL[-1][0] == "on_stop"  # after the last handler call
    [start] = names("on_shard_start")
    shard_id = sim.shards(table)[0]["ShardId"]
    assert start == ("on_shard_start", shard_id, "started", None, (), "orders", worker_id)
    # The client on_start built is the one every handler call used, and on_stop closed it.
    client = JOURNAL[-1][2]
    assert isinstance(client, SharedClient) and client.closed
    assert client.calls == written


async def test_a_shard_that_ends_runs_on_shard_end_after_its_last_checkpoint(
    make_config: ConfigFactory, sim: Simulator, table: str, moto_url: str,
) -> None:
    config = make_config()
    [parent] = [shard["ShardId"] for shard in sim.shards(table)]
    app = App(config)
    await app.start()
    try:
        last = [sim.put_record(table, {"pk": key}, {"pk": key})[1] for key in ("a", "b")][-1]
        await wait_for(lambda: len(handled()) == 2)
        children = sim.split_shard(table, parent)
        sim.put_record(table, {"pk": "c"}, {"pk": "c"})
        await wait_for(lambda: len(handled()) == 3 and len(names("on_shard_start")) == 3)
    finally:
        await app.stop()

    [end] = names("on_shard_end")
    assert end[:4] == ("on_shard_end", parent, "shard_end", last)
    assert sorted(end[4]) == sorted(children)
    # The lease said SHARD_END before the hook ran; the children started after it.
    order = [(entry[0], entry[1]) for entry in names("on_shard_start", "on_shard_end")]
    assert order.index(("on_shard_end", parent)) < min(order.index(("on_shard_start", c)) for c in children)
    assert order[0] == ("on_shard_start", parent)


async def test_a_stolen_lease_runs_on_lease_lost_and_nothing_is_checkpointed_after_it(
    make_config: ConfigFactory, sim: Simulator, table: str, moto_url: str,
) -> None:
    # A long lease so the thief's lease does not expire (and come back) during the test.
    config = make_config(leases={"table": make_config().leases.table, "duration_seconds": 30,
                                 "poll_interval_seconds": 0.2})
    app = App(config)
    aws = AwsClients(config.aws)
    try:
        await app.start()
        first = sim.put_record(table, {"pk": "a"}, {"pk": "a"})[1]
        await wait_for(lambda: handled() == [first])
        leases = LeaseTable(await aws.client("dynamodb"), await aws.dynamodb_resource(), config.leases.table)
        [held] = await leases.list_leases(sim.stream_arn(table))

        async def checkpointed() -> bool:
            row = await leases.get_lease(held.stream_arn, held.shard_id)
            return row is not None and row.checkpoint == first

        await wait_until(checkpointed, timeout=10)
        current = await leases.get_lease(held.stream_arn, held.shard_id)
        assert current is not None
        await leases.heartbeat("thief", 1)  # a live worker: its lease is not expired
        stolen = await leases.take(current, "thief")
        assert stolen is not None
        sim.put_record(table, {"pk": "b"}, {"pk": "b"})  # the next checkpoint write is refused
        await wait_for(lambda: names("on_lease_lost"))
        await asyncio.sleep(1.0)  # time for a checkpoint the worker must not write
        row = await leases.get_lease(held.stream_arn, held.shard_id)
    finally:
        await app.stop()
        await aws.close()

    [lost] = names("on_lease_lost")
    assert lost[:2] == ("on_lease_lost", held.shard_id)
    assert lost[2] in ("taken", "fenced")
    assert lost[3] == first  # the last checkpoint this worker wrote
    assert row is not None and row.owner == "thief" and row.checkpoint == first


async def test_failing_and_hanging_shard_hooks_are_logged_counted_and_do_not_stop_the_shard(
    make_config: ConfigFactory, sim: Simulator, table: str,
) -> None:
    config = make_config(hooks={"timeout_seconds": 0.5})
    BEHAVIOUR.update({"on_shard_start": "raise", "on_shard_end": "hang"})
    raised, hung = failures("on_shard_start", "error"), failures("on_shard_end", "timeout")
    [parent] = [shard["ShardId"] for shard in sim.shards(table)]
    app = App(config)
    with capture_logs() as logs:
        await app.start()
        try:
            sim.put_record(table, {"pk": "a"}, {"pk": "a"})
            await wait_for(lambda: len(handled()) == 1)
            sim.split_shard(table, parent)
            sim.put_record(table, {"pk": "b"}, {"pk": "b"})
            await wait_for(lambda: len(handled()) == 2)
        finally:
            await app.stop()

    assert failures("on_shard_start", "error") - raised >= 3  # the parent and both children
    assert failures("on_shard_end", "timeout") - hung == 1
    [failed, *_] = [line for line in logs if line["event"] == "fail hook" and line["hook"] == "on_shard_start"]
    assert isinstance(failed["exc_info"], RuntimeError)
    assert "recording_hooks.py:" in failed["at"] and failed["shard"] == parent
    assert any(line["event"] == "cancel hook past its timeout" and line["hook"] == "on_shard_end" for line in logs)


async def test_a_failing_on_start_fails_the_start_up_and_on_stop_is_not_run(make_config: ConfigFactory) -> None:
    BEHAVIOUR["on_start"] = "raise"
    app = App(make_config())
    with pytest.raises(StartupError, match=r"hooks.on_start failed: RuntimeError: on_start broke on purpose"):
        await app.start()
    await app.stop()
    assert [entry[0] for entry in names()] == ["on_start"]


async def test_a_failing_on_stop_is_logged_and_the_stop_completes(
    make_config: ConfigFactory, sim: Simulator, table: str,
) -> None:
    BEHAVIOUR["on_stop"] = "raise"
    before = failures("on_stop", "error")
    app = App(make_config())
    await app.start()
    sim.put_record(table, {"pk": "a"}, {"pk": "a"})
    await wait_for(lambda: len(handled()) == 1)
    with capture_logs() as logs:
        await app.stop()
    assert failures("on_stop", "error") - before == 1
    assert any(line["event"] == "fail hook" and line["hook"] == "on_stop" for line in logs)
    assert any(line["event"] == "stop worker" for line in logs)
