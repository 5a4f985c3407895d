"""The tools that call handlers outside the worker run on_start/on_stop too: the testing
kit's route_harness and ``stream-worker replay`` (handlers find ``ctx.resources`` there)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.config.support import document, payment_record, write_config
from worker.testing import MemoryDeadLetters
from tests.config.test_tracebacks import _delivery
from tests.hooks.recording_hooks import BEHAVIOUR, JOURNAL, SharedClient, names
from worker.cli import main
from worker.deadletter.jsonl import JsonlDeadLetters
from worker.errors import StartupError
from worker.testing import Outcome, route_harness

HOOKS = "tests.hooks.recording_hooks"
ROUTE = {"name": "rec", "table": "payments", "handler": f"{HOOKS}:handle"}
WORKER_HOOKS = {"on_start": f"{HOOKS}:on_start", "on_stop": f"{HOOKS}:on_stop",
                "on_shard_start": f"{HOOKS}:on_shard_start"}


async def test_the_harness_runs_on_start_and_on_stop_around_the_deliveries(tmp_path: Path) -> None:
    config = write_config(tmp_path, document(ROUTE, hooks=WORKER_HOOKS))
    async with route_harness(config, "rec") as h:
        record = h.record("INSERT", {"paymentId": "p-1"}, new_image={"amount": 1})
        # The context the delivery builds (the worker's HandlerInvoker) carries the resources.
        assert h.context(record).resources is h.resources
        assert await h.deliver([record]) == [Outcome.HANDLED]
        client = h.resources.client
        assert isinstance(client, SharedClient) and client.calls == [record.sequence_number]
        assert not client.closed
    assert client.closed
    # No shards in the harness: the shard hooks do not run.
    assert [entry[0] for entry in names()] == ["on_start", "on_stop"]


async def test_a_failing_on_start_fails_entering_the_harness(tmp_path: Path) -> None:
    BEHAVIOUR["on_start"] = "raise"
    config = write_config(tmp_path, document(ROUTE, hooks=WORKER_HOOKS))
    with pytest.raises(StartupError, match="hooks.on_start failed"):
        async with route_harness(config, "rec"):
            pass  # pragma: no cover - not entered
    assert [entry[0] for entry in names()] == ["on_start"]


async def test_replay_gives_handlers_the_resources_and_closes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    letters_path = tmp_path / "letters.jsonl"
    route = {**ROUTE, "retry": {"max_attempts": 1}, "dead_letter": {"type": "jsonl", "path": str(letters_path)}}
    config_path = write_config(tmp_path, document(route, hooks=WORKER_HOOKS))
    parked = MemoryDeadLetters()
    await _delivery("rec", 1, parked).deliver([payment_record(7)])  # fails: KeyError, parked
    destination = JsonlDeadLetters(letters_path)
    await destination.send(parked.letters[0])
    await destination.close()

    code = await asyncio.to_thread(main, ["replay", "--config", str(config_path)])

    assert code == 0, capsys.readouterr()
    assert "replayed  rec payments" in capsys.readouterr().out
    assert [entry[0] for entry in JOURNAL] == ["on_start", "handle", "on_stop"]
    assert JOURNAL[-1][2].closed


async def test_replay_exits_1_when_on_start_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    BEHAVIOUR["on_start"] = "raise"
    route = {**ROUTE, "dead_letter": {"type": "jsonl", "path": str(tmp_path / "none.jsonl")}}
    config_path = write_config(tmp_path, document(route, hooks=WORKER_HOOKS))
    code = await asyncio.to_thread(main, ["replay", "--config", str(config_path)])
    assert code == 1
    assert "replay: hooks.on_start failed: RuntimeError: on_start broke on purpose" in capsys.readouterr().err
