"""StreamRecord decoding and route matching (events, equality, dotted paths, any-of)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, cast

import pytest
import yaml
from boto3.dynamodb.types import Binary

from worker.config import parse_config
from worker.processing.router import Route, Router
from worker.records import EventName, StreamRecord, StreamViewType
from worker.testing import make_record

ARN = "arn:aws:dynamodb:us-east-1:1:table/orders/stream/1"


def record(
    sequence: int | str,
    event_name: str = "INSERT",
    *,
    keys: dict[str, Any] | None = None,
    new_image: dict[str, Any] | None = None,
    old_image: dict[str, Any] | None = None,
    view_type: str = "NEW_AND_OLD_IMAGES",
    table: str = "orders",
) -> StreamRecord:
    return make_record(event_name, keys or {"id": f"item-{sequence}"}, new_image, old_image, table=table,
                       sequence_number=sequence, view_type=view_type, stream_arn=ARN, shard_id="shard-1",
                       event_id=f"ev-{sequence}")


def wire(rec: StreamRecord) -> dict[str, Any]:
    """The record's raw dict, to put in what make_record would refuse to build."""
    return cast(dict[str, Any], rec.raw["dynamodb"])


# ---- StreamRecord ---------------------------------------------------------------------------


def test_record_decodes_keys_and_images() -> None:
    rec = record(
        "000000000000000000123",
        "MODIFY",
        keys={"orderId": "o-1", "line": 2},
        new_image={
            "total": Decimal("12.50"),
            "qty": 3,
            "blob": b"\x00\x01\xff",
            "paid": True,
            "note": None,
            "tags": {"a", "b"},
            "sizes": {Decimal("1"), Decimal("2.5")},
            "payload": {"action": "created", "items": [1, "x"]},
        },
        old_image={"total": 10},
    )

    assert wire(rec)["NewImage"]["total"] == {"N": "12.50"}  # the wire form decoded below
    assert rec.keys == {"orderId": "o-1", "line": Decimal("2")}
    new = rec.new_image
    assert new is not None
    assert new["total"] == Decimal("12.50") and isinstance(new["total"], Decimal)
    assert new["qty"] == Decimal(3) and isinstance(new["qty"], Decimal)
    assert isinstance(new["blob"], Binary) and new["blob"].value == b"\x00\x01\xff"
    assert new["paid"] is True
    assert new["note"] is None
    assert new["tags"] == {"a", "b"}
    assert new["sizes"] == {Decimal("1"), Decimal("2.5")}
    assert new["payload"] == {"action": "created", "items": [Decimal(1), "x"]}
    assert rec.old_image == {"orderId": "o-1", "line": Decimal(2), "total": Decimal("10")}
    assert rec.event_name is EventName.MODIFY
    assert rec.sequence_number == "000000000000000000123"
    assert rec.sequence_int == 123
    assert rec.view_type is StreamViewType.NEW_AND_OLD_IMAGES
    assert rec.size_bytes == wire(rec)["SizeBytes"] > 0
    assert rec.event_id == "ev-000000000000000000123"
    assert (rec.table, rec.stream_arn, rec.shard_id) == ("orders", ARN, "shard-1")


def test_images_are_decoded_lazily_and_cached() -> None:
    # An undecodable image costs nothing until someone reads it.
    rec = record(7, "MODIFY", keys={"id": "k"}, new_image={}, old_image={"ok": 1})
    wire(rec)["NewImage"] = {"bad": {"ZZ": "?"}}
    wire(rec)["OldImage"] = {"ok": {"N": "1"}}

    assert rec.keys == {"id": "k"}
    assert rec.sequence_int == 7
    with pytest.raises(TypeError):
        _ = rec.new_image
    first = rec.old_image
    assert first == {"ok": Decimal(1)}
    assert rec.old_image is first  # cached: decoded once
    assert rec.keys is rec.keys
    assert wire(rec)["OldImage"] == {"ok": {"N": "1"}}  # raw left untouched


def test_absent_images_and_keys() -> None:
    rec = record(1, "REMOVE", view_type="KEYS_ONLY")
    del wire(rec)["Keys"]

    assert rec.keys == {}
    assert rec.new_image is None
    assert rec.old_image is None
    assert rec.event_name is EventName.REMOVE
    assert rec.view_type is StreamViewType.KEYS_ONLY


@pytest.mark.parametrize("name", ["INSERT", "MODIFY", "REMOVE"])
def test_event_name_enum(name: str) -> None:
    rec = record(1, name)

    assert rec.event_name is EventName(name)
    assert rec.event_name == name


def test_unknown_event_name_is_rejected() -> None:
    rec = record(1)
    cast(dict[str, Any], rec.raw)["eventName"] = "UPSERT"
    with pytest.raises(ValueError):
        _ = rec.event_name


def test_sequence_numbers_compare_as_integers() -> None:
    shorter, longer = record("999"), record("1000")

    assert shorter.sequence_number > longer.sequence_number  # as strings: wrong order
    assert shorter.sequence_int < longer.sequence_int


def test_approximate_creation_time() -> None:
    from_epoch = record(1)
    wire(from_epoch)["ApproximateCreationDateTime"] = 1714566645
    stamp = datetime(2024, 5, 1, 12, 30, 45, tzinfo=timezone.utc)
    as_datetime = record(2)
    wire(as_datetime)["ApproximateCreationDateTime"] = stamp
    absent = record(3)
    del wire(absent)["ApproximateCreationDateTime"]

    assert from_epoch.approximate_creation_time == stamp
    assert from_epoch.approximate_creation_time.tzinfo is not None  # type: ignore[union-attr]
    assert as_datetime.approximate_creation_time is stamp
    assert absent.approximate_creation_time is None


def test_approximate_creation_epoch_in_every_form() -> None:
    stamp = datetime(2024, 5, 1, 12, 30, 45, tzinfo=timezone.utc)
    forms: list[Any] = [1714566645, 1714566645.0, stamp, stamp.replace(tzinfo=None)]  # naive: UTC
    for index, value in enumerate(forms):
        rec = record(index)
        wire(rec)["ApproximateCreationDateTime"] = value
        assert rec.approximate_creation_epoch == 1714566645.0, value
    absent = record(9)
    del wire(absent)["ApproximateCreationDateTime"]
    assert absent.approximate_creation_epoch is None


def test_item_key_is_stable_across_attribute_order() -> None:
    a = record(1, keys={"pk": "a", "sk": 1})
    b = record(2, keys={"sk": 1, "pk": "a"})
    c = record(3, keys={"pk": "a", "sk": 2})

    assert a.item_key == b.item_key
    assert a.item_key != c.item_key


# ---- routing --------------------------------------------------------------------------------

ROUTES_YAML = """
tables:
  orders: {name: orders-table}
  events: {name: events-table}
routes:
  - name: inserts
    table: orders
    events: [INSERT]
    handler: tests.unit.sample_handlers:good_handler
  - name: qty-three
    table: orders
    events: [INSERT, MODIFY]
    when: {new_image: {qty: 3}}
    handler: tests.unit.sample_handlers:good_handler
  - name: price
    table: orders
    when: {new_image: {price: 9.99}}
    handler: tests.unit.sample_handlers:good_handler
  - name: action
    table: orders
    when: {new_image: {payload.action: created, payload.meta.level: 2}}
    handler: tests.unit.sample_handlers:good_handler
  - name: any-status
    table: orders
    when: {new_image: {status: [NEW, PENDING]}}
    handler: tests.unit.sample_handlers:good_handler
  - name: any-priority
    table: orders
    when: {new_image: {priority: [1, 2]}}
    handler: tests.unit.sample_handlers:good_handler
  - name: flag
    table: orders
    when: {new_image: {active: true}}
    handler: tests.unit.sample_handlers:good_handler
  - name: from-new
    table: orders
    events: [MODIFY]
    when: {old_image: {status: NEW}, new_image: {status: PROCESSING}}
    handler: tests.unit.sample_handlers:good_handler
  - name: removed
    table: orders
    events: [REMOVE]
    when: {old_image: {status: CANCELLED}}
    handler: tests.unit.sample_handlers:good_handler
  - name: events-any
    table: events
    handler: tests.unit.sample_handlers:good_handler
"""


@pytest.fixture(scope="module")
def router() -> Router:
    return Router.from_config(parse_config(yaml.safe_load(ROUTES_YAML), env={}))


def matched(router: Router, rec: StreamRecord) -> list[str]:
    return [route.name for route in router.routes_for(rec)]


def test_routes_match_on_event_name(router: Router) -> None:
    assert matched(router, record(1, "INSERT", new_image={"x": "y"})) == ["inserts"]
    assert matched(router, record(2, "MODIFY", new_image={"x": "y"})) == []
    assert matched(router, record(3, "REMOVE", old_image={"x": "y"})) == []


def test_routes_match_only_their_table(router: Router) -> None:
    assert matched(router, record(1, "REMOVE", table="events")) == ["events-any"]
    assert matched(router, record(1, "REMOVE", table="shipments")) == []


@pytest.mark.parametrize(
    ("qty", "expected"),
    [
        (3, ["inserts", "qty-three"]),
        (Decimal("3.0"), ["inserts", "qty-three"]),
        (Decimal("3.5"), ["inserts"]),
        (4, ["inserts"]),
        ("3", ["inserts"]),  # a string is not the number 3
        (True, ["inserts"]),
        ([3], ["inserts"]),
    ],
)
def test_numeric_equality_yaml_int_against_decimal(router: Router, qty: Any, expected: list[str]) -> None:
    assert matched(router, record(1, new_image={"qty": qty})) == expected


@pytest.mark.parametrize(("price", "expected"), [("9.99", ["price"]), ("9.990", ["price"]), ("9.9", [])])
def test_numeric_equality_yaml_float_against_decimal(router: Router, price: str, expected: list[str]) -> None:
    assert matched(router, record(1, "MODIFY", new_image={"price": Decimal(price)})) == expected


def test_modify_with_matching_qty_matches_only_qty_route(router: Router) -> None:
    assert matched(router, record(1, "MODIFY", new_image={"qty": 3})) == ["qty-three"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"action": "created", "meta": {"level": 2}}, ["action"]),
        ({"action": "created", "meta": {"level": 3}}, []),
        ({"action": "deleted", "meta": {"level": 2}}, []),
        ({"action": "created"}, []),  # payload.meta.level missing
        ({"action": "created", "meta": "level"}, []),  # meta is not a map
        ("created", []),  # payload is not a map
    ],
)
def test_dotted_paths_reach_into_maps(router: Router, payload: Any, expected: list[str]) -> None:
    assert matched(router, record(1, "MODIFY", new_image={"payload": payload})) == expected


def test_dotted_condition_does_not_match_a_flat_attribute_with_a_dot(router: Router) -> None:
    image = {"payload.action": "created", "payload.meta.level": 2}

    assert matched(router, record(1, "MODIFY", new_image=image)) == []


@pytest.mark.parametrize(("status", "expected"), [("NEW", ["any-status"]), ("PENDING", ["any-status"]), ("DONE", [])])
def test_list_value_matches_any_of(router: Router, status: str, expected: list[str]) -> None:
    assert matched(router, record(1, "MODIFY", new_image={"status": status})) == expected


@pytest.mark.parametrize(("priority", "expected"), [("1", ["any-priority"]), ("2.0", ["any-priority"]), ("3", [])])
def test_list_any_of_with_numbers(router: Router, priority: str, expected: list[str]) -> None:
    assert matched(router, record(1, "MODIFY", new_image={"priority": Decimal(priority)})) == expected


@pytest.mark.parametrize(
    ("active", "expected"), [(True, ["flag"]), (False, []), (1, []), ("true", [])]
)
def test_boolean_condition_matches_only_a_boolean(router: Router, active: Any, expected: list[str]) -> None:
    assert matched(router, record(1, "MODIFY", new_image={"active": active})) == expected


def test_missing_attribute_does_not_match(router: Router) -> None:
    assert matched(router, record(1, "MODIFY", new_image={"other": "x"})) == []


def test_missing_new_image_does_not_match_conditions(router: Router) -> None:
    assert matched(router, record(1, "MODIFY", view_type="KEYS_ONLY")) == []


@pytest.mark.parametrize(
    ("old_status", "new_status", "expected"),
    [
        ("NEW", "PROCESSING", ["from-new"]),
        ("PENDING", "PROCESSING", []),  # old image decides
        ("NEW", "NEW", ["any-status"]),
    ],
)
def test_old_image_conditions(router: Router, old_status: str, new_status: str, expected: list[str]) -> None:
    rec = record(1, "MODIFY", old_image={"status": old_status}, new_image={"status": new_status})

    assert matched(router, rec) == expected


def test_old_image_condition_without_old_image_does_not_match(router: Router) -> None:
    assert matched(router, record(1, "MODIFY", new_image={"status": "PROCESSING"})) == []


def test_remove_matches_on_old_image(router: Router) -> None:
    cancelled = record(1, "REMOVE", old_image={"status": "CANCELLED"})
    shipped = record(2, "REMOVE", old_image={"status": "SHIPPED"})

    assert matched(router, cancelled) == ["removed"]
    assert matched(router, shipped) == []


def test_several_routes_match_in_config_order(router: Router) -> None:
    rec = record(1, "INSERT", new_image={"qty": 3, "status": "NEW", "active": True})

    assert matched(router, rec) == ["inserts", "qty-three", "any-status", "flag"]


def test_images_each_table_needs(router: Router) -> None:
    assert router.tables_needing_images() == {"orders": {"new", "old"}, "events": {"new"}}
    by_name: dict[str, Route] = {r.name: r for r in router.routes}
    assert by_name["removed"].needs_old_image and not by_name["removed"].needs_new_image
    assert by_name["from-new"].needs_old_image and by_name["from-new"].needs_new_image
    assert by_name["events-any"].events == frozenset({"INSERT", "MODIFY", "REMOVE"})


def test_remove_only_route_without_new_image_conditions_needs_no_new_image() -> None:
    config = parse_config(
        yaml.safe_load(
            """
tables: {orders: {name: orders-table}, events: {name: events-table}}
routes:
  - name: gone
    table: orders
    events: [REMOVE]
    handler: tests.unit.sample_handlers:good_handler
"""
        ),
        env={},
    )

    assert Router.from_config(config).tables_needing_images() == {"orders": set()}


def test_filters_are_compiled_once_by_validation_and_reused_by_the_router(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.processing.filters as filters

    compiled: list[Any] = []
    original = filters.compile_pattern

    def counting(pattern: Any, path: str = "filters[0]") -> Any:
        compiled.append(pattern)
        return original(pattern, path)

    monkeypatch.setattr(filters, "compile_pattern", counting)
    config = parse_config(
        yaml.safe_load(
            """
tables: {orders: {name: orders-table}}
routes:
  - name: inserts
    table: orders
    handler: tests.unit.sample_handlers:good_handler
    filters: [{eventName: [INSERT]}, {dynamodb: {NewImage: {status: {S: [paid]}}}}]
"""
        ),
        env={},
    )
    assert len(compiled) == 2  # validation compiled both patterns
    route = Router.from_config(config).routes[0]
    assert len(compiled) == 2  # and the router compiled nothing again
    assert route.filters is config.routes[0].filter_predicate()
    assert matched(Router([route]), record(1, "INSERT", new_image={"x": "y"})) == ["inserts"]
    assert matched(Router([route]), record(2, "MODIFY", new_image={"x": "y"})) == []
