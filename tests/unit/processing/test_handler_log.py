"""The handler's ``ctx.log``: bound to its record on first use, and usable like the logger."""

from __future__ import annotations

import copy

import structlog
from structlog.testing import capture_logs

from worker.processing.delivery import DeliveryServices, RouteDelivery
from worker.processing.progress import ShardProgress
from worker.processing.router import Route
from tests.unit.pipeline_fakes import make_record


async def _noop(record: object, ctx: object) -> None:
    return None


def _context() -> object:
    route = Route(name="r", table="orders", events=frozenset({"INSERT"}), new_image={}, old_image={},
                  handler=_noop, options={})
    services = DeliveryServices(publisher=None, tables=None, config=None,  # type: ignore[arg-type]
                                worker_id="w", observers=[])
    delivery = RouteDelivery(route, services, None, progress=ShardProgress())
    return delivery._invoker.context(make_record(3, "order-7"))  # noqa: SLF001 - what the handler gets


def test_log_lines_carry_route_record_and_correlation_id() -> None:
    ctx = _context()
    with capture_logs() as lines:
        ctx.log.info("set order processing", order_id="order-7")  # type: ignore[attr-defined]
        ctx.log.bind(step=2).warning("again")  # type: ignore[attr-defined]
    assert lines[0]["event"] == "set order processing"
    assert {k: lines[0][k] for k in ("route", "stream", "seq", "correlation_id")} == {
        "route": "r", "stream": "orders", "seq": "104", "correlation_id": "order-7"}
    assert lines[1]["step"] == 2 and lines[1]["seq"] == "104"


def test_copies_and_repr_give_the_bound_logger() -> None:
    log = _context().log  # type: ignore[attr-defined]
    assert structlog.get_context(copy.copy(log))["seq"] == "104"
    assert structlog.get_context(copy.deepcopy(log))["correlation_id"] == "order-7"
    assert "104" in repr(log)
