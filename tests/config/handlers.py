"""Handler targets for the config tests: right and wrong shapes, a publisher user, a failure."""

from __future__ import annotations

from typing import Any

from worker.publishing.events import Event
from worker.records import StreamRecord


async def one_argument(record: Any) -> None:
    return None


async def per_record(record: Any, ctx: Any) -> None:
    return None


async def with_keyword_only(record: Any, ctx: Any, *, verbose: bool = False) -> None:
    return None


async def three_arguments(record: Any, ctx: Any, extra: Any) -> None:
    return None


async def batch(records: list[Any], ctx: Any) -> None:
    return None


async def publishing(record: Any, ctx: Any) -> None:
    await ctx.publisher.publish(Event.derive(type="AuditWritten", source="tests", dedup_key=record.sequence_number,
                                             correlation_id="c", causation_id=record.event_id, time=None,
                                             payload={}))


async def missing_currency(record: Any, ctx: Any) -> None:
    payment = dict(record.new_image or {})
    total = payment["currency"]  # the line the traceback tests look for: KeyError here
    ctx.log.info("never reached", total=total)


async def typed_batch(records: list[StreamRecord], ctx: Any) -> None:
    return None


async def typed_record(record: StreamRecord, ctx: Any) -> None:
    return None
