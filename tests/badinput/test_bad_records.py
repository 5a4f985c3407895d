"""Bad input end to end on a real moto server: odd and malformed records reaching the
built-in handlers, items near DynamoDB's 400 KB limit parked in size-limited dead-letter
destinations, and a handler that never returns.

In every test the worker must keep running (no consumer crash), park exactly the records
that cannot be processed, process the rest, and checkpoint past everything.

The test handlers live in this module and are referenced from configs by import string.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator, MutableMapping

import pytest
import structlog
from boto3.dynamodb.types import Binary, TypeDeserializer
from prometheus_client import REGISTRY

from tests.integration.helpers import (
    chain_done,
    jsonl_letters,
    lease_rows,
    scan_all,
    seed_document,
    seq,
    setup_tables,
    stream_records,
    wait_checkpoint,
    wait_until,
)
from worker.app import App
from worker.config import Config, parse_config
from worker.deadletter import DeadLetter, dead_letter_id
from worker.errors import PermanentError
from worker.processing.context import HandlerContext
from worker.records import StreamRecord

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"  # moto's default account, part of every queue URL
HERE = "tests.badinput.test_bad_records"
FAST_RETRY = {"initial_backoff_seconds": 0.02, "max_backoff_seconds": 0.05}
_deserialize = TypeDeserializer().deserialize


# -- test handlers -------------------------------------------------------------------------

BIG = 300_000  # a string attribute at least this long makes ``refuse_big`` refuse the item
calls: list[tuple[str, str, str]] = []  # (handler, key, sequence number) of every call
succeeded: list[tuple[str, float]] = []  # (key, monotonic time) of calls that returned
cancelled: list[str] = []  # keys whose hanging call was cut off


def _key(record: StreamRecord) -> str:
    return str(record.keys.get("orderId"))


async def refuse_big(record: StreamRecord, ctx: HandlerContext) -> None:
    """Refuses (permanently) any item with a string attribute of ``BIG`` characters or more."""
    calls.append(("refuse_big", _key(record), record.sequence_number))
    image = record.new_image or {}
    if any(isinstance(value, str) and len(value) >= BIG for value in image.values()):
        raise PermanentError(f"item {_key(record)} is too big to process")
    succeeded.append((_key(record), time.monotonic()))


async def hang_on_key(record: StreamRecord, ctx: HandlerContext) -> None:
    """Never returns for the keys in ``ctx.options['hang']``; the others return at once."""
    key = _key(record)
    calls.append(("hang_on_key", key, record.sequence_number))
    if key in ctx.options["hang"]:
        try:
            await asyncio.Event().wait()  # forever
        except asyncio.CancelledError:
            cancelled.append(key)
            raise
    succeeded.append((key, time.monotonic()))


@pytest.fixture(autouse=True)
def _fresh_handler_state() -> None:
    calls.clear()
    succeeded.clear()
    cancelled.clear()


# -- worker, stream and checkpoint helpers ---------------------------------------------------


def document(moto_url: str, prefix: str) -> dict[str, Any]:
    doc = seed_document(moto_url, prefix)
    doc["processing"]["checkpoint_interval_seconds"] = 0.2
    return doc


class Observed:
    """ProcessingObserver: (route, key, outcome, sequence number, monotonic time) of every outcome.
    Reads only the keys, so malformed images can never make it raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str, float]] = []

    def __call__(self, record: StreamRecord, route: str, outcome: str, started: float, ended: float) -> None:
        key: dict[str, Any] = next(iter(record.raw.get("dynamodb", {}).get("Keys", {}).values()), {})
        self.calls.append((route, str(next(iter(key.values()), "")), outcome, record.sequence_number, ended))

    def of(self, route: str, outcome: str) -> list[str]:
        return [key for r, key, o, _, _ in self.calls if r == route and o == outcome]


def parked_metric(stream: str, route: str, error_class: str) -> float:
    labels = {"stream": stream, "route": route, "error_class": error_class}
    return REGISTRY.get_sample_value("stream_worker_records_dead_lettered_total", labels) or 0.0


def crashes() -> float:
    return REGISTRY.get_sample_value("stream_worker_loop_crashes_total", {"loop": "consumer"}) or 0.0


@contextlib.asynccontextmanager
async def running(config: Config, observed: Observed) -> AsyncIterator[list[MutableMapping[str, Any]]]:
    """Runs a worker; yields the structlog events it logs (all levels). On exit asserts that no
    consumer crashed while it ran."""
    before = crashes()
    saved = structlog.get_config()
    # Capture every level, whatever an earlier test configured; restored below.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            app = App(config, observers=[observed])
            try:
                await app.start()
                yield logs
            finally:
                await app.stop()
    finally:
        structlog.configure(**saved)
    crash_logs = [entry for entry in logs if entry["event"] in ("restart crashed consumer", "restart crashed loop")]
    assert crash_logs == []
    assert crashes() == before


def _plain(value: Any) -> Any:
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def canonical(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw record in a form that does not depend on how it was decoded from the wire: the
    worker may read records with its fast JSON path (binary values as base64 text, the
    creation time as epoch seconds) while this test reads them with the SDK's parser
    (bytes, datetime). Keys and images are compared decoded, the time to the millisecond."""
    record = StreamRecord(raw, table="t", stream_arn="a", shard_id="s")
    ddb = raw["dynamodb"]
    created = record.approximate_creation_time
    return {
        **{k: v for k, v in raw.items() if k != "dynamodb"},
        "dynamodb": {k: v for k, v in ddb.items()
                     if k not in ("Keys", "NewImage", "OldImage", "ApproximateCreationDateTime")},
        "keys": _plain(record.keys) if "Keys" in ddb else None,
        "new": _plain(record.new_image),
        "old": _plain(record.old_image),
        "created": None if created is None else round(created.timestamp(), 3),
    }


# -- 1. odd and malformed records reaching the built-in handlers -----------------------------

# Well-formed NEW orders whose other attributes are odd: the chain must complete for each.
ODD_ORDERS: dict[str, dict[str, Any]] = {
    "o-amount-string": {"amount": {"S": "12.50 EUR"}},
    "o-amount-missing": {},
    "o-amount-null": {"amount": {"NULL": True}},
    "o-amount-set": {"amount": {"NS": ["1", "2.5", "-3E+10"]}},
    "o-nested": {"amount": {"M": {"value": {"N": "1"}, "deeper": {"M": {"a": {"L": [{"M": {"b": {"BOOL": False}}}]}}}}}},
    "o-binary": {"amount": {"B": b"\x00\xff\xfe binary \x80"}, "blobs": {"BS": [b"\x00", b"\xff"]}},
    "o-huge-list": {"lines": {"L": [{"M": {"sku": {"S": f"sku-{i}"}, "qty": {"N": str(i)}}} for i in range(1000)]}},
    "o-precise-number": {"amount": {"N": "9.9999999999999999999999999999999999999E+125"}, "tiny": {"N": "1E-130"}},
    "o-funny-names": {"a.b": {"S": "dot"}, "$dl": {"S": "tag"}, "status ": {"S": "x"}},
    "o-ünïcødé-🚀-订单": {"note": {"S": "\u0000\ufffe\U0001f600"}},
    "o-" + "long" * 250: {"amount": {"N": "1"}},
}
# Orders the order-processing route must not take (status is not the string NEW): left alone.
NOT_NEW: dict[str, dict[str, Any]] = {
    "n-status-lowercase": {"status": {"S": "new"}},
    "n-status-number": {"status": {"N": "1"}},
    "n-status-bool": {"status": {"BOOL": True}},
    "n-status-list": {"status": {"L": [{"S": "NEW"}]}},
    "n-status-map": {"status": {"M": {"S": {"S": "NEW"}}}},
    "n-status-binary": {"status": {"B": b"NEW"}},
    "n-status-set": {"status": {"SS": ["NEW", "OLD"]}},
    "n-no-status": {"status": None},
}
# ShipmentRequested events written straight into the outbox that are not shipment requests.
MALFORMED_EVENTS: dict[str, dict[str, Any] | None] = {
    "e-payload-without-order": {"M": {"action": {"S": "SHIP"}}},
    "e-action-cancel": {"M": {"orderId": {"S": "x-cancel"}, "action": {"S": "CANCEL"}}},
    "e-action-missing": {"M": {"orderId": {"S": "x-noaction"}}},
    "e-action-lowercase": {"M": {"orderId": {"S": "x-lower"}, "action": {"S": "ship"}}},
    "e-order-null": {"M": {"orderId": {"NULL": True}, "action": {"S": "SHIP"}}},
    "e-payload-missing": None,
    "e-payload-empty": {"M": {}},
    "e-payload-string": {"S": "orderId=x-string;action=SHIP"},
    "e-payload-list": {"L": [{"S": "orderId"}, {"S": "SHIP"}]},
    "e-payload-number": {"N": "42"},
    "e-order-number": {"M": {"orderId": {"N": "42"}, "action": {"S": "SHIP"}}},
    "e-order-map": {"M": {"orderId": {"M": {"id": {"S": "x-map"}}}, "action": {"S": "SHIP"}}},
    "e-order-empty": {"M": {"orderId": {"S": ""}, "action": {"S": "SHIP"}}},
}
# Events the shipment route must not take: filtered and acknowledged.
OTHER_EVENTS: dict[str, dict[str, Any]] = {
    "e-type-other": {"type": {"S": "OrderCancelled"}},
    "e-type-number": {"type": {"N": "7"}},
    "e-type-missing": {},
    "e-type-lowercase": {"type": {"S": "shipmentrequested"}},
}


async def test_odd_and_malformed_records_reaching_the_built_in_handlers(
    moto_url: str, prefix: str, aws: dict[str, Any]
) -> None:
    ddb = aws["dynamodb"]
    doc = document(moto_url, prefix)
    # The seed's retry policy (10 calls, then park in the dead_letters table), at test speed.
    doc["processing"]["retry"] = {"max_attempts": 10, **FAST_RETRY}
    assert doc["processing"]["dead_letter"] == {"type": "dynamodb", "table": "dead_letters"}
    config = parse_config(doc, env={})
    await setup_tables(config)
    orders, events = config.tables["orders"].name, config.tables["events"].name

    for order_id, extra in {**ODD_ORDERS, **NOT_NEW}.items():
        item = {"orderId": {"S": order_id}, "status": {"S": "NEW"}, **extra}
        await ddb.put_item(TableName=orders, Item={k: v for k, v in item.items() if v is not None})
    for event_id, payload in MALFORMED_EVENTS.items():
        item = {"eventId": {"S": event_id}, "type": {"S": "ShipmentRequested"}, "source": {"S": "test"},
                "correlationId": {"S": event_id}, "time": {"S": "2024-05-01T00:00:00Z"}}
        if payload is not None:
            item["payload"] = payload
        await ddb.put_item(TableName=events, Item=item)
    for event_id, extra in OTHER_EVENTS.items():
        await ddb.put_item(TableName=events, Item={"eventId": {"S": event_id}, **extra,
                                                   "payload": {"M": {"orderId": {"S": f"x-{event_id}"},
                                                                     "action": {"S": "SHIP"}}}})
    order_ids = list(ODD_ORDERS)
    observed = Observed()
    parked_before = parked_metric("events", "shipment-dispatch", "permanent")
    async with running(config, observed) as logs:
        await wait_until(lambda: chain_done(ddb, config, order_ids), timeout=60)
        order_records = await stream_records(aws, config, "orders")
        await wait_checkpoint(ddb, config, "orders", seq(order_records[-1]))

        async def every_event_parked_or_handled() -> bool:
            handled = observed.of("shipment-dispatch", "ok") + observed.of("shipment-dispatch", "dead_lettered")
            return len(handled) == len(order_ids) + len(MALFORMED_EVENTS)

        await wait_until(every_event_parked_or_handled, timeout=60)
        event_records = await stream_records(aws, config, "events")
        await wait_checkpoint(ddb, config, "events", seq(event_records[-1]))

    # Each malformed event was called once and parked at once as permanent: no retries.
    parked = sorted(observed.of("shipment-dispatch", "dead_lettered"))
    assert parked == sorted(MALFORMED_EVENTS)
    assert sorted(observed.of("shipment-dispatch", "error")) == sorted(MALFORMED_EVENTS)
    assert [e for e in logs if e["event"] == "retry failed handler"] == []
    park_logs = [e for e in logs if e["event"] == "park record in dead-letter destination"]
    assert [(e["log_level"], e["error_class"], e["attempts"]) for e in park_logs] == [
        ("warning", "permanent", 1)] * len(MALFORMED_EVENTS)
    assert parked_metric("events", "shipment-dispatch", "permanent") - parked_before == len(MALFORMED_EVENTS)
    rows = [{k: _deserialize(v) for k, v in row.items()} for row in await scan_all(ddb, config.tables["dead_letters"].name)]
    assert sorted(str(row["sequenceNumber"]) for row in rows) == sorted(
        seq(r) for r in event_records if r["dynamodb"]["Keys"]["eventId"]["S"] in MALFORMED_EVENTS
    )
    by_event = {DeadLetter.from_json(row["message"]).record["dynamodb"]["Keys"]["eventId"]["S"]: row for row in rows}
    assert sorted(by_event) == sorted(MALFORMED_EVENTS)
    for event_id, row in by_event.items():
        assert (row["route"], row["errorClass"], row["errorType"], row["attempts"], row["status"]) == (
            "shipment-dispatch", "permanent", "PermanentError", 1, "PARKED"), (event_id, row)
        letter = DeadLetter.from_json(row["message"])
        raw = next(r for r in event_records if r["dynamodb"]["Keys"]["eventId"]["S"] == event_id)
        assert canonical(letter.record) == canonical(raw)  # the full record, to replay once fixed
        assert letter.id == dead_letter_id(letter.stream_arn, letter.shard_id, seq(raw), "shipment-dispatch")

    # The well-formed orders went through the chain once each, odd attributes and all.
    assert sorted(observed.of("order-processing", "ok")) == sorted(order_ids)
    assert observed.of("order-processing", "error") == []
    assert sorted(observed.of("shipment-dispatch", "ok")) == sorted(
        r["dynamodb"]["Keys"]["eventId"]["S"] for r in event_records
        if r["dynamodb"]["NewImage"].get("source") == {"S": config.publisher.source}
    )
    shipments = {s["orderId"]["S"]: s for s in await scan_all(ddb, config.tables["shipments"].name)}
    assert sorted(shipments) == sorted(order_ids)  # nothing shipped for a malformed event
    assert all(s["status"]["S"] == "DISPATCHED" for s in shipments.values())
    final = {o["orderId"]["S"]: o for o in await scan_all(ddb, orders)}
    for order_id, extra in ODD_ORDERS.items():
        assert final[order_id]["status"] == {"S": "PROCESSING"}
        assert {k: final[order_id][k] for k in extra} == extra  # odd attributes untouched
    for order_id, extra in NOT_NEW.items():  # not taken: left exactly as written
        expected = {"orderId": {"S": order_id}, "status": {"S": "NEW"}, **extra}
        assert final[order_id] == {k: v for k, v in expected.items() if v is not None}
    # Records that matched no route were acknowledged (the checkpoints above passed them).
    unrouted_events = [r for r in event_records if r["dynamodb"]["Keys"]["eventId"]["S"] in OTHER_EVENTS]
    assert len(unrouted_events) == len(OTHER_EVENTS)
    assert all(k not in observed.of("shipment-dispatch", "ok") for k in OTHER_EVENTS)


# -- 2. items near DynamoDB's 400 KB limit, parked in size-limited destinations --------------


@pytest.mark.parametrize("kind", ["sqs", "jsonl", "dynamodb"])
async def test_oversized_items_are_parked_with_or_without_images(
    moto_url: str, prefix: str, aws: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    ddb, sqs = aws["dynamodb"], aws["sqs"]
    queue_url = f"{moto_url}/{ACCOUNT}/{prefix}dlq"
    path = tmp_path / "letters.jsonl"
    destination = {
        "sqs": {"type": "sqs", "queue_url": queue_url},
        "jsonl": {"type": "jsonl", "path": str(path)},
        "dynamodb": {"type": "dynamodb", "table": "dead_letters"},
    }[kind]
    doc = document(moto_url, prefix)
    doc["processing"]["retry"] = {"max_attempts": 3, **FAST_RETRY}
    doc["routes"] = [{"name": "big-check", "table": "orders", "events": ["INSERT", "MODIFY"],
                      "handler": f"{HERE}:refuse_big", "dead_letter": destination}]
    config = parse_config(doc, env={})
    await setup_tables(config)
    if kind == "sqs":
        assert (await sqs.create_queue(QueueName=f"{prefix}dlq"))["QueueUrl"] == queue_url
    orders = config.tables["orders"].name
    blob = ("0123456789abcdef" * (350_000 // 16)) + "\u00e9\u6f22\U0001f680"  # ~350 KB, some non-ASCII
    await ddb.put_item(TableName=orders, Item={"orderId": {"S": "small-1"}, "status": {"S": "NEW"}})
    await ddb.put_item(TableName=orders, Item={"orderId": {"S": "big"}, "status": {"S": "NEW"}, "blob": {"S": blob}})
    await ddb.put_item(TableName=orders, Item={"orderId": {"S": "small-2"}, "status": {"S": "NEW"}})
    # A MODIFY of the big item carries both images (~700 KB of record).
    await ddb.update_item(TableName=orders, Key={"orderId": {"S": "big"}}, UpdateExpression="SET #s = :s",
                          ExpressionAttributeNames={"#s": "status"}, ExpressionAttributeValues={":s": {"S": "PAID"}})
    await ddb.put_item(TableName=orders, Item={"orderId": {"S": "small-3"}, "status": {"S": "NEW"}})
    records = await stream_records(aws, config, "orders")
    assert [(r["eventName"], r["dynamodb"]["Keys"]["orderId"]["S"]) for r in records] == [
        ("INSERT", "small-1"), ("INSERT", "big"), ("INSERT", "small-2"), ("MODIFY", "big"), ("INSERT", "small-3")]
    big_insert, big_modify = records[1], records[3]
    assert big_modify["dynamodb"]["OldImage"]["blob"] == big_modify["dynamodb"]["NewImage"]["blob"] == {"S": blob}

    observed = Observed()
    async with running(config, observed) as logs:
        await wait_checkpoint(ddb, config, "orders", seq(records[-1]))

    # One call each; other keys do not wait while big's letter is written, big's two in order.
    assert sorted(key for _, key, _ in calls) == ["big", "big", "small-1", "small-2", "small-3"]
    assert [number for _, key, number in calls if key == "big"] == [seq(big_insert), seq(big_modify)]
    assert sorted(key for key, _ in succeeded) == ["small-1", "small-2", "small-3"]
    assert observed.of("big-check", "dead_lettered") == ["big", "big"]
    if kind == "sqs":
        received = (await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                              MessageAttributeNames=["All"])).get("Messages", [])
        letters = sorted((DeadLetter.from_json(m["Body"]) for m in received), key=lambda l: int(l.sequence_number))
        assert all(len(m["Body"]) < 262_144 for m in received)
    elif kind == "jsonl":
        letters = jsonl_letters(path)
    else:
        rows = await scan_all(ddb, config.tables["dead_letters"].name)
        letters = sorted((DeadLetter.from_json(row["message"]["S"]) for row in rows),
                         key=lambda l: int(l.sequence_number))
    assert [letter.sequence_number for letter in letters] == [seq(big_insert), seq(big_modify)]
    # Which letters fit whole: SQS takes 256 KiB (neither), a DynamoDB row 400 KB (the INSERT's
    # ~350 KB, not the MODIFY's ~700 KB), a JSONL file anything.
    fits_whole = {"sqs": [False, False], "dynamodb": [True, False], "jsonl": [True, True]}[kind]
    dropped = []
    for letter, raw, whole in zip(letters, (big_insert, big_modify), fits_whole):
        assert (letter.route, letter.error_class, letter.error_type, letter.attempts) == (
            "big-check", "permanent", "PermanentError", 1)
        assert letter.id == dead_letter_id(letter.stream_arn, letter.shard_id, seq(raw), "big-check")
        if whole:
            assert canonical(letter.record) == canonical(raw)  # the full record, images intact
            assert (letter.to_stream_record().new_image or {})["blob"] == blob
            assert letter.error_message == "item big is too big to process"
            continue
        dropped.append(letter)
        # Keys, position and error kept; the images dropped and the drop noted.
        without = {k: v for k, v in raw["dynamodb"].items() if k not in ("NewImage", "OldImage")}
        assert canonical(letter.record) == canonical({**raw, "dynamodb": without})
        assert letter.record["dynamodb"]["Keys"] == {"orderId": {"S": "big"}}
        assert "NewImage" not in letter.record["dynamodb"] and "OldImage" not in letter.record["dynamodb"]
        assert letter.error_message.startswith("item big is too big to process [item images dropped")
        assert "full letter in the error log" in letter.error_message
    # Each stripped letter's full version is in the error log, nowhere else.
    logged = [e for e in logs if e["event"] == "park letter without images: too large for the destination"]
    assert [e["log_level"] for e in logged] == ["error"] * len(dropped)
    full = [DeadLetter.from_json(e["letter"]) for e in logged]
    assert [canonical(letter.record) for letter in full] == [
        canonical(raw) for raw, whole in zip((big_insert, big_modify), fits_whole) if not whole]
    assert all((letter.to_stream_record().new_image or {})["blob"] == blob for letter in full)
    assert all(e["size"] > e["limit"] for e in logged)


# -- 3. a handler that never returns --------------------------------------------------------


async def test_hanging_handler_is_cut_off_retried_and_parked_while_other_keys_go_on(
    moto_url: str, prefix: str, aws: dict[str, Any], tmp_path: Path
) -> None:
    ddb = aws["dynamodb"]
    path = tmp_path / "letters.jsonl"
    doc = document(moto_url, prefix)
    doc["processing"].pop("dead_letter")
    doc["routes"] = [{"name": "hanging", "table": "orders", "handler": f"{HERE}:hang_on_key",
                      "timeout_seconds": 0.3, "max_concurrency": 2, "options": {"hang": ["h-hang"]},
                      "retry": {"max_attempts": 2, **FAST_RETRY},
                      "dead_letter": {"type": "jsonl", "path": str(path)}}]
    config = parse_config(doc, env={})
    await setup_tables(config)
    others = [f"h-{i}" for i in range(6)]
    keys = ["h-hang", *others]
    for key in keys:
        await ddb.put_item(TableName=config.tables["orders"].name,
                           Item={"orderId": {"S": key}, "status": {"S": "NEW"}})
    records = await stream_records(aws, config, "orders")
    hang_record = records[0]

    observed = Observed()
    async with running(config, observed) as logs:
        await wait_checkpoint(ddb, config, "orders", seq(records[-1]))

    assert [key for _, key, _ in calls if key == "h-hang"] == ["h-hang", "h-hang"]  # max_attempts calls
    assert cancelled == ["h-hang", "h-hang"]  # each hanging call was cut off, not left running
    assert sorted(key for key, _ in succeeded) == sorted(others)
    first_timeout_at = next(at for _, key, outcome, _, at in observed.calls if outcome == "error")
    parked_at = next(at for _, key, outcome, _, at in observed.calls if outcome == "dead_lettered")
    done_at = {key: at for key, at in succeeded}
    # No other key waited for the hanging record (all were done before its first call was even
    # cut off: it holds one of the two slots, the other keys share the second).
    assert all(done_at[key] < first_timeout_at for key in others), (done_at, first_timeout_at)
    assert first_timeout_at < parked_at
    assert observed.of("hanging", "error") == ["h-hang", "h-hang"]
    assert observed.of("hanging", "dead_lettered") == ["h-hang"]
    letters = jsonl_letters(path)
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.route, letter.error_class, letter.error_type, letter.attempts) == (
        "hanging", "exhausted", "RetryableError", 2)
    assert "timed out" in letter.error_message and "0.3" in letter.error_message
    assert canonical(letter.record) == canonical(hang_record)
    assert len([e for e in logs if e["event"] == "retry failed handler"]) == 1  # one retry, then parked
