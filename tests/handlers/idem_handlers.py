"""Handlers for the idempotency tests: an effect that is NOT idempotent by itself (a
counter incremented with ADD), made idempotent with @idempotent."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from worker import HandlerContext, StreamRecord, idempotent
from worker.idempotency import IdempotencyStore

calls: list[str] = []
fail_after_effect: set[str] = set()  # raise after the effect, once
die_mid_call: set[str] = set()  # the process "dies" after the effect (BaseException), once


class Clock:
    """Epoch seconds, movable: expires claims and rows without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


clock = Clock()
store = IdempotencyStore("idempotency", expires_after_seconds=600, clock=clock)


def reset() -> None:
    calls.clear()
    fail_after_effect.clear()
    die_mid_call.clear()
    clock.offset = 0.0


async def _charge(record: StreamRecord, ctx: HandlerContext) -> dict[str, Any]:
    key = str(record.keys["id"])
    calls.append(key)
    charges = await ctx.table("charges")
    await charges.update_item(Key={"id": key}, UpdateExpression="ADD charged :one",
                              ExpressionAttributeValues={":one": 1})
    if key in fail_after_effect:
        fail_after_effect.discard(key)
        raise RuntimeError("failed after the effect")
    if key in die_mid_call:
        die_mid_call.discard(key)
        raise SystemExit("the process died here")
    return {"receipt": f"r-{key}", "attempt": ctx.attempt}


charge = idempotent(key=lambda record: record.keys["id"], table=store)(_charge)


@idempotent(key=lambda record: record.keys["id"], table=store)
async def refund(record: StreamRecord, ctx: HandlerContext) -> str:
    calls.append(f"refund:{record.keys['id']}")
    return "refunded"


@idempotent(key=lambda record: record.keys["id"], table="no-such-table")
async def misconfigured(record: StreamRecord, ctx: HandlerContext) -> None:
    return None


@idempotent(key=lambda record: record.keys["id"], table="idempotency")
async def charge_then_die(record: StreamRecord, ctx: HandlerContext) -> None:
    """For the kill test: the effect, then (when the environment says so) SIGKILL of the
    whole worker after the effect and the idempotency row, before the checkpoint."""
    await _charge(record, ctx)


async def charge_and_maybe_get_killed(record: StreamRecord, ctx: HandlerContext) -> None:
    await charge_then_die(record, ctx)
    if os.environ.get("IDEM_TEST_KILL_AFTER_EFFECT") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
