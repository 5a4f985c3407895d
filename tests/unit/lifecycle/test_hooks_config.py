"""Lifecycle hooks in the config: checked at load like handlers, every error under its key."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.config.support import HANDLERS, document, write_config
from worker.cli import main
from worker.config import parse_config
from worker.errors import ConfigError, StartupError
from worker.lifecycle.hooks import LifecycleHooks, WorkerInfo, load_hooks
from worker.processing.context import Resources

HOOKS = "tests.hooks.recording_hooks"


def check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], **sections: Any) -> tuple[int, str]:
    code = main(["check-config", "--config", str(write_config(tmp_path, document(**sections)))])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def hook_problems(hooks: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_hooks(parse_config(document(hooks=hooks), env={}))
    return info.value.problems


def test_a_config_with_every_hook_passes_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hooks = {name: f"{HOOKS}:{name}" for name in
             ("on_start", "on_stop", "on_shard_start", "on_shard_end", "on_lease_lost")}
    code, output = check_config(tmp_path, capsys, hooks=hooks)
    assert code == 0, output


def test_a_hook_taking_two_arguments_fails_check_config_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code, output = check_config(tmp_path, capsys, hooks={"on_shard_end": f"{HOOKS}:handle"})
    assert code == 2
    assert "hooks.on_shard_end:" in output
    assert "takes (record, ctx), but a hook is called with one argument (info)" in output


def test_handler_and_hook_problems_are_reported_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    route = {"name": "audit", "table": "payments", "handler": f"{HANDLERS}:one_argument"}
    code, output = check_config(tmp_path, capsys, routes=[route], hooks={"on_start": f"{HOOKS}:nothing_here"})
    assert code == 2
    assert "routes[0].handler:" in output
    assert f"hooks.on_start: module '{HOOKS}' has no attribute 'nothing_here'" in output


@pytest.mark.parametrize(
    ("hooks", "key", "reason"),
    [
        ({"on_stop": f"{HOOKS}.on_stop"}, "hooks.on_stop", f"did you mean '{HOOKS}:on_stop'?"),
        ({"on_shard_ended": f"{HOOKS}:on_shard_end"}, "hooks.on_shard_ended", "did you mean 'on_shard_end'?"),
        ({"timeout_seconds": 0}, "hooks.timeout_seconds", "greater than 0"),
    ],
)
def test_malformed_hooks_sections_are_config_errors(hooks: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(document(hooks=hooks), env={})
    [(path, message)] = info.value.problems
    assert path == key and reason in message


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (f"{HOOKS}:names", "is not an async callable (define it with 'async def')"),
        ("no_such_hooks_module:on_start", "cannot import module 'no_such_hooks_module': not found"),
    ],
)
def test_hooks_that_do_not_fit_are_reported_under_their_key(target: str, reason: str) -> None:
    [(key, message)] = hook_problems({"on_lease_lost": target})
    assert key == "hooks.on_lease_lost" and reason in message


def test_a_hook_module_next_to_the_config_is_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "my_hooks_next_to_config.py").write_text("async def on_start(info):\n    return {'x': 1}\n")
    code, output = check_config(tmp_path, capsys, hooks={"on_start": "my_hooks_next_to_config:on_start"})
    assert code == 0, output


def hooks_with(on_start: Any, timeout: float = 1.0) -> LifecycleHooks:
    config = parse_config(document(hooks={"timeout_seconds": timeout}), env={})
    return LifecycleHooks({"on_start": on_start}, config=config, worker_id="w")


async def test_on_start_may_set_attributes_or_return_a_mapping() -> None:
    async def start(info: WorkerInfo) -> dict[str, Any]:
        info.resources.http = "session"
        return {"db": "pool"}

    hooks = hooks_with(start)
    await hooks.start()
    assert (hooks.resources.http, hooks.resources.db) == ("session", "pool")


async def test_on_start_returning_something_else_fails_the_start_up() -> None:
    async def start(info: WorkerInfo) -> list[str]:
        return ["not", "a", "mapping"]

    with pytest.raises(StartupError, match="hooks.on_start returned list: return None .* or a mapping"):
        await hooks_with(start).start()


async def test_on_start_that_hangs_fails_the_start_up_at_the_hook_timeout() -> None:
    async def start(info: WorkerInfo) -> None:
        await asyncio.sleep(3600)

    with pytest.raises(StartupError, match=r"hooks.on_start did not finish within 0.2 s"):
        await hooks_with(start, timeout=0.2).start()


def test_a_missing_resource_names_the_ones_there_are() -> None:
    resources = Resources(http="session")
    with pytest.raises(AttributeError, match=r"no resource 'db' \(resources: http\); hooks.on_start builds them"):
        _ = resources.db
