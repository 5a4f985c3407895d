"""Configuration: the shipped file loads; every error names the key path and the reason."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.config import AwsConfig, load_config, parse_config
from worker.errors import ConfigError
from worker.processing.router import Router

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config" / "worker.yaml"
HANDLERS = "tests.unit.sample_handlers"

BASE: dict[str, Any] = {
    "tables": {"orders": {"name": "orders-table"}, "events": {"name": "events-table"}},
    "routes": [{"name": "orders-route", "table": "orders", "handler": f"{HANDLERS}:good_handler"}],
}


def doc(**sections: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(sections)
    return data


def problems_of(data: Any, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={} if env is None else env)
    return info.value.problems


# ---- the shipped config ---------------------------------------------------------------------


def test_repo_config_loads_with_an_empty_environment() -> None:
    config = load_config(REPO_CONFIG, env={})

    assert sorted(config.tables) == ["dead_letters", "events", "orders", "shipments"]
    assert config.tables["orders"].name == "orders"
    assert config.tables["orders"].key == "orderId"
    assert [r.name for r in config.routes] == ["order-processing", "shipment-dispatch"]
    assert config.routes[0].handler == "worker.handlers.orders:process_order"
    assert config.routes[0].events == ["INSERT"]
    assert config.routes[0].when.new_image == {"status": "NEW"}
    assert config.consumed_tables == ["events", "orders"]
    assert (config.publisher.type, config.publisher.table) == ("outbox", "events")
    # "${VAR:-}" means unset: the field default applies.
    assert config.worker.id is None
    assert config.aws.region is None
    assert config.aws.endpoint_url is None
    assert config.observability.metrics.port == 9400
    assert config.observability.logging.level == "INFO"
    assert config.reader.on_trimmed_data == "restart_at_trim_horizon"


def test_repo_config_takes_values_from_the_environment() -> None:
    config = load_config(
        REPO_CONFIG, env={"ORDERS_TABLE": "prod-orders", "METRICS_PORT": "0", "WORKER_ID": "w-7", "LOG_LEVEL": "DEBUG"}
    )

    assert config.tables["orders"].name == "prod-orders"
    assert config.tables["events"].name == "events"
    assert config.observability.metrics.port == 0
    assert config.worker.id == "w-7"
    assert config.worker.resolved_id() == "w-7"
    assert config.observability.logging.level == "DEBUG"


def test_repo_config_handlers_resolve() -> None:
    router = Router.from_config(load_config(REPO_CONFIG, env={}))

    assert [r.name for r in router.routes] == ["order-processing", "shipment-dispatch"]


# ---- validation errors ----------------------------------------------------------------------


def test_unknown_key_is_named() -> None:
    [(path, reason)] = problems_of(doc(reader={"bogus": 1}))
    assert path == "reader.bogus"
    assert reason.startswith("unknown key; (known here: discovery_interval_seconds, ")


def test_unknown_top_level_section_is_named() -> None:
    [(path, reason)] = problems_of(doc(readers={}))
    assert (path, reason.split("?")[0]) == ("readers", "unknown key; did you mean 'reader'")


def test_wrong_type_is_named() -> None:
    problems = problems_of(doc(reader={"max_records": "lots"}))

    assert len(problems) == 1
    path, reason = problems[0]
    assert path == "reader.max_records"
    assert "valid integer" in reason


def test_out_of_range_value_is_named() -> None:
    problems = problems_of(doc(reader={"max_records": 5000}))

    assert [p for p, _ in problems] == ["reader.max_records"]
    assert "1000" in problems[0][1]


def test_wrong_type_deep_in_a_list_is_named() -> None:
    data = doc()
    data["routes"][0]["events"] = ["INSERT", "UPSERT"]

    problems = problems_of(data)

    assert [p for p, _ in problems] == ["routes[0].events[1]"]
    assert "INSERT" in problems[0][1] and "REMOVE" in problems[0][1]


def test_route_naming_unknown_table_lists_the_known_tables() -> None:
    data = doc()
    data["routes"][0]["table"] = "ordrs"

    assert problems_of(data) == [("routes[0].table", "unknown table 'ordrs' (known: events, orders); did you mean 'orders'?")]


def test_duplicate_route_names_are_reported() -> None:
    data = doc()
    data["routes"].append(dict(data["routes"][0], table="events"))

    assert problems_of(data) == [("routes[1].name", "duplicate route name 'orders-route'")]


def test_all_cross_check_problems_are_reported_together() -> None:
    data = doc(publisher={"type": "outbox", "table": "outbox"})
    data["routes"][0]["table"] = "nope"
    data["routes"].append(dict(data["routes"][0]))

    paths = [p for p, _ in problems_of(data)]

    assert paths == ["routes[0].table", "routes[1].table", "routes[1].name", "publisher.table"]


def test_sqs_publisher_without_queue_url() -> None:
    problems = problems_of(doc(publisher={"type": "sqs"}))

    assert len(problems) == 1
    path, reason = problems[0]
    assert path == "publisher"
    assert "queue_url" in reason and "sqs" in reason


def test_sqs_publisher_with_queue_url_is_valid() -> None:
    config = parse_config(doc(publisher={"type": "sqs", "queue_url": "https://sqs/q"}), env={})

    assert config.publisher.queue_url == "https://sqs/q"


def test_missing_required_sections() -> None:
    paths = sorted(p for p, _ in problems_of({"reader": {}}))

    assert paths == ["routes", "tables"]


def test_non_mapping_document() -> None:
    assert problems_of(["a", "b"]) == [("(root)", "the config must be a mapping of sections")]
    assert problems_of(None) == [("(root)", "the config must be a mapping of sections")]


# ---- environment interpolation --------------------------------------------------------------


def test_unset_variable_without_default_names_the_key_using_it() -> None:
    data = doc(leases={"table": "${LEASE_TABLE_NAME}"})
    data["routes"][0]["handler"] = "${HANDLER_PATH}"

    problems = problems_of(data, env={"OTHER": "x"})

    assert sorted(problems) == [
        ("leases.table", "environment variable LEASE_TABLE_NAME is not set and has no default"),
        ("routes[0].handler", "environment variable HANDLER_PATH is not set and has no default"),
    ]


def test_empty_variable_counts_as_unset() -> None:
    assert problems_of(doc(leases={"table": "${LT}"}), env={"LT": ""}) == [
        ("leases.table", "environment variable LT is not set and has no default")
    ]


def test_default_applies_when_unset_and_value_wins_when_set() -> None:
    data = doc(leases={"table": "${LT:-fallback-leases}"}, reader={"max_records": "${MAX:-250}"})

    unset = parse_config(data, env={})
    assert unset.leases.table == "fallback-leases"
    assert unset.reader.max_records == 250

    set_ = parse_config(data, env={"LT": "from-env", "MAX": "7"})
    assert set_.leases.table == "from-env"
    assert set_.reader.max_records == 7


def test_variables_inside_a_longer_string() -> None:
    data = doc(tables={"orders": {"name": "${STAGE:-dev}-orders-${REGION_TAG:-x}"}, "events": {"name": "evts"}})

    config = parse_config(data, env={"STAGE": "prod"})

    assert config.tables["orders"].name == "prod-orders-x"


def test_empty_default_falls_back_to_the_field_default() -> None:
    config = parse_config(doc(reader={"max_records": "${MAX:-}"}), env={})

    assert config.reader.max_records == 1000


def test_interpolated_value_is_still_validated() -> None:
    problems = problems_of(doc(reader={"max_records": "${MAX}"}), env={"MAX": "many"})

    assert [p for p, _ in problems] == ["reader.max_records"]


# ---- files ----------------------------------------------------------------------------------


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("worker:\n  id: a\nreader:\n  max_records: 5\n    idle_poll_seconds: 1\n")

    with pytest.raises(ConfigError) as info:
        load_config(path, env={})

    assert len(info.value.problems) == 1
    key, reason = info.value.problems[0]
    assert key == "(yaml)"
    assert "line 5" in reason
    assert "line 5" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as info:
        load_config(path, env={})

    assert len(info.value.problems) == 1
    key, reason = info.value.problems[0]
    assert key == "(file)"
    assert str(path) in reason
    assert "No such file" in reason


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")

    with pytest.raises(ConfigError) as info:
        load_config(path, env={})

    assert info.value.problems == [("(root)", "the config must be a mapping of sections")]


# ---- handler import strings (Router.from_config) --------------------------------------------


def routes_with(*handlers: str) -> dict[str, Any]:
    return doc(routes=[{"name": f"r{i}", "table": "orders", "handler": h} for i, h in enumerate(handlers)])


def test_handler_import_errors_name_each_route() -> None:
    config = parse_config(
        routes_with(
            f"{HANDLERS}:good_handler",
            "tests.unit.no_such_module:handler",
            f"{HANDLERS}:missing_attribute",
            f"{HANDLERS}:sync_handler",
            f"{HANDLERS}:HandlerClass",
            f"{HANDLERS}:not_callable",
        ),
        env={},
    )

    with pytest.raises(ConfigError) as info:
        Router.from_config(config)

    problems = dict(info.value.problems)
    assert list(problems) == [
        "routes[1].handler",
        "routes[2].handler",
        "routes[3].handler",
        "routes[4].handler",
        "routes[5].handler",
    ]
    assert "cannot import module 'tests.unit.no_such_module'" in problems["routes[1].handler"]
    assert "has no attribute 'missing_attribute'" in problems["routes[2].handler"]
    assert "not an async callable" in problems["routes[3].handler"]
    assert "sync_handler" in problems["routes[3].handler"]
    assert "not an async callable" in problems["routes[4].handler"]
    assert "HandlerClass" in problems["routes[4].handler"]
    assert "not an async callable" in problems["routes[5].handler"]


def test_async_function_and_async_callable_instance_are_accepted() -> None:
    from tests.unit import sample_handlers

    router = Router.from_config(
        parse_config(routes_with(f"{HANDLERS}:good_handler", f"{HANDLERS}:callable_instance"), env={})
    )

    assert [r.handler for r in router.routes] == [sample_handlers.good_handler, sample_handlers.callable_instance]


def test_handler_string_without_colon_is_rejected_at_parse_time() -> None:
    problems = problems_of(routes_with("tests.unit.sample_handlers.good_handler"))

    assert [p for p, _ in problems] == ["routes[0].handler"]


# ---- region resolution ----------------------------------------------------------------------


def test_region_from_aws_region_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")

    assert load_config(REPO_CONFIG, env={}).aws.resolved_region() == "eu-west-3"


def test_region_from_aws_default_region_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")

    assert load_config(REPO_CONFIG, env={}).aws.resolved_region() == "ap-south-1"


def test_region_in_config_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")

    assert AwsConfig(region="us-west-2").resolved_region() == "us-west-2"


def test_no_region_anywhere_names_aws_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    config = load_config(REPO_CONFIG, env={})

    with pytest.raises(ConfigError) as info:
        config.aws.resolved_region()

    assert [p for p, _ in info.value.problems] == ["aws.region"]


# ---- fuzz: nothing but ConfigError ----------------------------------------------------------

_KEYS = st.one_of(
    st.sampled_from(
        ["worker", "aws", "tables", "leases", "reader", "processing", "publisher", "routes", "observability",
         "name", "table", "events", "when", "new_image", "old_image", "handler", "options", "type", "queue_url",
         "region", "max_records", "duration_seconds", "retry", "metrics", "logging", "port", "stream", "orders"]
    ),
    st.text(max_size=8),
)
_LEAVES = st.one_of(
    st.integers(),
    st.text(max_size=16),
    st.sampled_from(["${A}", "${A:-}", "${A:-x}", "${", "INSERT", "outbox", "sqs", "orders", "m:f", "1e999", "nan"]),
)
_DOCUMENTS = st.recursive(
    _LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_DOCUMENTS, env=st.dictionaries(st.sampled_from(["A", "B"]), st.text(max_size=4)))
def test_random_documents_raise_only_config_error(data: Any, env: dict[str, str]) -> None:
    try:
        config = parse_config(data, env=env)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError must carry at least one problem"
        assert all(isinstance(p, str) and isinstance(r, str) for p, r in exc.problems)
    else:
        assert config.routes and config.tables


def test_handler_module_that_crashes_on_import_is_a_config_error() -> None:
    config = parse_config(routes_with("tests.unit.broken_handler_module:handler"), env={})
    with pytest.raises(ConfigError) as info:
        Router.from_config(config)
    assert info.value.problems == [
        (
            "routes[0].handler",
            "importing module 'tests.unit.broken_handler_module' failed: RuntimeError: boom at import time",
        )
    ]


def test_explicit_null_in_a_condition_is_kept_and_empty_sections_mean_defaults() -> None:
    data = doc(leases=None)
    data["routes"][0]["when"] = {"new_image": {"deletedAt": None}}
    config = parse_config(data, env={})
    assert config.routes[0].when.new_image == {"deletedAt": None}
    assert config.leases.duration_seconds == 10
