"""OpenTelemetry tracing: every span the worker makes, and the W3C trace context it carries.

Off unless configured (``observability.tracing``, or the standard ``OTEL_EXPORTER_OTLP_*``
endpoint variables: see ``worker/config.py``). While off, every hook below is one check of a
module global and returns a shared no-op, and ``opentelemetry`` is never imported, so the
``otel`` extra stays optional.

The spans, and why they are shaped so (docs/operations.md shows them in a backend):

* ``deliver <route>`` (CONSUMER): one per delivery of a key scheduler's batch to a route (for
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

One tracer per process: :func:`start` installs it, :func:`stop` flushes and removes it. It
also becomes OpenTelemetry's global tracer provider unless the process set one already (an
application that embeds the worker keeps its own), so a handler's own spans
(``opentelemetry.trace.get_tracer(__name__)``) land in the record's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ContextManager, Sequence

import structlog

from worker.version import __version__

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
    """The running tracer, the provider that flushes it, and the OpenTelemetry names the
    hooks use (imported once, here, not on every call)."""

    def __init__(self, provider: "TracerProvider", tracer: "Tracer") -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = tracer
        self.attach = context.attach
        self.detach = context.detach
        self.empty_context = context.Context
        self.in_context = trace.set_span_in_context
        self.current_span = trace.get_current_span
        self.Link = Link
        self.kinds = SpanKind
        self._status, self._error_code = Status, StatusCode.ERROR
        self.propagator = TraceContextTextMapPropagator()


    def error(self, description: str) -> Any:
        return self._status(self._error_code, description)


_active: _Active | None = None
_users = 0  # workers of this process that started tracing and have not stopped yet

# Handler calls made so far by the delivery running in this task (the attempt number).
_calls: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("stream_worker_calls", default=None)


def enabled() -> bool:
    return _active is not None


# -- set-up --------------------------------------------------------------------------------


def start(config: "TracingConfig", *, worker_id: str) -> bool:
    """Install the tracer when ``config.enabled`` (settled by the config loader). True if on.

    One tracer per process: a second worker in the process (tests, embedding) shares the
    first one's, and the last :func:`stop` flushes it."""
    global _active, _users
    if not config.enabled:
        return False
    if _active is not None:
        _users += 1
        return True
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
    _users = 1
    _install_global_provider()
    log.info("start tracing", service=service, endpoint=config.endpoint or _env_endpoint(),
             sampling_ratio=config.sampling_ratio)
    return True


def _install_global_provider() -> None:
    """Make OpenTelemetry's global provider one that forwards to the running tracer (once a
    process, and only if nobody set one): handlers' own spans then join the record's trace,
    also across the stop and start of workers in one process (tests)."""
    from opentelemetry import trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return  # set already: by an earlier start, or by the application that embeds us

    class ForwardingTracer(trace.Tracer):
        def __init__(self, name: str, version: str | None) -> None:
            self._name, self._version = name, version

        def _target(self) -> "Tracer":
            active = _active
            if active is None:
                return trace.NoOpTracer()
            return active.provider.get_tracer(self._name, self._version)

        def start_span(self, *args: Any, **kwargs: Any) -> "Span":
            return self._target().start_span(*args, **kwargs)

        def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
            return self._target().start_as_current_span(*args, **kwargs)

    class ForwardingProvider(trace.TracerProvider):
        def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                       *args: Any, **kwargs: Any) -> "Tracer":
            return ForwardingTracer(instrumenting_module_name, instrumenting_library_version)

    trace.set_tracer_provider(ForwardingProvider())


def _env_endpoint() -> str | None:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")


async def stop() -> None:
    """Undo one :func:`start` that returned True; the last one exports what is buffered and
    removes the tracer. Harmless when tracing is off."""
    global _active, _users
    _users = max(_users - 1, 0)
    if _users:
        return
    active, _active = _active, None
    if active is not None:
        # Shutting down flushes over HTTP: off the event loop.
        await asyncio.to_thread(active.provider.shutdown)


# -- trace context in records and events ---------------------------------------------------


def _carried_context(active: _Active, record: "StreamRecord") -> Any:
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
    # A malformed value gives an empty context: the record starts a trace of its own.
    return active.propagator.extract(carrier)


# -- spans ---------------------------------------------------------------------------------


class _Scope:
    """A span made current for a ``with`` block and ended after it; an exception is
    recorded on it. (What ``start_as_current_span`` does, without its generator layers.)"""

    __slots__ = ("_active", "span", "_token", "_outcome")

    def __init__(self, active: _Active, span: "Span", outcome: bool = False) -> None:
        self._active = active
        self.span = span
        self._outcome = outcome  # set stream_worker.outcome ok / error
        self._token: Any = None

    def __enter__(self) -> "Span":
        self._token = self._active.attach(self._active.in_context(self.span))
        return self.span

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        span = self.span
        self._active.detach(self._token)
        if error is not None:
            if span.is_recording():
                span.record_exception(error)
                span.set_status(self._active.error(f"{type(error).__name__}: {error}"))
                if self._outcome:
                    span.set_attributes({"stream_worker.outcome": "error", "error.type": type(error).__name__})
        elif self._outcome:
            span.set_attribute("stream_worker.outcome", "ok")
        span.end()


class _DeliveryScope(_Scope):
    __slots__ = ("_calls_token",)

    def __enter__(self) -> "Span":
        self._calls_token = _calls.set([0])
        return super().__enter__()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        try:
            super().__exit__(kind, error, tb)
        finally:
            _calls.reset(self._calls_token)


def delivery(route: "Route", records: Sequence["StreamRecord"]) -> ContextManager[Any]:
    """Around one delivery of ``records`` to ``route`` (all attempts, parks included)."""
    active = _active
    if active is None:
        return _NOOP
    parent = None
    links = []
    if len(records) == 1:
        parent = _carried_context(active, records[0])
    else:
        for record in records:
            carried = _carried_context(active, record)
            if carried is not None:
                links.append(active.Link(active.current_span(carried).get_span_context()))
    span = active.tracer.start_span(
        f"deliver {route.name}", context=parent, kind=active.kinds.CONSUMER, links=links, record_exception=False,
    )
    if span.is_recording():  # attributes only for sampled spans: most records are not, at low ratios
        span.set_attributes(_record_attributes(route, records))
    return _DeliveryScope(active, span)


def _unsampled(active: _Active) -> bool:
    """The current span exists and is not sampled: its children would not be either (the
    sampler is parent-based), so they are not made; its context still propagates."""
    current = active.current_span()
    return not current.is_recording() and current.get_span_context().is_valid


def handler_call(route: "Route", records: Sequence["StreamRecord"]) -> ContextManager[Any]:
    """Around one handler call; the span's outcome is ``error`` if the call raised."""
    active = _active
    if active is None:
        return _NOOP
    calls = _calls.get()
    attempt = 1
    if calls is not None:
        calls[0] += 1
        attempt = calls[0]
    if _unsampled(active):
        return _NOOP
    attributes = _record_attributes(route, records)
    # Per-record routes: the attempt at this record. Batch routes: the call number within
    # this delivery (bisected halves count as calls).
    attributes["stream_worker.attempt"] = attempt
    span = active.tracer.start_span(f"handle {route.name}", kind=active.kinds.INTERNAL, attributes=attributes,
                                    record_exception=False)
    return _Scope(active, span, outcome=True)


def _record_attributes(route: "Route", records: Sequence["StreamRecord"]) -> dict[str, Any]:
    first = records[0]
    attributes: dict[str, Any] = {
        "stream_worker.route": route.name,
        "stream_worker.table": route.table,
        "stream_worker.shard_id": first.shard_id,
        "stream_worker.sequence_number": first.sequence_number,
        "stream_worker.records": len(records),
    }
    if len(records) > 1:
        attributes["stream_worker.last_sequence_number"] = records[-1].sequence_number
    return attributes


def record_park(record: "StreamRecord", error_class: str, attempts: int, error: BaseException) -> None:
    """A record was parked in the dead-letter destination: an event on the delivery span."""
    active = _active
    if active is None:
        return
    active.current_span().add_event("dead_lettered", {
        "stream_worker.sequence_number": record.sequence_number,
        "stream_worker.error_class": error_class,
        "stream_worker.attempts": attempts,
        "error.type": type(error).__name__,
    })


def checkpoint(stream_label: str, shard_id: str, sequence_number: str) -> ContextManager[Any]:
    """Around one checkpoint write (a root span: see the module docstring)."""
    active = _active
    if active is None:
        return _NOOP
    span = active.tracer.start_span(
        f"checkpoint {stream_label}", context=active.empty_context(), kind=active.kinds.CLIENT,
        attributes={"stream_worker.table": stream_label, "stream_worker.shard_id": shard_id,
                    "stream_worker.sequence_number": sequence_number},
        record_exception=False,
    )
    return _Scope(active, span)


def exemplar() -> dict[str, str] | None:
    """The current trace as a Prometheus exemplar, when it is sampled (else None)."""
    active = _active
    if active is None:
        return None
    context = active.current_span().get_span_context()
    if not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


# -- publishing ----------------------------------------------------------------------------


class TracedPublisher:
    """Publishes through ``inner`` inside a ``publish`` span whose context the event carries."""

    def __init__(self, inner: "Publisher", active: _Active) -> None:
        self._inner = inner
        self._active = active

    async def publish(self, event: "Event") -> None:
        active = self._active
        if _unsampled(active):
            await self._inner.publish(replace(event, traceparent=self._traceparent()))
            return
        span = active.tracer.start_span(
            f"publish {event.type}", kind=active.kinds.PRODUCER, record_exception=False,
            attributes={"stream_worker.event_id": event.id, "stream_worker.event_type": event.type,
                        "stream_worker.correlation_id": event.correlation_id},
        )
        with _Scope(active, span):
            await self._inner.publish(replace(event, traceparent=self._traceparent()))

    def _traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        self._active.propagator.inject(carrier)
        return carrier.get("traceparent")

    async def close(self) -> None:
        await self._inner.close()


def traced_publisher(publisher: "Publisher") -> "Publisher":
    """``publisher`` itself while tracing is off; else one that traces and propagates."""
    if _active is None:
        return publisher
    return TracedPublisher(publisher, _active)
