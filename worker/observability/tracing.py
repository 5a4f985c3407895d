"""OpenTelemetry tracing: every span the worker makes, and the W3C trace context it carries.

Off unless configured (``observability.tracing``, or the standard ``OTEL_EXPORTER_OTLP_*``
endpoint variables: see ``worker/config.py``). While off, every hook below is one check of a
module global and returns a shared no-op, and ``opentelemetry`` is never imported, so the
``otel`` extra stays optional.

The spans, and why they are shaped so (docs/operations.md shows them in a backend):

* ``deliver <route>`` (CONSUMER): one per delivery of a lane's batch to a route (for
  per-record routes: one record, across all its attempts). Its parent is the trace context
  the record carries: the ``traceparent`` attribute of its new image, which an event
  published by a traced worker has in its envelope and which any client may put on an item
  it writes. So an order's whole chain (order processing, the outbox event, shipment
  dispatch) is one trace, and an item written by a traced client joins the client's trace.
  A batch of several records starts a trace of its own and links each record's context.
* ``handle <route>`` (INTERNAL): one per handler call, child of the delivery; route, table,
  shard, sequence numbers, attempt and outcome as attributes, the error recorded.
* ``publish <event type>`` (PRODUCER): one per published event, child of the handler call;
  its context is what the event's envelope carries on (``Event.traceparent``).
* A dead-letter park is an event (``dead_lettered``) on the delivery span.
* ``checkpoint <table>``: one per checkpoint write. A write covers the records of many
  traces, so it is a root span of its own (sampled at the configured ratio).

Histograms get the current trace as an exemplar (:func:`exemplar`), shown by the
OpenMetrics exposition of ``/metrics`` (worker/observability/health.py).

One tracer per process: :func:`start` installs it, :func:`stop` flushes and removes it. It is
not installed as OpenTelemetry's global provider, so a process that embeds the worker keeps
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ContextManager, Iterator, Sequence

import structlog

from worker import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from worker.config import TracingConfig
    from worker.processing.router import Route
    from worker.publishing.base import Publisher
    from worker.publishing.events import Event
    from worker.records import StreamRecord

log = structlog.get_logger(__name__)

_NOOP: ContextManager[None] = contextlib.nullcontext()


class _Active:
    """The running tracer and the provider that flushes it."""

    def __init__(self, provider: "TracerProvider", tracer: "Tracer") -> None:
        self.provider = provider
        self.tracer = tracer


_active: _Active | None = None

# Handler calls made so far by the delivery running in this task (the attempt number).
_calls: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("stream_worker_calls", default=None)


def enabled() -> bool:
    return _active is not None


# -- set-up --------------------------------------------------------------------------------


def start(config: "TracingConfig", *, worker_id: str) -> bool:
    """Install the tracer when ``config.enabled`` (settled by the config loader). True if on."""
    global _active
    if not config.enabled:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    service = config.service_name or os.environ.get("OTEL_SERVICE_NAME") or "stream-worker"
    resource = Resource.create(
        {"service.name": service, "service.version": __version__, "service.instance.id": worker_id}
    )
    # No ratio configured: the SDK's own OTEL_TRACES_SAMPLER / _ARG (default: parent-based, all).
    sampler = None if config.sampling_ratio is None else ParentBased(TraceIdRatioBased(config.sampling_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler)
    # Unset endpoint and headers: the exporter reads the OTEL_EXPORTER_OTLP_* variables itself.
    exporter = OTLPSpanExporter(
        endpoint=config.endpoint, headers=dict(config.headers) or None, timeout=config.export_timeout_seconds
    )
    # Spans are exported from the processor's own thread, in batches; a full queue drops
    # spans rather than slowing the records down.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _active = _Active(provider, provider.get_tracer("stream-worker", __version__))
    log.info("start tracing", service=service, endpoint=config.endpoint or _env_endpoint(),
             sampling_ratio=config.sampling_ratio)
    return True


def _env_endpoint() -> str | None:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")


async def stop() -> None:
    """Export what is buffered and remove the tracer. Idempotent."""
    global _active
    active, _active = _active, None
    if active is not None:
        # Shutting down flushes over HTTP: off the event loop.
        await asyncio.to_thread(active.provider.shutdown)


def _tracer() -> "Tracer | None":
    return _active.tracer if _active is not None else None


# -- trace context in records and events ---------------------------------------------------


def _carried_context(record: "StreamRecord") -> Any:
    """The trace context a record carries (its new image's ``traceparent``), or None."""
    image = record.raw.get("dynamodb", {}).get("NewImage")
    if not image:
        return None
    parent = image.get("traceparent")
    if not isinstance(parent, dict) or not isinstance(parent.get("S"), str):
        return None
    carrier = {"traceparent": parent["S"]}
    state = image.get("tracestate")
    if isinstance(state, dict) and isinstance(state.get("S"), str):
        carrier["tracestate"] = state["S"]
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # A malformed value gives an empty context: the record starts a trace of its own.
    return TraceContextTextMapPropagator().extract(carrier)


def _inject() -> str | None:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


# -- hooks on the record path --------------------------------------------------------------


def delivery(route: "Route", records: Sequence["StreamRecord"]) -> ContextManager[Any]:
    """Around one delivery of ``records`` to ``route`` (all attempts, parks included)."""
    if _active is None:
        return _NOOP
    return _delivery(_active.tracer, route, records)


@contextlib.contextmanager
def _delivery(tracer: "Tracer", route: "Route", records: Sequence["StreamRecord"]) -> Iterator["Span"]:
    from opentelemetry.trace import Link, SpanKind, get_current_span

    parent = None
    links = []
    if len(records) == 1:
        parent = _carried_context(records[0])
    else:
        for record in records:
            carried = _carried_context(record)
            if carried is not None:
                links.append(Link(get_current_span(carried).get_span_context()))
    attributes = _record_attributes(route, records)
    calls_token = _calls.set([0])
    try:
        with tracer.start_as_current_span(
            f"deliver {route.name}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links,
        ) as span:
            yield span
    finally:
        _calls.reset(calls_token)


def handler_call(route: "Route", records: Sequence["StreamRecord"]) -> ContextManager[Any]:
    """Around one handler call; the span's outcome is ``error`` if the call raised."""
    if _active is None:
        return _NOOP
    return _handler_call(_active.tracer, route, records)


@contextlib.contextmanager
def _handler_call(tracer: "Tracer", route: "Route", records: Sequence["StreamRecord"]) -> Iterator["Span"]:
    from opentelemetry.trace import SpanKind

    calls = _calls.get()
    attempt = 1
    if calls is not None:
        calls[0] += 1
        attempt = calls[0]
    attributes = _record_attributes(route, records)
    # Per-record routes: the attempt at this record. Batch routes: the call number within
    # this delivery (bisected halves count as calls).
    attributes["stream_worker.attempt"] = attempt
    with tracer.start_as_current_span(f"handle {route.name}", kind=SpanKind.INTERNAL, attributes=attributes) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("stream_worker.outcome", "error")
            span.set_attribute("error.type", type(exc).__name__)
            raise
        span.set_attribute("stream_worker.outcome", "ok")


def _record_attributes(route: "Route", records: Sequence["StreamRecord"]) -> dict[str, Any]:
    first = records[0]
    attributes: dict[str, Any] = {
        "stream_worker.route": route.name,
        "stream_worker.table": route.table,
        "stream_worker.shard_id": first.shard_id,
        "stream_worker.sequence_number": first.sequence_number,
        "stream_worker.records": len(records),
        "aws.dynamodb.stream_arn": first.stream_arn,
        "messaging.system": "aws_dynamodb_streams",
    }
    if len(records) > 1:
        attributes["stream_worker.last_sequence_number"] = records[-1].sequence_number
    return attributes


def record_park(record: "StreamRecord", error_class: str, attempts: int, error: BaseException) -> None:
    """A record was parked in the dead-letter destination: an event on the delivery span."""
    if _active is None:
        return
    from opentelemetry.trace import get_current_span

    get_current_span().add_event("dead_lettered", {
        "stream_worker.sequence_number": record.sequence_number,
        "stream_worker.error_class": error_class,
        "stream_worker.attempts": attempts,
        "error.type": type(error).__name__,
    })


def checkpoint(stream_label: str, shard_id: str, sequence_number: str) -> ContextManager[Any]:
    """Around one checkpoint write (a root span: see the module docstring)."""
    if _active is None:
        return _NOOP
    from opentelemetry import context as otel_context
    from opentelemetry.trace import SpanKind

    return _active.tracer.start_as_current_span(
        f"checkpoint {stream_label}", context=otel_context.Context(), kind=SpanKind.CLIENT,
        attributes={"stream_worker.table": stream_label, "stream_worker.shard_id": shard_id,
                    "stream_worker.sequence_number": sequence_number},
    )


def exemplar() -> dict[str, str] | None:
    """The current trace as a Prometheus exemplar, when it is sampled (else None)."""
    if _active is None:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


# -- publishing ----------------------------------------------------------------------------


class TracedPublisher:
    """Publishes through ``inner`` inside a ``publish`` span whose context the event carries."""

    def __init__(self, inner: "Publisher", tracer: "Tracer") -> None:
        self._inner = inner
        self._tracer = tracer

    async def publish(self, event: "Event") -> None:
        from opentelemetry.trace import SpanKind

        with self._tracer.start_as_current_span(
            f"publish {event.type}", kind=SpanKind.PRODUCER,
            attributes={"stream_worker.event_id": event.id, "stream_worker.event_type": event.type,
                        "stream_worker.correlation_id": event.correlation_id},
        ):
            await self._inner.publish(replace(event, traceparent=_inject()))

    async def close(self) -> None:
        await self._inner.close()


def traced_publisher(publisher: "Publisher") -> "Publisher":
    """``publisher`` itself while tracing is off; else one that traces and propagates."""
    if _active is None:
        return publisher
    return TracedPublisher(publisher, _active.tracer)
