"""A shipment handler that adds a span of its own through the OpenTelemetry API, as a
user's handler would."""

from __future__ import annotations

from opentelemetry import trace

from worker.handlers.shipments import dispatch_shipment
from worker.processing.context import HandlerContext
from worker.records import StreamRecord

tracer = trace.get_tracer(__name__)  # at import, before any worker started tracing


async def traced_dispatch(record: StreamRecord, ctx: HandlerContext) -> None:
    with tracer.start_as_current_span("carrier booking") as span:
        span.set_attribute("carrier", "test-post")
        await dispatch_shipment(record, ctx)


batches: list[list[str]] = []  # order ids of each batch call


async def note_batch(records: list[StreamRecord], ctx: HandlerContext) -> None:
    batches.append([str((record.new_image or {}).get("orderId")) for record in records])
