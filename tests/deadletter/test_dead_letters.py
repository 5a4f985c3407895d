"""Dead letters: the lossless message, and each destination against a real moto server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from botocore.exceptions import ClientError
from dateutil.tz import tzlocal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from worker.aws import AwsClients
from worker.config import AwsConfig
from worker.deadletter import (
    DeadLetter,
    DeadLetterConfig,
    DeadLetterDecodeError,
    DeadLetterDestination,
    DeadLetterSource,
    DeadLetterTooLarge,
    DynamoDbDeadLetters,
    JsonlDeadLetters,
    Parked,
    SnsDeadLetters,
    SqsDeadLetters,
    build_dead_letter_source,
    build_dead_letters,
    dead_letter_id,
)
from worker.deadletter import codec
from worker.deadletter.message import DEAD_LETTER_NAMESPACE, MAX_ERROR_MESSAGE_CHARS
from worker.deadletter.sqs import message_group_id
from worker.errors import ConfigError, PermanentError
from worker.records import StreamRecord
from worker.testing import make_record as make_kit_record

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-05-01T00:00:00.000"
SHARD = "shardId-00000001714521600000-1a2b3c4d"
OTHER_SHARD = "shardId-00000001714521600000-9f8e7d6c"
FIRST_FAILURE = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
PARKED_AT = datetime(2024, 5, 1, 12, 5, 0, 125000, tzinfo=timezone.utc)
# botocore parses ApproximateCreationDateTime into a datetime with tzlocal().
CREATED = datetime(2024, 5, 1, 11, 59, 59, tzinfo=timezone.utc).astimezone(tzlocal())


def make_raw(sequence: str = "100000000000000000001", note: str = "hello") -> dict[str, Any]:
    """A MODIFY record with every attribute type, shaped like botocore returns it."""
    return make_record(sequence, note=note).raw  # type: ignore[return-value]


def make_record(sequence: str = "100000000000000000001", shard: str = SHARD, note: str = "hello") -> StreamRecord:
    new_image = {
        "total": Decimal("42.50"),
        "paid": True,
        "coupon": None,
        "address": {"city": "Zürich", "zip": 8001, "blob": b"\x01\x02"},
        "lines": ["A-1", 2, b"\xfe", {"qty": 3}],
        "tags": {"rush", "gift"},
        "sizes": {Decimal("1"), Decimal("2.5"), Decimal("-3")},
        "chunks": {b"\x00", b"\xff\xfe"},
        "note": note,
        "emoji": "\U0001f4e6 \ufffe",
    }
    old_image = {**new_image, "paid": False, "coupon": "SPRING"}
    return make_kit_record("MODIFY", {"pk": "order-1", "sk": b"\x00\xff\x10raw"}, new_image, old_image,
                           table="orders", sequence_number=sequence, created=CREATED, shard_id=shard,
                           stream_arn=STREAM_ARN, event_id="e1f0c2d4b6a8")


def raised(error: Exception) -> Exception:
    """``error`` with a traceback, as a handler's failure has: letters carry it."""
    try:
        raise error
    except Exception as caught:  # noqa: BLE001 - handed back on purpose
        return caught


def make_letter(
    sequence: str = "100000000000000000001",
    *,
    route: str = "ship-order",
    shard: str = SHARD,
    attempts: int = 3,
    note: str = "hello",
) -> DeadLetter:
    return DeadLetter.from_failure(
        make_record(sequence, shard, note),
        route,
        raised(PermanentError(f"bad total in {sequence}")),
        "exhausted",
        attempts,
        FIRST_FAILURE,
        "worker-a",
        now=PARKED_AT,
    )


def assert_same_view(left: StreamRecord, right: StreamRecord) -> None:
    assert left.keys == right.keys
    assert left.new_image == right.new_image
    assert left.old_image == right.old_image
    assert left.approximate_creation_time == right.approximate_creation_time
    assert left.sequence_number == right.sequence_number
    assert left.event_name == right.event_name
    assert left.item_key == right.item_key


# --- the message --------------------------------------------------------------------


def test_json_round_trip_restores_the_raw_record_with_its_types() -> None:
    letter = make_letter()

    restored = DeadLetter.from_json(letter.to_json())

    assert restored == letter
    assert restored.record == make_raw()
    ddb = restored.record["dynamodb"]
    assert type(ddb["ApproximateCreationDateTime"]) is datetime
    assert ddb["ApproximateCreationDateTime"] == CREATED
    assert ddb["ApproximateCreationDateTime"].utcoffset() == CREATED.utcoffset()
    assert ddb["NewImage"]["sk"] == {"B": b"\x00\xff\x10raw"}
    # Sets are lists on the wire, in no particular order.
    assert sorted(ddb["NewImage"]["chunks"]["BS"]) == [b"\x00", b"\xff\xfe"]
    assert ddb["NewImage"]["lines"]["L"][2] == {"B": b"\xfe"}
    assert sorted(ddb["NewImage"]["sizes"]["NS"], key=Decimal) == ["-3", "1", "2.5"]
    # The restored record decodes exactly like the original.
    original = make_record()
    replayed = StreamRecord(restored.record, table=restored.table, stream_arn=restored.stream_arn,
                            shard_id=restored.shard_id)
    assert_same_view(replayed, original)
    assert_same_view(restored.to_stream_record(), original)
    assert replayed.new_image is not None
    assert replayed.new_image["sk"] == b"\x00\xff\x10raw"
    assert replayed.new_image["chunks"] == {b"\x00", b"\xff\xfe"}
    assert replayed.new_image["sizes"] == {Decimal("1"), Decimal("2.5"), Decimal("-3")}
    assert replayed.new_image["total"] == Decimal("42.50")
    assert replayed.new_image["coupon"] is None
    # Deterministic text: re-encoding the restored letter gives the same bytes.
    assert restored.to_json() == letter.to_json()


async def test_round_trip_of_a_record_read_from_a_moto_stream(aws: dict[str, Any], prefix: str) -> None:
    ddb, streams = aws["dynamodb"], aws["dynamodbstreams"]
    name = f"{prefix}orders"
    created = await ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "B"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    stream_arn = created["TableDescription"]["LatestStreamArn"]
    item = {key: value for key, value in make_raw()["dynamodb"]["NewImage"].items() if key not in ("sk",)}
    item["pk"] = {"B": b"\x00\xffkey"}
    await ddb.put_item(TableName=name, Item=item)
    await ddb.put_item(TableName=name, Item={**item, "note": {"S": "second"}})
    shard = (await streams.describe_stream(StreamArn=stream_arn))["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = (await streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard,
                                                 ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
    raw = (await streams.get_records(ShardIterator=iterator))["Records"][-1]
    # What botocore hands over: a datetime, bytes for B/BS, lists for the sets.
    assert isinstance(raw["dynamodb"]["ApproximateCreationDateTime"], datetime)
    assert sorted(raw["dynamodb"]["NewImage"]["chunks"]["BS"]) == [b"\x00", b"\xff\xfe"]
    assert raw["dynamodb"]["OldImage"]["note"] == {"S": "hello"}
    record = StreamRecord(raw, table="orders", stream_arn=stream_arn, shard_id=shard)
    letter = DeadLetter.from_failure(record, "ship-order", KeyError("total"), "permanent", 1, FIRST_FAILURE, "w")

    restored = DeadLetter.from_json(letter.to_json())

    assert restored == letter
    assert restored.record == raw
    assert_same_view(restored.to_stream_record(), record)
    assert restored.to_stream_record().new_image == record.new_image


def test_json_layout_is_camel_case_with_tagged_values() -> None:
    letter = make_letter()

    data = json.loads(letter.to_json())

    assert data.pop("traceback").startswith("Traceback (most recent call last):")
    assert {key: value for key, value in data.items() if key != "record"} == {
        "version": 1,
        "id": letter.id,
        "route": "ship-order",
        "table": "orders",
        "streamArn": STREAM_ARN,
        "shardId": SHARD,
        "sequenceNumber": "100000000000000000001",
        "errorType": "PermanentError",
        "errorMessage": "bad total in 100000000000000000001",
        "errorClass": "exhausted",
        "attempts": 3,
        "firstFailureAt": "2024-05-01T12:00:00.250Z",
        "lastFailureAt": "2024-05-01T12:05:00.125Z",
        "deadLetteredAt": "2024-05-01T12:05:00.125Z",
        "workerId": "worker-a",
    }
    ddb = data["record"]["dynamodb"]
    assert ddb["Keys"]["sk"] == {"B": {"$dl": "bytes", "v": base64.b64encode(b"\x00\xff\x10raw").decode()}}
    assert ddb["ApproximateCreationDateTime"] == {"$dl": "datetime", "v": CREATED.isoformat()}
    assert sorted(ddb["NewImage"]["tags"]["SS"]) == ["gift", "rush"]  # a set: no order on the wire
    assert letter.to_json().isascii()


def test_id_is_a_uuid5_of_position_and_route() -> None:
    first = make_letter(attempts=1)
    again = DeadLetter.from_failure(
        make_record(), "ship-order", ValueError("other"), "permanent", 9, FIRST_FAILURE, "worker-b"
    )

    assert first.id == again.id == dead_letter_id(STREAM_ARN, SHARD, "100000000000000000001", "ship-order")
    assert first.id == str(
        uuid.uuid5(DEAD_LETTER_NAMESPACE, f"{STREAM_ARN}|{SHARD}|100000000000000000001|ship-order")
    )
    assert uuid.UUID(first.id).version == 5
    assert make_letter(route="bill-order").id != first.id
    assert make_letter("100000000000000000002").id != first.id
    assert make_letter(shard=OTHER_SHARD).id != first.id


def test_from_failure_fields() -> None:
    class QuotaBlown(RuntimeError):
        pass

    record = make_record()
    letter = DeadLetter.from_failure(
        record, "ship-order", QuotaBlown("x" * (MAX_ERROR_MESSAGE_CHARS + 5)), "retryable", 0,
        datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), "worker-a",
    )

    assert letter.error_type == "QuotaBlown"
    assert letter.error_message == "x" * MAX_ERROR_MESSAGE_CHARS + "... [5 more characters]"
    assert letter.error_class == "retryable"
    assert letter.attempts == 0
    assert letter.first_failure_at == "2024-05-01T12:00:00.000Z"
    assert letter.last_failure_at == letter.dead_lettered_at
    assert letter.last_failure_at.endswith("Z")
    assert letter.sequence_number == record.sequence_number
    # A snapshot: changing the record afterwards does not change the letter.
    record.raw["dynamodb"]["NewImage"]["note"]["S"] = "changed"  # type: ignore[index]
    assert letter.record["dynamodb"]["NewImage"]["note"] == {"S": "hello"}
    with pytest.raises(ValueError, match="error_class must be one of"):
        DeadLetter.from_failure(record, "r", ValueError(), "fatal", 1, FIRST_FAILURE, "w")
    with pytest.raises(ValueError, match="attempts must be an int >= 0"):
        replace(letter, attempts=-1)


def test_round_trip_survives_a_tag_named_attribute_and_python_containers() -> None:
    raw = make_raw()
    # An attribute may be named like the codec's tag; hand-built records may use sets.
    raw["dynamodb"]["NewImage"]["$dl"] = {"M": {"$dl": {"S": "bytes"}, "v": {"S": "AAAA"}}}
    raw["extra"] = {"set": {b"\x01", "a", 3}, "frozen": frozenset({"x"}), "tuple": (1, b"\x02"),
                    "decimal": Decimal("1.10"), "naive": datetime(2024, 1, 1, 8, 30), "array": bytearray(b"z")}
    letter = DeadLetter.from_failure(
        StreamRecord(raw, table="orders", stream_arn=STREAM_ARN, shard_id=SHARD),
        "r", ValueError("v"), "permanent", 1, FIRST_FAILURE, "w",
    )

    restored = DeadLetter.from_json(letter.to_json())

    assert restored.record == raw
    extra = restored.record["extra"]
    assert [type(extra[key]) for key in ("set", "frozen", "tuple", "decimal", "naive", "array")] == [
        set, frozenset, tuple, Decimal, datetime, bytearray,
    ]
    assert extra["naive"].tzinfo is None
    assert str(extra["decimal"]) == "1.10"


_leaves = (
    st.none() | st.booleans() | st.integers() | st.text() | st.binary()
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.floats(allow_nan=False) | st.decimals(allow_nan=False, allow_infinity=False)
)
_values = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["$dl", "v", "B", "S", "x"]) | st.text(max_size=5), children, max_size=4)
    | st.tuples(children, children)
    | st.frozensets(st.text(max_size=3) | st.binary(max_size=3) | st.integers(), max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_codec_round_trips_any_supported_value(value: Any) -> None:
    decoded = codec.decode(json.loads(codec.dumps(codec.encode(value))))

    assert _comparable(decoded) == _comparable(value)
    assert type(decoded) is type(value)


def _comparable(value: Any) -> Any:
    """An aware datetime comes back with its UTC offset, not its named zone (documented in
    the codec). Compare wall time and offset: ``==`` between zones is False by definition
    for times in a DST gap or fold (PEP 495), even when both say the same thing."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return ("aware", value.replace(tzinfo=None), value.utcoffset())
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_comparable(item) for item in value)
    return value


def test_from_json_rejects_what_is_not_a_dead_letter() -> None:
    data = json.loads(make_letter().to_json())

    with pytest.raises(DeadLetterDecodeError, match="a dead letter is JSON"):
        DeadLetter.from_json('{"id": "torn')
    with pytest.raises(DeadLetterDecodeError, match="unsupported dead-letter version 2"):
        DeadLetter.from_json(json.dumps({**data, "version": 2}))
    with pytest.raises(DeadLetterDecodeError, match="dead letter lacks streamArn"):
        DeadLetter.from_json(json.dumps({k: v for k, v in data.items() if k != "streamArn"}))
    with pytest.raises(DeadLetterDecodeError, match="attempts must be an int"):
        DeadLetter.from_json(json.dumps({**data, "attempts": "3"}))
    with pytest.raises(DeadLetterDecodeError, match="unknown dead-letter value tag 'pickle'"):
        DeadLetter.from_json(json.dumps({**data, "record": {"x": {"$dl": "pickle", "v": ""}}}))
    with pytest.raises(ValueError):  # DeadLetterDecodeError is a ValueError too
        DeadLetter.from_json("[]")


# --- helpers for the AWS destinations -----------------------------------------------


async def create_queue(sqs: Any, name: str, *, fifo: bool = False) -> tuple[str, str]:
    """Returns (url, arn)."""
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
    url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attrs["Attributes"]["QueueArn"]


async def peek(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Receives with a zero visibility timeout: inspects messages without hiding them."""
    response = await sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        VisibilityTimeout=0,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def expected_attributes(letter: DeadLetter) -> dict[str, dict[str, str]]:
    return {
        "deadLetterId": {"DataType": "String", "StringValue": letter.id},
        "route": {"DataType": "String", "StringValue": letter.route},
        "errorClass": {"DataType": "String", "StringValue": letter.error_class},
        "table": {"DataType": "String", "StringValue": letter.table},
    }


def big_letter(size: int) -> DeadLetter:
    return make_letter(note="n" * size)


# --- SQS ----------------------------------------------------------------------------


async def test_sqs_standard_queue_keeps_repeats_and_delete_acknowledges(aws: dict[str, Any], prefix: str) -> None:
    sqs = aws["sqs"]
    url, _ = await create_queue(sqs, f"{prefix}dlq")
    a, b, c = make_letter("1"), make_letter("2"), make_letter("3")
    # Zero visibility timeout: an unacknowledged letter is visible to the next fetch at
    # once, so the second fetch proves that acknowledging, not hiding, removed the rest.
    store = SqsDeadLetters(sqs, url, visibility_timeout=0)

    for letter in (a, b, a, c):
        await store.send(letter)

    raw = await peek(sqs, url)
    assert sorted(m["Body"] for m in raw) == sorted(x.to_json() for x in (a, b, a, c))
    assert all(m["MessageAttributes"] == expected_attributes(a) for m in raw if m["Body"] == a.to_json())

    parked = await store.fetch(10)
    # A standard queue cannot deduplicate: the repeated send is a second message.
    assert Counter(p.message.id for p in parked) == Counter({a.id: 2, b.id: 1, c.id: 1})
    assert {p.message.id: p.message for p in parked} == {a.id: a, b.id: b, c.id: c}
    assert all(p.message.record == make_raw(p.message.sequence_number) for p in parked)

    for item in parked:
        if item.message.id != c.id:
            await store.acknowledge(item)
    remaining = await store.fetch(10)
    assert [p.message for p in remaining] == [c]

    await store.acknowledge(remaining[0])
    assert await store.fetch(10) == []


async def test_sqs_fifo_queue_dedups_by_id_and_keeps_shard_order(aws: dict[str, Any], prefix: str) -> None:
    sqs = aws["sqs"]
    url, _ = await create_queue(sqs, f"{prefix}dlq.fifo", fifo=True)
    a, b, c = make_letter("1"), make_letter("2"), make_letter("3")
    # moto quirk: a FIFO group whose messages all become visible again at once (zero
    # visibility timeout) is redelivered one message per receive, newest first, where SQS
    # redelivers it in order. So this test keeps the default visibility timeout and lets
    # only the last letter come back, by resetting its visibility.
    store = SqsDeadLetters(sqs, url)

    for letter in (a, b, a, c):
        await store.send(letter)

    parked = await store.fetch(10)
    assert [p.message for p in parked] == [a, b, c]

    await store.acknowledge(parked[0])
    await store.acknowledge(parked[1])
    counts = (await sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    ))["Attributes"]
    # Deleted, not merely hidden: only c is left, in flight.
    assert counts == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "1"}
    await sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=parked[2].handle, VisibilityTimeout=0)
    remaining = await store.fetch(10)
    assert [p.message for p in remaining] == [c]

    await store.acknowledge(remaining[0])
    assert await store.fetch(10) == []


async def test_sqs_fifo_group_is_the_shard_and_dedup_id_the_letter_id(aws: dict[str, Any], prefix: str) -> None:
    sqs = aws["sqs"]
    url, _ = await create_queue(sqs, f"{prefix}dlq.fifo", fifo=True)
    a, other = make_letter("1"), make_letter("1", shard=OTHER_SHARD)

    await SqsDeadLetters(sqs, url).send(a)
    await SqsDeadLetters(sqs, url).send(other)

    raw = await peek(sqs, url)
    assert [m["Body"] for m in raw] == [a.to_json(), other.to_json()]
    assert [m["Attributes"]["MessageGroupId"] for m in raw] == [
        message_group_id(STREAM_ARN, SHARD), message_group_id(STREAM_ARN, OTHER_SHARD),
    ]
    assert all(len(m["Attributes"]["MessageGroupId"]) == 64 for m in raw)
    assert [m["Attributes"]["MessageDeduplicationId"] for m in raw] == [a.id, other.id]
    assert [m["MessageAttributes"] for m in raw] == [expected_attributes(a), expected_attributes(other)]


async def test_sqs_fetch_honours_limit_across_receives(aws: dict[str, Any], prefix: str) -> None:
    sqs = aws["sqs"]
    url, _ = await create_queue(sqs, f"{prefix}dlq")
    store = SqsDeadLetters(sqs, url)
    letters = [make_letter(str(n)) for n in range(1, 15)]
    for letter in letters:
        await store.send(letter)

    first = await store.fetch(12)
    rest = await store.fetch(12)

    assert len(first) == 12
    assert len(rest) == 2
    assert {p.message.id for p in first + rest} == {x.id for x in letters}


async def test_sqs_fetch_skips_a_body_that_is_not_a_dead_letter(aws: dict[str, Any], prefix: str) -> None:
    sqs = aws["sqs"]
    url, _ = await create_queue(sqs, f"{prefix}dlq")
    store = SqsDeadLetters(sqs, url)
    await sqs.send_message(QueueUrl=url, MessageBody="not a dead letter")
    await store.send(make_letter())

    assert [p.message for p in await store.fetch(10)] == [make_letter()]


async def test_sqs_letter_over_the_limit_raises_and_sends_nothing(aws: dict[str, Any], prefix: str) -> None:
    sqs = aws["sqs"]
    url, _ = await create_queue(sqs, f"{prefix}dlq")
    letter = big_letter(300_000)

    expected = r"over the SQS limit of 262144 bytes; it was not parked"
    with pytest.raises(DeadLetterTooLarge, match=expected) as caught:
        await SqsDeadLetters(sqs, url).send(letter)
    assert caught.value.size > 262_144
    assert isinstance(caught.value, PermanentError)
    assert await peek(sqs, url) == []

    # A queue with a 1 MiB MaximumMessageSize (moto's default) takes it when told so.
    larger = SqsDeadLetters(sqs, url, max_message_bytes=1_048_576)
    await larger.send(letter)
    assert [p.message for p in await larger.fetch(1)] == [letter]


async def test_sqs_missing_queue_raises_client_error(aws: dict[str, Any], prefix: str) -> None:
    url = f"{aws['sqs'].meta.endpoint_url}/123456789012/{prefix}missing"

    with pytest.raises(ClientError) as caught:
        await SqsDeadLetters(aws["sqs"], url).send(make_letter())
    assert caught.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"


# --- SNS ----------------------------------------------------------------------------


async def test_sns_delivers_the_json_to_a_subscribed_queue_and_cannot_fetch(
    aws: dict[str, Any], prefix: str
) -> None:
    sqs, sns = aws["sqs"], aws["sns"]
    url, queue_arn = await create_queue(sqs, f"{prefix}sub")
    topic_arn = (await sns.create_topic(Name=f"{prefix}dl-topic"))["TopicArn"]
    await sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn,
                        Attributes={"RawMessageDelivery": "true"})
    a, b = make_letter("1"), make_letter("2")
    store = SnsDeadLetters(sns, topic_arn)

    for letter in (a, b, a):
        await store.send(letter)

    raw = await peek(sqs, url)
    # A standard topic does not deduplicate either.
    assert sorted(m["Body"] for m in raw) == sorted([a.to_json(), a.to_json(), b.to_json()])
    assert all(m["MessageAttributes"] == expected_attributes(a) for m in raw if m["Body"] == a.to_json())
    # ... and the subscribed queue is where the letters are replayed from.
    replay = SqsDeadLetters(sqs, url)
    assert Counter(p.message.id for p in await replay.fetch(10)) == Counter({a.id: 2, b.id: 1})

    # The topic itself is a destination, never a replay source.
    assert isinstance(store, DeadLetterDestination) and not isinstance(store, DeadLetterSource)


async def test_sns_missing_topic_raises_and_oversize_is_refused(aws: dict[str, Any], prefix: str) -> None:
    store = SnsDeadLetters(aws["sns"], f"arn:aws:sns:us-east-1:123456789012:{prefix}missing")

    with pytest.raises(ClientError) as caught:
        await store.send(make_letter())
    assert caught.value.response["Error"]["Code"] == "NotFound"
    with pytest.raises(DeadLetterTooLarge, match="over the SNS limit of 262144 bytes"):
        await store.send(big_letter(300_000))


# --- DynamoDB -----------------------------------------------------------------------


@pytest.fixture
async def dl_table(aws: dict[str, Any], prefix: str) -> AsyncIterator[Any]:
    ddb = aws["dynamodb"]
    name = f"{prefix}dead-letters"
    await ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    async with aioboto3.Session(region_name="us-east-1").resource(
        "dynamodb", endpoint_url=ddb.meta.endpoint_url
    ) as resource:
        yield await resource.Table(name)


async def rows(table: Any) -> dict[str, dict[str, Any]]:
    items = (await table.scan(ConsistentRead=True))["Items"]
    return {item["id"]: item for item in items}


async def test_dynamodb_row_holds_indexed_fields_and_flips_to_replayed(dl_table: Any) -> None:
    a, b, c = make_letter("1"), make_letter("2"), make_letter("3")
    store = DynamoDbDeadLetters(dl_table)

    for letter in (a, b, a, c):
        await store.send(letter)

    stored = await rows(dl_table)
    assert set(stored) == {a.id, b.id, c.id}
    assert stored[a.id] == {
        "id": a.id,
        "route": "ship-order",
        "table": "orders",
        "streamArn": STREAM_ARN,
        "shardId": SHARD,
        "sequenceNumber": "1",
        "errorClass": "exhausted",
        "errorType": "PermanentError",
        "errorMessage": "bad total in 1",
        "attempts": Decimal(3),
        "firstFailureAt": "2024-05-01T12:00:00.250Z",
        "lastFailureAt": "2024-05-01T12:05:00.125Z",
        "deadLetteredAt": "2024-05-01T12:05:00.125Z",
        "workerId": "worker-a",
        "message": a.to_json(),
        "status": "PARKED",
    }

    parked = await store.fetch(10)
    assert {p.message.id: p.message for p in parked} == {a.id: a, b.id: b, c.id: c}
    assert sorted(p.handle for p in parked) == sorted([a.id, b.id, c.id])
    assert len(await store.fetch(2)) == 2

    await store.acknowledge(next(p for p in parked if p.message.id == a.id))
    after = await rows(dl_table)
    assert after[a.id]["status"] == "REPLAYED"
    replayed_at = after[a.id]["replayedAt"]
    assert datetime.fromisoformat(replayed_at).tzinfo is not None
    assert {k: v for k, v in after[a.id].items() if k not in ("status", "replayedAt")} == {
        k: v for k, v in stored[a.id].items() if k != "status"
    }
    assert {p.message.id for p in await store.fetch(10)} == {b.id, c.id}

    # Idempotency (see worker/deadletter/dynamodb.py): a repeated send refreshes a parked
    # row but never resurrects a replayed one; a second acknowledge keeps the first time.
    await store.send(replace(a, attempts=9))
    await store.send(replace(b, attempts=7))
    await store.acknowledge(Parked(message=a, handle=a.id))
    final = await rows(dl_table)
    assert (final[a.id]["status"], final[a.id]["attempts"], final[a.id]["replayedAt"]) == (
        "REPLAYED", Decimal(3), replayed_at,
    )
    assert (final[b.id]["status"], final[b.id]["attempts"]) == ("PARKED", Decimal(7))
    assert json.loads(final[b.id]["message"])["attempts"] == 7


async def test_dynamodb_fetch_pages_through_the_scan(dl_table: Any) -> None:
    store = DynamoDbDeadLetters(dl_table, scan_page_size=1)
    letters = [make_letter(str(n)) for n in range(1, 5)]
    for letter in letters:
        await store.send(letter)
    await store.acknowledge(Parked(message=letters[0], handle=letters[0].id))

    parked = await store.fetch(10)

    assert {p.message.id for p in parked} == {x.id for x in letters[1:]}
    assert len(await store.fetch(2)) == 2


async def test_dynamodb_missing_table_and_oversize_raise(aws: dict[str, Any], dl_table: Any, prefix: str) -> None:
    async with aioboto3.Session(region_name="us-east-1").resource(
        "dynamodb", endpoint_url=aws["dynamodb"].meta.endpoint_url
    ) as resource:
        missing = DynamoDbDeadLetters(await resource.Table(f"{prefix}missing"))
        with pytest.raises(ClientError) as caught:
            await missing.send(make_letter())
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"

    with pytest.raises(DeadLetterTooLarge, match="over the DynamoDB limit of 409600 bytes"):
        await DynamoDbDeadLetters(dl_table).send(big_letter(450_000))
    assert await rows(dl_table) == {}


# --- JSONL --------------------------------------------------------------------------


async def test_jsonl_appends_fsynced_lines_and_fetches_distinct_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nested" / "dir" / "dead-letters.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    a, b, c = make_letter("1"), make_letter("2"), make_letter("3")
    store = JsonlDeadLetters(path)

    for count, letter in enumerate((a, b, a, c), start=1):
        await store.send(letter)
        # On disk (and synced) by the time send returns: file plus, once, its directory.
        assert path.read_text().splitlines()[-1] == letter.to_json()
        assert len(synced) == count + 1

    assert path.read_text() == "".join(x.to_json() + "\n" for x in (a, b, a, c))
    parked = await store.fetch(10)
    assert [p.message for p in parked] == [a, b, c]
    assert [p.handle for p in parked] == [a.id, b.id, c.id]
    assert [p.message for p in await store.fetch(2)] == [a, b]


async def test_jsonl_skips_a_torn_last_line_and_excludes_acknowledged_ids(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    a, b, c, d = (make_letter(str(n)) for n in range(1, 5))
    store = JsonlDeadLetters(path)
    for letter in (a, b, c):
        await store.send(letter)
    # A crash in the middle of writing d.
    with path.open("ab") as handle:
        handle.write(d.to_json().encode()[:100])

    assert [p.message for p in await store.fetch(10)] == [a, b, c]

    # The next send ends the torn line first, so d's retry gets a line of its own.
    await store.send(d)
    assert path.read_text().splitlines()[3] == d.to_json()[:100]
    assert [p.message for p in await store.fetch(10)] == [a, b, c, d]

    before = path.read_bytes()
    parked = await store.fetch(10)
    await store.acknowledge(parked[0])
    await store.acknowledge(parked[2])
    assert path.read_bytes() == before
    assert Path(f"{path}.replayed").read_text() == f"{a.id}\n{c.id}\n"
    assert [p.message for p in await store.fetch(10)] == [b, d]
    # State lives in the files: a new instance sees the same.
    assert [p.message for p in await JsonlDeadLetters(path).fetch(10)] == [b, d]


async def test_jsonl_unwritable_path_raises_and_missing_file_is_empty(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    with pytest.raises(OSError):
        await JsonlDeadLetters(blocker / "dl.jsonl").send(make_letter())
    assert await JsonlDeadLetters(tmp_path / "none.jsonl").fetch(10) == []


# --- factory and config ---------------------------------------------------------------


@pytest.fixture
async def clients(moto_url: str) -> AsyncIterator[AwsClients]:
    clients = AwsClients(AwsConfig(region="us-east-1", endpoint_url=moto_url))
    try:
        yield clients
    finally:
        await clients.close()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"type": "sqs", "queue_url": "http://localhost/123456789012/dlq"}, SqsDeadLetters),
        ({"type": "sns", "topic_arn": "arn:aws:sns:us-east-1:123456789012:dl"}, SnsDeadLetters),
        ({"type": "dynamodb", "table": "dead_letters"}, DynamoDbDeadLetters),
        ({"type": "jsonl", "path": "/tmp/dead-letters.jsonl"}, JsonlDeadLetters),
    ],
)
async def test_build_dead_letters_returns_class_for_type(
    clients: AwsClients, settings: dict[str, str], expected: type
) -> None:
    table_names = {"dead_letters": "aws-dead-letters"}

    store = await build_dead_letters(DeadLetterConfig(**settings), clients, table_names)

    assert type(store) is expected
    assert isinstance(store, DeadLetterDestination)
    if expected is DynamoDbDeadLetters:
        assert store._table.name == "aws-dead-letters"  # type: ignore[union-attr]
    if expected is SnsDeadLetters:
        with pytest.raises(ConfigError, match="subscribe an SQS queue"):
            await build_dead_letter_source(DeadLetterConfig(**settings), clients, table_names)
    else:
        source = await build_dead_letter_source(DeadLetterConfig(**settings), clients, table_names)
        assert type(source) is expected
        assert isinstance(source, DeadLetterSource)


async def test_build_dead_letters_none_and_unknown_table(clients: AwsClients) -> None:
    assert await build_dead_letters(None, clients, {}) is None
    with pytest.raises(ConfigError, match=r"dead_letter.table: unknown table 'dl' \(known: events, orders\)"):
        config = DeadLetterConfig(type="dynamodb", table="dl")
        await build_dead_letters(config, clients, {"orders": "o", "events": "e"})


async def test_factory_built_store_round_trips_through_the_mapped_table(
    clients: AwsClients, aws: dict[str, Any], prefix: str
) -> None:
    name = f"{prefix}dl-physical"
    await aws["dynamodb"].create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    config = DeadLetterConfig(type="dynamodb", table="dead_letters")
    store = await build_dead_letters(config, clients, {"dead_letters": name})
    assert store is not None

    await store.send(make_letter())
    source = await build_dead_letter_source(config, clients, {"dead_letters": name})

    assert [p.message for p in await source.fetch(10)] == [make_letter()]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"type": "sqs"}, "dead-letter type 'sqs' needs 'queue_url'"),
        ({"type": "sns", "queue_url": "http://q"}, "dead-letter type 'sns' needs 'topic_arn'"),
        ({"type": "dynamodb", "table": ""}, "dead-letter type 'dynamodb' needs 'table'"),
        ({"type": "jsonl"}, "dead-letter type 'jsonl' needs 'path'"),
    ],
)
def test_config_requires_the_field_of_its_type(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DeadLetterConfig(**settings)
    assert [error["msg"] for error in caught.value.errors()] == [f"Value error, {message}"]


def test_config_rejects_unknown_types_and_keys_and_is_frozen() -> None:
    with pytest.raises(ValidationError, match="Input should be 'sqs', 'sns', 'dynamodb' or 'jsonl'"):
        DeadLetterConfig(type="kinesis")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DeadLetterConfig(type="jsonl", path="/tmp/x", queue="q")  # type: ignore[call-arg]
    config = DeadLetterConfig(type="jsonl", path="/tmp/x")
    with pytest.raises(ValidationError, match="Instance is frozen"):
        config.path = "/tmp/y"  # type: ignore[misc]


@pytest.mark.parametrize("first", ["worker.config", "worker.deadletter", "worker.deadletter.factory"])
def test_package_imports_without_a_cycle(first: str) -> None:
    # worker.deadletter imports worker.config (DeadLetterConfig): either import order must work.
    code = f"import {first}; import worker.config, worker.deadletter, worker.aws; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
