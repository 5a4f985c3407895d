"""The seed chain on a moto server with tracing on: spans exported over OTLP/HTTP to a
receiver on loopback, one trace per order holding both hops."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.integration.helpers import (
    chain_done,
    run_orders,
    scan_all,
    seed_config,
    seed_document,
    setup_tables,
    wait_until,
    write_orders,
)
from worker.local.otlp_receiver import TRACES_PATH, OtlpReceiver, ReceivedSpan
from worker.app import App
from worker.config import parse_config
from worker.observability import tracing
from worker.observability.health import HealthServer

pytestmark = pytest.mark.integration

# What a traced client would put on the item it writes: its own trace and span.
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"

SPAN_KIND_INTERNAL, SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER = 1, 4, 5


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets turns tracing on."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def tracing_on(endpoint: str, **extra: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        doc["observability"]["tracing"] = {"enabled": True, "endpoint": endpoint, **extra}
    return mutate


def by_trace(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    traces: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return traces


def only(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    matching = [span for span in spans if span.name == name]
    assert len(matching) == 1, f"expected one {name!r} span, got {[s.name for s in spans]}"
    return matching[0]


async def test_one_trace_per_order_with_both_hops(
    moto_url: str, prefix: str, aws: dict[str, Any], receiver: OtlpReceiver
) -> None:
    ddb = aws["dynamodb"]
    config = seed_config(moto_url, prefix, tracing_on(receiver.traces_url, sampling_ratio=1.0,
                                                      service_name="orders-worker"))
    await setup_tables(config)
    order_ids = [f"o-{i}" for i in range(6)]
    app = App(config)
    await app.start()
    try:
        await write_orders(ddb, config, order_ids)
        # An order written by a traced client: its chain joins the client's trace.
        await ddb.put_item(TableName=config.tables["orders"].name, Item={
            "orderId": {"S": "client-order"}, "status": {"S": "NEW"}, "amount": {"N": "3"},
            "traceparent": {"S": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}})
        await wait_until(lambda: chain_done(ddb, config, [*order_ids, "client-order"]), timeout=60)
    finally:
        await app.stop()  # flushes the exporter
    assert not tracing.enabled()

    spans = list(receiver.spans)
    assert set(receiver.requests) == {TRACES_PATH}
    assert {span.service_name for span in spans} == {"orders-worker"}
    traces = by_trace(spans)
    publishes = [span for span in spans if span.name == "publish ShipmentRequested"]
    trace_of_order = {span.attributes["stream_worker.correlation_id"]: span.trace_id for span in publishes}
    assert sorted(trace_of_order) == sorted([*order_ids, "client-order"])
    assert len(set(trace_of_order.values())) == len(trace_of_order), "each order has a trace of its own"
    assert trace_of_order["client-order"] == CLIENT_TRACE

    events = {e["correlationId"]["S"]: e for e in await scan_all(ddb, config.tables["events"].name)}
    shipments = {s["orderId"]["S"]: s for s in await scan_all(ddb, config.tables["shipments"].name)}
    for order_id, trace_id in trace_of_order.items():
        chain = [span for span in traces[trace_id] if not span.name.startswith("checkpoint")]
        assert sorted(span.name for span in chain) == sorted([
            "deliver order-processing", "handle order-processing", "publish ShipmentRequested",
            "deliver shipment-dispatch", "handle shipment-dispatch"]), order_id
        deliver_order = only(chain, "deliver order-processing")
        handle_order = only(chain, "handle order-processing")
        publish = only(chain, "publish ShipmentRequested")
        deliver_shipment = only(chain, "deliver shipment-dispatch")
        handle_shipment = only(chain, "handle shipment-dispatch")

        # Parent links: order delivery -> handler call -> publish -> (outbox event) ->
        # shipment delivery -> handler call.
        expected_root_parent = CLIENT_SPAN if order_id == "client-order" else ""
        assert deliver_order.parent_span_id == expected_root_parent
        assert handle_order.parent_span_id == deliver_order.span_id
        assert publish.parent_span_id == handle_order.span_id
        assert deliver_shipment.parent_span_id == publish.span_id
        assert handle_shipment.parent_span_id == deliver_shipment.span_id
        # In order: the shipment hop starts after the order's publish began.
        assert deliver_order.start_ns <= handle_order.start_ns <= publish.start_ns
        assert publish.start_ns <= deliver_shipment.start_ns <= handle_shipment.start_ns
        assert (deliver_order.kind, handle_order.kind, publish.kind, deliver_shipment.kind) == (
            SPAN_KIND_CONSUMER, SPAN_KIND_INTERNAL, SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER)

        # The attributes of each hop.
        for span, route, table in ((handle_order, "order-processing", "orders"),
                                   (handle_shipment, "shipment-dispatch", "events")):
            attrs = span.attributes
            assert attrs["stream_worker.route"] == route
            assert attrs["stream_worker.table"] == table
            assert attrs["stream_worker.shard_id"]
            assert attrs["stream_worker.sequence_number"].isdigit()
            assert attrs["stream_worker.attempt"] == 1
            assert attrs["stream_worker.outcome"] == "ok"
        assert handle_order.attributes["stream_worker.sequence_number"] == \
            deliver_order.attributes["stream_worker.sequence_number"]
        # The envelope carried the publish span's context to the shipment hop.
        event = events[order_id]
        version, carried_trace, carried_span, flags = event["traceparent"]["S"].split("-")
        assert (version, carried_trace, carried_span) == ("00", trace_id, publish.span_id)
        assert int(flags, 16) & 1  # sampled
        assert publish.attributes["stream_worker.event_id"] == event["eventId"]["S"]
        assert shipments[order_id]["status"]["S"] == "DISPATCHED"

    # Checkpoint writes are spans of their own, one per write, naming the shard and position.
    checkpoints = [span for span in spans if span.name.startswith("checkpoint ")]
    assert {span.name for span in checkpoints} == {"checkpoint orders", "checkpoint events"}
    assert all(span.parent_span_id == "" and span.attributes["stream_worker.sequence_number"].isdigit()
               for span in checkpoints)

    # Exemplars: the handler histogram links buckets to these traces (OpenMetrics only).
    health = HealthServer("127.0.0.1", 0, alive=lambda: True, ready=lambda: True)
    await health.start()
    try:
        url = f"http://127.0.0.1:{health.port}/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as resp:
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                openmetrics = await resp.text()
            async with session.get(url) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain")
                classic = await resp.text()
    finally:
        await health.close()
    exemplar = re.compile(
        r'^stream_worker_handler_duration_seconds_bucket\{le="[^"]+",route="(?P<route>[^"]+)"\} \S+ '
        r'# \{span_id="(?P<span>[0-9a-f]{16})",trace_id="(?P<trace>[0-9a-f]{32})"\} \S+', re.M)
    found = {(m["route"], m["trace"]) for m in exemplar.finditer(openmetrics)}
    ours = set(trace_of_order.values())
    assert {route for route, trace in found if trace in ours} == {"order-processing", "shipment-dispatch"}, found
    assert "trace_id=" not in classic
    assert openmetrics.rstrip().endswith("# EOF")


async def test_environment_alone_turns_tracing_on(
    moto_url: str, prefix: str, aws: dict[str, Any], receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base_url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    config = parse_config(seed_document(moto_url, prefix), env=dict(os.environ))  # no tracing section
    assert config.observability.tracing.enabled is True
    await setup_tables(config)
    await run_orders(App(config), aws["dynamodb"], config, ["e-1"])

    # The SDK appended the traces path to the base endpoint, as the OTLP spec says.
    assert set(receiver.requests) == {TRACES_PATH}
    names = {span.name for span in receiver.spans}
    assert {"deliver order-processing", "handle shipment-dispatch"} <= names
    assert {span.service_name for span in receiver.spans} == {"from-env"}


async def test_tracing_off_exports_nothing_and_events_carry_no_context(
    moto_url: str, prefix: str, aws: dict[str, Any], receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Explicitly off wins over a collector named in the environment.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.base_url)
    doc = seed_document(moto_url, prefix)
    doc["observability"]["tracing"] = {"enabled": False}
    config = parse_config(doc, env=dict(os.environ))
    assert config.observability.tracing.enabled is False
    await setup_tables(config)
    app = App(config)
    await app.start()
    try:
        assert not tracing.enabled()
        await write_orders(aws["dynamodb"], config, ["off-1", "off-2"])
        await wait_until(lambda: chain_done(aws["dynamodb"], config, ["off-1", "off-2"]), timeout=60)
    finally:
        await app.stop()
    events = await scan_all(aws["dynamodb"], config.tables["events"].name)
    assert len(events) == 2 and all("traceparent" not in event for event in events)
    assert receiver.requests == [] and receiver.spans == []


async def test_sampling_ratio_zero_exports_nothing_but_propagates(
    moto_url: str, prefix: str, aws: dict[str, Any], receiver: OtlpReceiver
) -> None:
    config = seed_config(moto_url, prefix, tracing_on(receiver.traces_url, sampling_ratio=0.0))
    await setup_tables(config)
    await run_orders(App(config), aws["dynamodb"], config, ["s-1", "s-2"])
    assert receiver.spans == []
    # The (unsampled) context still travels, so a downstream service makes the same decision.
    events = await scan_all(aws["dynamodb"], config.tables["events"].name)
    assert len(events) == 2
    for event in events:
        match = re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-(?P<flags>[0-9a-f]{2})", event["traceparent"]["S"])
        assert match is not None and int(match["flags"], 16) & 1 == 0  # not sampled


async def test_parked_record_is_recorded_on_its_delivery_span(
    moto_url: str, prefix: str, aws: dict[str, Any], receiver: OtlpReceiver
) -> None:
    ddb = aws["dynamodb"]
    config = seed_config(moto_url, prefix, tracing_on(receiver.traces_url, sampling_ratio=1.0))
    await setup_tables(config)
    app = App(config)
    await app.start()
    try:
        # A shipment request no handler can process (no orderId), from a traced client.
        await ddb.put_item(TableName=config.tables["events"].name, Item={
            "eventId": {"S": "bad-1"}, "type": {"S": "ShipmentRequested"},
            "payload": {"M": {"action": {"S": "SHIP"}}},
            "traceparent": {"S": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}})

        async def parked() -> bool:
            return len(await scan_all(ddb, config.tables["dead_letters"].name)) == 1
        await wait_until(parked, timeout=30)
    finally:
        await app.stop()
    chain = by_trace(list(receiver.spans))[CLIENT_TRACE]
    deliver = only(chain, "deliver shipment-dispatch")
    handle = only(chain, "handle shipment-dispatch")
    assert deliver.parent_span_id == CLIENT_SPAN and handle.parent_span_id == deliver.span_id
    assert handle.attributes["stream_worker.outcome"] == "error"
    assert handle.attributes["error.type"] == "PermanentError"
    assert [name for name, _ in deliver.events] == ["dead_lettered"]
    attributes = deliver.events[0][1]
    assert attributes["stream_worker.error_class"] == "permanent"
    assert attributes["stream_worker.attempts"] == 1
    assert attributes["stream_worker.sequence_number"] == deliver.attributes["stream_worker.sequence_number"]


async def test_a_handlers_own_spans_join_the_records_trace(
    moto_url: str, prefix: str, aws: dict[str, Any], receiver: OtlpReceiver
) -> None:
    def mutate(doc: dict[str, Any]) -> None:
        tracing_on(receiver.traces_url, sampling_ratio=1.0)(doc)
        doc["routes"][1]["handler"] = "tests.tracing.handlers:traced_dispatch"

    config = seed_config(moto_url, prefix, mutate)
    await setup_tables(config)
    await run_orders(App(config), aws["dynamodb"], config, ["h-1"])
    spans = list(receiver.spans)
    handle = only(spans, "handle shipment-dispatch")
    custom = only(spans, "carrier booking")
    assert (custom.trace_id, custom.parent_span_id) == (handle.trace_id, handle.span_id)
    assert custom.attributes["carrier"] == "test-post"


async def test_a_batch_delivery_starts_its_own_trace_and_links_each_records(
    moto_url: str, prefix: str, aws: dict[str, Any], receiver: OtlpReceiver
) -> None:
    from tests.tracing import handlers

    def mutate(doc: dict[str, Any]) -> None:
        tracing_on(receiver.traces_url, sampling_ratio=1.0)(doc)
        doc["routes"] = [{"name": "order-batches", "table": "orders", "events": ["INSERT"],
                          "batch_handler": "tests.tracing.handlers:note_batch", "batch_size": 10}]

    config = seed_config(moto_url, prefix, mutate)
    await setup_tables(config)
    ddb = aws["dynamodb"]
    clients = {f"b-{i}": (f"{i + 1:032x}", f"{i + 1:016x}") for i in range(3)}
    # Written before the worker starts: one page, one batch.
    for order_id, (trace_id, span_id) in clients.items():
        await ddb.put_item(TableName=config.tables["orders"].name, Item={
            "orderId": {"S": order_id}, "status": {"S": "NEW"},
            "traceparent": {"S": f"00-{trace_id}-{span_id}-01"}})
    await ddb.put_item(TableName=config.tables["orders"].name,
                       Item={"orderId": {"S": "b-untraced"}, "status": {"S": "NEW"}})
    handlers.batches.clear()
    app = App(config)
    await app.start()
    try:
        async def handled() -> bool:
            return sum(len(batch) for batch in handlers.batches) == 4
        await wait_until(handled, timeout=30)
    finally:
        await app.stop()
    assert handlers.batches == [["b-0", "b-1", "b-2", "b-untraced"]]
    deliver = only(list(receiver.spans), "deliver order-batches")
    handle = only(list(receiver.spans), "handle order-batches")
    assert deliver.parent_span_id == "" and deliver.trace_id not in {t for t, _ in clients.values()}
    assert sorted(deliver.links) == sorted(clients.values())
    assert deliver.attributes["stream_worker.records"] == 4
    assert handle.parent_span_id == deliver.span_id
    assert handle.attributes["stream_worker.records"] == 4
    first, last = (int(handle.attributes[f"stream_worker.{key}"]) for key in ("sequence_number", "last_sequence_number"))
    assert first < last
