"""A route's ``model``: records whose image does not validate are parked, with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from tests.testing_kit import kit_handlers
from tests.testing_kit.conftest import HANDLERS
from worker.testing import Outcome, route_harness

STREAM_WORKER = str(Path(sys.executable).with_name("stream-worker"))
REPO = Path(__file__).resolve().parents[2]
PARKING = {"dead_letter": {"type": "jsonl", "path": "unused.jsonl"}, "retry": {"max_attempts": 5}}


async def test_images_that_do_not_validate_are_parked_without_calling_the_handler(
    write_config: Callable[..., Path],
) -> None:
    config = write_config({"name": "typed", "table": "items", "handler": f"{HANDLERS}:note_key",
                           "model": f"{HANDLERS}:Item", **PARKING})
    async with route_harness(config, "typed") as h:
        good = h.record("INSERT", {"id": "a"}, new_image={"n": 1})
        bad = h.record("MODIFY", {"id": "b"}, new_image={"n": "many"})
        removed = h.record("REMOVE", {"id": "c"}, old_image={"n": 3})  # REMOVE: the old image counts

        assert await h.deliver([good, bad, removed]) == [Outcome.HANDLED, Outcome.PARKED, Outcome.HANDLED]
    assert kit_handlers.handled == ["a", "c"]
    [letter] = h.dead_letters
    assert letter.error_class == "permanent" and letter.attempts == 1  # not retried
    assert letter.error_type == "ImageValidationError"
    assert "NewImage does not validate as Item" in letter.error_message and "n" in letter.error_message


async def test_in_a_batch_only_the_invalid_record_is_parked(write_config: Callable[..., Path]) -> None:
    config = write_config({"name": "typed", "table": "items", "batch_handler": f"{HANDLERS}:note_keys",
                           "batch_size": 10, "model": f"{HANDLERS}:Item", **PARKING})
    async with route_harness(config, "typed") as h:
        records = [h.record("INSERT", {"id": f"k{i}"}, new_image={"n": "x" if i == 2 else i}) for i in range(4)]
        assert await h.deliver(records) == [Outcome.HANDLED, Outcome.HANDLED, Outcome.PARKED, Outcome.HANDLED]
    assert sorted(kit_handlers.handled) == ["k0", "k1", "k3"]


def test_a_model_that_is_not_a_pydantic_model_fails_check_config(write_config: Callable[..., Path]) -> None:
    config = write_config({"name": "typed", "table": "items", "handler": f"{HANDLERS}:note_key",
                           "model": f"{HANDLERS}:NOT_A_MODEL"})
    result = subprocess.run([STREAM_WORKER, "check-config", "--config", str(config)], capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2
    assert f"routes[0].model: '{HANDLERS}:NOT_A_MODEL' is not a pydantic model" in result.stderr
