"""make_record: StreamRecords from plain Python values, shaped like the wire."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from boto3.dynamodb.types import Binary

from worker import EventName, StreamRecord
from worker.processing.filters import compile_filters
from worker.testing import make_record


def test_insert_has_typed_keys_and_a_new_image_with_the_key() -> None:
    record = make_record("INSERT", {"orderId": "o-1"}, new_image={"total": 12.5, "qty": 3, "tags": {"a"}},
                         table="orders")
    assert isinstance(record, StreamRecord) and record.table == "orders"
    assert record.event_name is EventName.INSERT and record.old_image is None
    assert record.raw["dynamodb"]["Keys"] == {"orderId": {"S": "o-1"}}
    assert record.raw["dynamodb"]["NewImage"]["total"] == {"N": "12.5"}  # floats through Decimal
    assert record.new_image == {"orderId": "o-1", "total": Decimal("12.5"), "qty": Decimal(3), "tags": {"a"}}
    assert record.event_source == "aws:dynamodb" and record.aws_region == "us-east-1"
    assert record.user_identity is None and not record.is_ttl_delete


def test_modify_and_remove_carry_the_images_they_have() -> None:
    modify = make_record("MODIFY", {"pk": "k", "sk": 2}, new_image={"v": b"\x00"}, old_image={"v": None})
    assert modify.keys == {"pk": "k", "sk": Decimal(2)}
    assert modify.new_image == {"pk": "k", "sk": Decimal(2), "v": Binary(b"\x00")}
    assert modify.old_image == {"pk": "k", "sk": Decimal(2), "v": None}
    remove = make_record("REMOVE", {"pk": "k"}, old_image={"v": [1, {"deep": 0.25}]})
    assert remove.new_image is None and remove.old_image == {"pk": "k", "v": [Decimal(1), {"deep": Decimal("0.25")}]}


def test_a_ttl_delete_carries_the_service_identity() -> None:
    expired = make_record("REMOVE", {"pk": "k"}, old_image={"ttl": 1}, ttl_delete=True)
    assert expired.user_identity == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    assert expired.is_ttl_delete
    # Filters can tell them apart, as Lambda's can.
    only_ttl = compile_filters([{"userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]}}],
                               "filters")
    assert only_ttl is not None
    assert only_ttl(expired.raw) and not only_ttl(make_record("REMOVE", {"pk": "k"}).raw)


def test_sequence_numbers_increase_and_can_be_given() -> None:
    first, second = make_record("INSERT", {"pk": "a"}), make_record("INSERT", {"pk": "b"})
    assert second.sequence_int > first.sequence_int and len(first.sequence_number) == 21
    created = datetime(2024, 5, 1, tzinfo=timezone.utc)
    given = make_record("INSERT", {"pk": "a"}, sequence_number=42, created=created, shard_id="s-1", table="t")
    assert (given.sequence_number, given.shard_id, given.approximate_creation_time) == ("42", "s-1", created)
    assert given.stream_arn.startswith("arn:aws:dynamodb:us-east-1:") and ":table/t/stream/" in given.stream_arn


def test_view_type_drops_the_images_the_stream_would_not_carry() -> None:
    keys_only = make_record("MODIFY", {"pk": "a"}, new_image={"v": 1}, old_image={"v": 0}, view_type="KEYS_ONLY")
    assert keys_only.new_image is None and keys_only.old_image is None and keys_only.keys == {"pk": "a"}
    new_only = make_record("MODIFY", {"pk": "a"}, new_image={"v": 1}, old_image={"v": 0}, view_type="NEW_IMAGE")
    assert new_only.new_image == {"pk": "a", "v": Decimal(1)} and new_only.old_image is None


@pytest.mark.parametrize(("call", "message"), [
    (lambda: make_record("INSERT", {"pk": "a"}, old_image={"v": 1}), "INSERT record has no old image"),
    (lambda: make_record("REMOVE", {"pk": "a"}, new_image={"v": 1}), "REMOVE record has no new image"),
    (lambda: make_record("MODIFY", {"pk": "a"}, ttl_delete=True), "REMOVE records only"),
    (lambda: make_record("UPSERT", {"pk": "a"}), "UPSERT"),
    (lambda: make_record("INSERT", {}), "primary key"),
])
def test_impossible_records_are_refused(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
