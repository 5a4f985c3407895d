"""Property tests, no AWS: raw stream records built from arbitrary DynamoDB values decode
back to those values, and odd records (unknown event names, missing images, odd keys)
are routed or acknowledged by the real Router + ShardPipeline without an exception.

Records are built the way botocore hands them to the worker: attribute values serialized
with boto3's ``TypeSerializer`` (``B``/``BS`` values stay ``bytes``), the sequence number a
decimal string, ``ApproximateCreationDateTime`` a ``datetime``; and in the form the fast
GetRecords path (``reader.fast_decode``) hands over, ``json.loads`` of the wire: binary
values as base64 text, the creation time as epoch seconds. Both must decode the same.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeSerializer
from dateutil.tz import tzlocal
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tests.integration.helpers import seed_document
from worker.config import parse_config
from worker.deadletter import DeadLetter
from worker.errors import PermanentError
from worker.processing.pipeline import ShardPipeline
from worker.processing.router import Route, Router, build_route
from worker.processing.progress import ShardProgress
from worker.records import EventName, StreamRecord
from worker.testing import make_record

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
SHARD = "shardId-00000001700000000000-0000abcd"
_serialize = TypeSerializer().serialize
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- DynamoDB values ---------------------------------------------------------------------


def _decimal(significand: int, exponent: int) -> Decimal:
    return Decimal(f"{significand}E{exponent}")  # exact: no context rounding


# DynamoDB numbers: at most 38 significant digits, magnitude 1E-130 .. 9.99..E+125 (boto3's
# context is a bit narrower below: Emin -128). Keep the adjusted exponent in [-128, 125].
numbers = (
    st.builds(_decimal, st.integers(-(10**38) + 1, 10**38 - 1), st.integers(-128 - 37, 125))
    .filter(lambda d: -128 <= d.adjusted() <= 125)
    | st.integers(-(10**38) + 1, 10**38 - 1)
)
scalars = st.text(max_size=20) | numbers | st.binary(max_size=20) | st.booleans() | st.none()
sets = (
    st.sets(st.text(max_size=8), min_size=1, max_size=4)
    | st.sets(numbers, min_size=1, max_size=4)
    | st.sets(st.binary(max_size=8), min_size=1, max_size=4)
)
attribute_names = st.text(min_size=1, max_size=12)
values = st.recursive(
    scalars | sets,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(attribute_names, children, max_size=4),
    max_leaves=25,
)
images = st.dictionaries(attribute_names, values, max_size=8)
key_values = st.text(min_size=1, max_size=20) | numbers | st.binary(min_size=1, max_size=20)
keys = st.fixed_dictionaries({"pk": key_values}, optional={"sk": key_values})
sequence_numbers = st.integers(10**20, 10**40 - 1).map(str)
creation_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([timezone.utc, tzlocal(), timezone(timedelta(hours=-7, minutes=-30))]),
)


def typed(image: dict[str, Any]) -> dict[str, Any]:
    return {name: _serialize(value) for name, value in image.items()}


def raw_record(
    keys: dict[str, Any], new: dict[str, Any] | None, old: dict[str, Any] | None, sequence: str,
    created: Any, event: Any = "MODIFY",
) -> dict[str, Any]:
    """A raw record as botocore returns it, built with worker.testing; what the fuzz varies
    beyond a well-formed record (odd event names, creation-time forms) is set afterwards."""
    record = make_record("MODIFY", keys, new, old, sequence_number=sequence, stream_arn=ARN, shard_id=SHARD,
                         event_id=f"ev-{sequence}")
    raw = dict(record.raw)
    ddb = raw["dynamodb"] = dict(raw["dynamodb"])
    if created is None:
        del ddb["ApproximateCreationDateTime"]
    else:
        ddb["ApproximateCreationDateTime"] = created
    if event is None:
        del raw["eventName"]
    else:
        raw["eventName"] = event
    return raw


def _wire_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return round(value.timestamp(), 3)
    raise TypeError(type(value).__name__)


def as_wire(raw: dict[str, Any]) -> dict[str, Any]:
    """The record as the worker's fast GetRecords path hands it over (``json.loads`` of the
    response body): binary values as base64 text, the creation time as epoch seconds."""
    return json.loads(json.dumps(raw, default=_wire_default))  # type: ignore[no-any-return]


forms = st.sampled_from(["sdk", "wire"])


def in_form(raw: dict[str, Any], form: str) -> dict[str, Any]:
    return as_wire(raw) if form == "wire" else raw


def close_in_time(a: datetime | None, b: datetime) -> bool:
    return a is not None and a.tzinfo is not None and abs((a - b).total_seconds()) < 0.001


def plain(value: Any) -> Any:
    """Decoded values with boto3's Binary wrapper unwrapped, for exact type comparisons."""
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, set):
        return {plain(v) for v in value}
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


def same(decoded: Any, original: Any) -> bool:
    """Equal values AND the types a handler relies on (Decimal numbers, bytes, bool, set, ...)."""
    decoded, original = plain(decoded), plain(original)
    if type(decoded) is not type(original):
        return False
    if isinstance(original, dict):
        return decoded.keys() == original.keys() and all(same(decoded[k], original[k]) for k in original)
    if isinstance(original, list):
        return len(decoded) == len(original) and all(same(a, b) for a, b in zip(decoded, original))
    if isinstance(original, Decimal):
        return decoded == original and not decoded.is_nan()
    return bool(decoded == original)


# -- decoding ----------------------------------------------------------------------------


@FUZZ
@given(keys, images, images, sequence_numbers, creation_times, forms)
def test_images_and_keys_decode_to_the_original_values(
    key: dict[str, Any], new: dict[str, Any], old: dict[str, Any], sequence: str, created: datetime, form: str
) -> None:
    raw = in_form(raw_record(key, new, old, sequence, created), form)
    pristine = copy.deepcopy(raw)
    record = StreamRecord(raw, table="orders", stream_arn=ARN, shard_id=SHARD)

    assert same(record.keys, key)
    assert same(record.new_image, {**new, **key})
    assert same(record.old_image, {**old, **key})
    assert record.new_image is record.new_image  # decoded once, cached
    assert raw == pristine  # decoding never touches the wire dict
    assert record.event_name is EventName.MODIFY
    assert close_in_time(record.approximate_creation_time, created)
    assert record.sequence_number == sequence and record.sequence_int == int(sequence)


@FUZZ
@given(keys, keys, sequence_numbers, forms)
def test_item_key_is_stable_and_tells_keys_apart(
    first: dict[str, Any], second: dict[str, Any], sequence: str, form: str
) -> None:
    a_raw = in_form(raw_record(first, None, None, sequence, None), form)
    a = StreamRecord(a_raw, table="orders", stream_arn=ARN, shard_id=SHARD)
    b_raw = copy.deepcopy(a_raw)
    b_raw["dynamodb"]["Keys"] = dict(reversed(list(a_raw["dynamodb"]["Keys"].items())))
    b = StreamRecord(b_raw, table="orders", stream_arn=ARN, shard_id=SHARD)
    c = StreamRecord(in_form(raw_record(second, None, None, sequence, None), form), table="orders",
                     stream_arn=ARN, shard_id=SHARD)

    assert a.item_key == a.item_key == b.item_key
    assert same(a.keys, first) and same(c.keys, second)
    assert isinstance(a.item_key, str)
    json.loads(a.item_key)  # a JSON text, whatever the key types (bytes included)
    # Different wire keys (type or value) never share an item key.
    assert (a.item_key == c.item_key) == (typed(first) == typed(second))


@FUZZ
@given(st.lists(sequence_numbers, min_size=2, max_size=6))
def test_sequence_numbers_of_21_to_40_digits_order_as_integers(sequences: list[str]) -> None:
    records = [StreamRecord(raw_record({"pk": "k"}, None, None, s, None), table="orders", stream_arn=ARN,
                            shard_id=SHARD) for s in sequences]

    assert [r.sequence_int for r in records] == [int(s) for s in sequences]
    assert all(21 <= len(r.sequence_number) <= 40 for r in records)
    by_int = sorted(records, key=lambda r: r.sequence_int)
    assert [r.sequence_number for r in by_int] == sorted(sequences, key=int)


@FUZZ
@given(creation_times, st.sampled_from(["int", "float", "decimal", "str"]))
def test_creation_time_accepts_datetimes_and_epoch_numbers(created: datetime, form: str) -> None:
    epoch = created.timestamp()
    value: Any = {"int": int(epoch), "float": epoch, "decimal": Decimal(repr(epoch)), "str": repr(epoch)}[form]
    from_epoch = StreamRecord(raw_record({"pk": "k"}, None, None, "1" * 21, value), table="orders",
                              stream_arn=ARN, shard_id=SHARD).approximate_creation_time
    from_datetime = StreamRecord(raw_record({"pk": "k"}, None, None, "1" * 21, created), table="orders",
                                 stream_arn=ARN, shard_id=SHARD).approximate_creation_time

    assert from_datetime is created
    assert from_epoch is not None and from_epoch.tzinfo is not None  # comparable with aware datetimes
    expected = epoch if form != "int" else int(epoch)
    assert abs(from_epoch.timestamp() - expected) < 1e-3
    assert abs((from_epoch - created).total_seconds()) < 1.001  # int epochs drop the fraction


def test_odd_raw_records_decode_or_fail_with_clear_errors() -> None:
    bare = StreamRecord({"eventID": "e", "eventName": "REMOVE", "dynamodb": {"SequenceNumber": "1" * 25}},
                        table="orders", stream_arn=ARN, shard_id=SHARD)
    assert (bare.keys, bare.new_image, bare.old_image) == ({}, None, None)
    assert bare.approximate_creation_time is None and bare.view_type is None and bare.size_bytes == 0
    assert bare.item_key == "{}"

    unknown = StreamRecord({"eventID": "e", "eventName": "UPSERT", "dynamodb": {"SequenceNumber": "5"}},
                           table="orders", stream_arn=ARN, shard_id=SHARD)
    with pytest.raises(ValueError, match="UPSERT"):
        _ = unknown.event_name
    assert "UPSERT" in repr(unknown)

    no_ddb = StreamRecord({"eventID": "e", "eventName": "INSERT"}, table="orders", stream_arn=ARN, shard_id=SHARD)
    with pytest.raises(KeyError, match="dynamodb"):
        _ = no_ddb.sequence_number
    with pytest.raises(KeyError, match="dynamodb"):
        _ = no_ddb.new_image


# -- dead letters ------------------------------------------------------------------------


@FUZZ
@given(keys, images, st.none() | images, sequence_numbers, creation_times,
       st.sampled_from(["permanent", "exhausted", "record_too_old"]), st.integers(0, 10_000), forms)
def test_dead_letters_of_fuzzed_records_round_trip(
    key: dict[str, Any], new: dict[str, Any], old: dict[str, Any] | None, sequence: str, created: datetime,
    error_class: str, attempts: int, form: str,
) -> None:
    raw = in_form(raw_record(key, new, old, sequence, created, event="INSERT" if old is None else "MODIFY"), form)
    record = StreamRecord(raw, table="orders", stream_arn=ARN, shard_id=SHARD)
    letter = DeadLetter.from_failure(record, "route-1", PermanentError("bad \u2603 data \x00"), error_class,
                                     attempts, created, "worker-1")

    text = letter.to_json()
    restored = DeadLetter.from_json(text)

    assert text.isascii()
    assert restored == letter and restored.record == raw
    assert restored.to_json() == text  # deterministic
    again = restored.to_stream_record()
    assert same(again.new_image, record.new_image) and same(again.old_image, record.old_image)
    assert same(again.keys, record.keys) and again.item_key == record.item_key
    assert close_in_time(again.approximate_creation_time, created)
    assert same(again.new_image, None if new is None else {**new, **key})
    assert (again.sequence_int, again.event_name) == (int(sequence), record.event_name)


# -- routing odd records -----------------------------------------------------------------

EVENT_NAMES = st.sampled_from(["INSERT", "MODIFY", "REMOVE", "UPSERT", "insert", "", None, 7, "TTL"])
STATUSES = st.sampled_from(["NEW", "new", "PROCESSING", 1, True, None, b"NEW", ["NEW"], {"S": "NEW"}])
TYPES = st.sampled_from(["ShipmentRequested", "shipmentrequested", "Other", 3, None, b"x"])


@st.composite
def odd_records(draw: st.DrawFn, index: int) -> tuple[str, dict[str, Any]]:
    """(logical table, raw record): real-looking records whose names, images and fields vary."""
    table = draw(st.sampled_from(["orders", "events", "shipments", "orders"]))
    key_name = {"orders": "orderId", "events": "eventId", "shipments": "orderId"}[table]
    key = {key_name: draw(key_values)}
    extra = draw(images)
    status = draw(STATUSES)
    if status is not None:
        extra["status"] = status
    type_ = draw(TYPES)
    if type_ is not None:
        extra["type"] = type_
    if draw(st.booleans()):
        extra["payload"] = draw(values)
    shape = draw(st.sampled_from(["new", "old", "both", "none"]))
    new = extra if shape in ("new", "both") else None
    old = extra if shape in ("old", "both") else None
    created = draw(st.none() | creation_times)
    raw = in_form(raw_record(key, new, old, str(10**21 + 7 * index), created, event=draw(EVENT_NAMES)),
                  draw(forms))
    if draw(st.booleans()):
        del raw["dynamodb"]["Keys"]
    return table, raw


@functools.cache
def seed_router() -> Router:
    """The seed config's routes (and one catch-all), with recording handlers instead of the built-ins."""
    doc = seed_document("http://127.0.0.1:9", "fuzz-")
    doc["routes"].append({"name": "all-orders", "table": "orders", "handler": "worker.handlers.orders:process_order"})
    config = parse_config(doc, env={})

    async def never_called(*_: Any) -> None:  # deliveries are faked below
        raise AssertionError("handler called")

    return Router([build_route(route, never_called, config.processing) for route in config.routes])


def unrouted(stream: str) -> float:
    return REGISTRY.get_sample_value("stream_worker_records_filtered_total", {"stream": stream}) or 0.0


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_odd_records_are_routed_or_acknowledged_never_crash_the_pipeline(data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 12))
    records = [data.draw(odd_records(i)) for i in range(count)]
    router = seed_router()

    async def run() -> tuple[list[tuple[str, str]], dict[str, ShardPipeline]]:
        delivered: list[tuple[str, str]] = []
        pipelines: dict[str, ShardPipeline] = {}

        class FakeDelivery:
            def __init__(self, route: Route, progress: ShardProgress) -> None:
                self.route, self.progress = route, progress

            async def deliver(self, batch: list[StreamRecord]) -> None:
                for record in batch:
                    await self.deliver_record(record)

            async def deliver_record(self, record: StreamRecord, task: object = None) -> None:
                delivered.append((self.route.name, record.sequence_number))
                self.progress.finish(record)

        def pipeline_for(table: str) -> ShardPipeline:
            if table not in pipelines:
                progress = ShardProgress()
                pipelines[table] = ShardPipeline(
                    routes_for=router.routes_for,
                    delivery_for=lambda route: FakeDelivery(route, progress),  # type: ignore[arg-type,return-value]
                    progress=progress, max_in_flight=1000,
                    hash_key={"orders": "orderId", "events": "eventId"}.get(table), stream_label=f"fuzz-{table}",
                )
            return pipelines[table]

        for table, raw in records:
            pipeline_for(table).submit(StreamRecord(raw, table=table, stream_arn=ARN, shard_id=SHARD))
        try:
            for pipeline in pipelines.values():
                await asyncio.wait_for(pipeline.drain(), 5)
        finally:
            for pipeline in pipelines.values():
                await pipeline.close()
        return delivered, pipelines

    before = {table: unrouted(f"fuzz-{table}") for table in ("orders", "events", "shipments")}
    delivered, pipelines = asyncio.run(run())

    expected: list[tuple[str, str]] = []
    unmatched = {"orders": 0, "events": 0, "shipments": 0}
    for table, raw in records:
        names = [route.name for route in router.routes_for(StreamRecord(raw, table=table, stream_arn=ARN,
                                                                          shard_id=SHARD))]
        if raw.get("eventName") not in ("INSERT", "MODIFY", "REMOVE"):
            assert names == [], (raw.get("eventName"), names)  # unknown event names are never routed
        expected.extend((name, raw["dynamodb"]["SequenceNumber"]) for name in names)
        unmatched[table] += not names
    # Every route saw exactly the records it matches, each once; the rest were acknowledged.
    assert sorted(delivered) == sorted(expected)
    for table, raw in records:
        if table == "orders" and raw.get("eventName") == "INSERT" and "NewImage" in raw["dynamodb"]:
            status = raw["dynamodb"]["NewImage"].get("status")
            assert (("order-processing", raw["dynamodb"]["SequenceNumber"]) in delivered) == (status == {"S": "NEW"})
    for table, pipeline in pipelines.items():
        last = [raw for t, raw in records if t == table][-1]["dynamodb"]["SequenceNumber"]
        assert pipeline.progress.idle and pipeline.progress.finished_up_to == last
        assert unrouted(f"fuzz-{table}") - before[table] == unmatched[table]
