"""@idempotent: once per key across redeliveries, failures release the key, a crashed
call's claim expires, rows expire; checked through the route harness (moto in-process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import yaml

from tests.handlers import idem_handlers
from worker.idempotency import IdempotencyInProgress, idempotency_key
from worker.testing import Outcome, RouteHarness, route_harness

HANDLERS = "tests.handlers.idem_handlers"


def write_config(tmp_path: Path, handler: str = "charge") -> Path:
    doc = {
        "tables": {"charges": {"name": "charges", "key": "id"},
                   "idempotency": {"name": "idempotency", "key": "id"},
                   "events": {"name": "events", "key": "eventId"}},
        "routes": [{"name": "charge", "table": "charges", "handler": f"{HANDLERS}:{handler}",
                    "retry": {"max_attempts": 3}, "dead_letter": {"type": "jsonl", "path": "x.jsonl"}}],
    }
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[RouteHarness]:
    async with route_harness(write_config(tmp_path), "charge") as harness:
        yield harness


async def charged(h: RouteHarness, key: str) -> Any:
    item = (await (await h.table("charges")).get_item(Key={"id": key})).get("Item", {})
    return item.get("charged")


async def test_redelivered_records_do_not_repeat_the_effect(h: RouteHarness) -> None:
    record = h.record("INSERT", {"id": "p-1"}, new_image={})
    for _ in range(3):
        assert await h.deliver([record]) == [Outcome.HANDLED]
    assert idem_handlers.calls == ["p-1"] and await charged(h, "p-1") == 1


async def test_a_repeat_returns_the_stored_result(h: RouteHarness) -> None:
    record = h.record("INSERT", {"id": "p-2"}, new_image={})
    first = await idem_handlers.charge(record, h.context(record))
    again = await idem_handlers.charge(record, h.context(record, attempt=5))
    assert first == again == {"receipt": "r-p-2", "attempt": 1}
    assert idem_handlers.calls == ["p-2"]


async def test_a_failed_call_releases_the_key_so_the_retry_runs(h: RouteHarness) -> None:
    idem_handlers.fail_after_effect.add("p-3")
    record = h.record("INSERT", {"id": "p-3"}, new_image={})
    assert await h.deliver([record]) == [Outcome.HANDLED]
    assert idem_handlers.calls == ["p-3", "p-3"]  # the failed call, then the retry


async def test_a_crashed_call_blocks_the_key_only_until_its_claim_expires(h: RouteHarness) -> None:
    idem_handlers.die_mid_call.add("p-4")
    record = h.record("INSERT", {"id": "p-4"}, new_image={})
    with pytest.raises(SystemExit):  # the worker died mid-call: nothing released the key
        await idem_handlers.charge(record, h.context(record))
    with pytest.raises(IdempotencyInProgress) as caught:  # another delivery meanwhile: retry later
        await idem_handlers.charge(record, h.context(record))
    assert caught.value.retryable
    # The claim lasts the route's timeout (60 s by default) plus a margin; then it is free.
    idem_handlers.clock.offset = 70
    assert await idem_handlers.charge(record, h.context(record)) == {"receipt": "r-p-4", "attempt": 1}
    assert idem_handlers.calls == ["p-4", "p-4"]


async def test_rows_expire_after_their_lifetime(h: RouteHarness) -> None:
    record = h.record("INSERT", {"id": "p-5"}, new_image={})
    await idem_handlers.charge(record, h.context(record))
    idem_handlers.clock.offset = 300
    await idem_handlers.charge(record, h.context(record))
    assert idem_handlers.calls == ["p-5"]
    idem_handlers.clock.offset = 601  # past expires_after_seconds: TTL may not have deleted it yet
    await idem_handlers.charge(record, h.context(record))
    assert idem_handlers.calls == ["p-5", "p-5"]
    row = (await (await h.table("idempotency")).get_item(
        Key={"id": idempotency_key(f"{HANDLERS}._charge", "p-5")}))["Item"]
    assert row["status"] == "COMPLETED" and row["expiration"] > idem_handlers.clock() + 500


async def test_handlers_sharing_a_table_and_key_do_not_collide(h: RouteHarness) -> None:
    record = h.record("INSERT", {"id": "p-6"}, new_image={})
    await idem_handlers.charge(record, h.context(record))
    assert await idem_handlers.refund(record, h.context(record)) == "refunded"
    assert idem_handlers.calls == ["p-6", "refund:p-6"]


async def test_an_unknown_idempotency_table_is_a_clear_error(h: RouteHarness) -> None:
    record = h.record("INSERT", {"id": "p-7"}, new_image={})
    with pytest.raises(Exception, match="idempotency table 'no-such-table' is not in the config's tables"):
        await idem_handlers.misconfigured(record, h.context(record))
