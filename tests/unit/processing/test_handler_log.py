"""The handler's ``ctx.log``: bound to its record on first use, and usable like the logger."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
import yaml
from structlog.testing import capture_logs

from worker import HandlerContext
from worker.testing import route_harness

CONFIG = {
    "tables": {"orders": {"name": "orders", "key": "pk"}, "events": {"name": "events", "key": "eventId"}},
    "routes": [{"name": "r", "table": "orders", "events": ["INSERT"],
                "handler": "tests.unit.sample_handlers:good_handler"}],
}


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[HandlerContext]:
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    async with route_harness(path, "r") as h:
        yield h.context(h.record("INSERT", {"pk": "order-7"}, new_image={}, sequence_number=104))


async def test_log_lines_carry_route_record_and_correlation_id(ctx: HandlerContext) -> None:
    with capture_logs() as lines:
        ctx.log.info("set order processing", order_id="order-7")
        ctx.log.bind(step=2).warning("again")
    assert lines[0]["event"] == "set order processing"
    assert {k: lines[0][k] for k in ("route", "stream", "seq", "correlation_id")} == {
        "route": "r", "stream": "orders", "seq": "104", "correlation_id": "order-7"}
    assert lines[1]["step"] == 2 and lines[1]["seq"] == "104"


async def test_copies_and_repr_give_the_bound_logger(ctx: HandlerContext) -> None:
    log = ctx.log
    assert structlog.get_context(copy.copy(log))["seq"] == "104"
    assert structlog.get_context(copy.deepcopy(log))["correlation_id"] == "order-7"
    assert "104" in repr(log)
