"""Debuggable failures: the failing file and line reach the log and the dead letter, and a
poison record does not flood the log with tracebacks."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

import tests.config.handlers as handlers
from tests.config.support import payment_record
from worker.config import RetryConfig
from worker.deadletter import DeadLetter
from worker.observability.logging import configure_logging
from worker.processing.delivery import DeliveryServices, RouteDelivery
from worker.processing.router import Route
from worker.testing import MemoryDeadLetters
from worker.tracebacks import MAX_TRACEBACK_CHARS, TracebackGate, failure_site, format_traceback

HANDLERS_FILE = Path(handlers.__file__).resolve()
FAILING_LINE = next(number for number, text in enumerate(HANDLERS_FILE.read_text().splitlines(), start=1)
                    if 'payment["currency"]' in text)
SITE = f"{HANDLERS_FILE}:{FAILING_LINE} in missing_currency"
FRAME = f'File "{HANDLERS_FILE}", line {FAILING_LINE}, in missing_currency'


async def _no_sleep(seconds: float) -> None:
    return None


def _delivery(route_name: str, max_attempts: int, letters: MemoryDeadLetters) -> RouteDelivery:
    route = Route(name=route_name, table="payments", events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=handlers.missing_currency, options={}, retry=RetryConfig(max_attempts=max_attempts))
    services = DeliveryServices(publisher=None, tables=None, config=None,  # type: ignore[arg-type]
                                worker_id="w", observers=[])
    return RouteDelivery(route, services, letters, progress=_AnyProgress(), sleep=_no_sleep)  # type: ignore[arg-type]


class _AnyProgress:
    """The shard's progress, not looked at here: takes every finish and failure."""

    def finish(self, record: object) -> None:
        return None

    def failing(self) -> None:
        return None


async def test_failing_handler_log_line_and_dead_letter_name_its_file_and_line() -> None:
    letters = MemoryDeadLetters()
    with capture_logs() as lines:
        await _delivery("tb-file-line", 2, letters).deliver([payment_record(101)])

    [retry] = [line for line in lines if line["event"] == "retry failed handler"]
    assert (retry["error"], retry["at"]) == ("KeyError", SITE)
    assert FRAME in retry["traceback"]
    assert retry["traceback"].rstrip().endswith("KeyError: 'currency'")
    [parked] = [line for line in lines if line["event"] == "park record in dead-letter destination"]
    assert parked["at"] == SITE

    [letter] = letters.letters
    assert FRAME in letter.traceback
    assert DeadLetter.from_json(letter.to_json()).traceback == letter.traceback


async def test_a_poison_record_logs_every_retry_but_one_traceback() -> None:
    with capture_logs() as lines:
        await _delivery("tb-poison", 6, MemoryDeadLetters()).deliver([payment_record(102)])

    retries = [line for line in lines if line["event"] == "retry failed handler"]
    assert [line["attempt"] for line in retries] == [1, 2, 3, 4, 5]
    assert all(line["at"] == SITE for line in retries)
    assert ["traceback" in line for line in retries] == [True, False, False, False, False]


async def test_json_logs_carry_the_traceback_as_a_field(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        await _delivery("tb-json", 2, MemoryDeadLetters()).deliver([payment_record(103)])
    finally:
        structlog.reset_defaults()

    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    [retry] = [line for line in logged if line["event"] == "retry failed handler"]
    assert retry["at"] == SITE
    assert FRAME in retry["traceback"]


def test_the_gate_allows_a_key_once_per_interval_and_forgets_the_oldest() -> None:
    now = [0.0]
    gate = TracebackGate(interval=60.0, max_keys=2, clock=lambda: now[0])

    assert gate.allow("a") and not gate.allow("a")
    now[0] = 59.0
    assert not gate.allow("a")
    now[0] = 60.0
    assert gate.allow("a")
    assert gate.allow("b") and gate.allow("c")  # "a" is now the oldest and forgotten
    assert gate.allow("a")


def test_a_deep_traceback_is_bounded_and_keeps_the_failing_end() -> None:
    def recurse(depth: int) -> None:
        if depth == 0:
            raise ValueError("bottom " + "x" * 5_000)
        recurse(depth - 1)

    with pytest.raises(ValueError) as info:
        recurse(200)

    text = format_traceback(info.value)
    assert len(text) <= MAX_TRACEBACK_CHARS
    assert text.startswith("[... ")
    assert text.endswith("x" * 100)
    assert failure_site(info.value).endswith("in recurse")
    assert failure_site(ValueError("never raised")) == ""


def test_a_letter_written_before_tracebacks_still_decodes() -> None:
    letter = DeadLetter.from_failure(payment_record(104), "r", ValueError("v"), "permanent", 1,
                                     datetime.now(timezone.utc), "w")
    data = json.loads(letter.to_json())
    del data["traceback"]
    assert DeadLetter.from_dict(data).traceback == ""


async def test_replay_dry_run_shows_the_parked_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from tests.config.support import HANDLERS, document, write_config
    from worker.cli import main
    from worker.deadletter.jsonl import JsonlDeadLetters

    letters_path = tmp_path / "letters.jsonl"
    route = {"name": "tb-replay", "table": "payments", "handler": f"{HANDLERS}:missing_currency",
             "retry": {"max_attempts": 1}, "dead_letter": {"type": "jsonl", "path": str(letters_path)}}
    config_path = write_config(tmp_path, document(route))
    parked = MemoryDeadLetters()
    await _delivery("tb-replay", 1, parked).deliver([payment_record(105)])
    destination = JsonlDeadLetters(letters_path)
    await destination.send(parked.letters[0])
    await destination.close()

    code = await asyncio.to_thread(main, ["replay", "--config", str(config_path), "--dry-run"])

    output = capsys.readouterr().out
    assert code == 0
    assert "would replay  tb-replay payments" in output
    assert "exhausted after 1 attempt(s): KeyError: 'currency'" in output
    assert FRAME in output
