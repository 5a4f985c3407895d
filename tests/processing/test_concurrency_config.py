"""The concurrency knobs in the config: ``routes[].max_concurrency``, its Lambda alias
``parallelization_factor``, and ``processing.max_concurrent_handler_calls``."""

from __future__ import annotations

from typing import Any

import pytest

from worker.config import DEFAULT_MAX_CONCURRENCY, parse_config
from worker.errors import ConfigError
from worker.processing.router import build_route


def document(route: dict[str, Any] | None = None, processing: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "tables": {"orders": {"name": "orders-table"}, "events": {"name": "events-table"}},
        "processing": processing or {},
        "routes": [{"name": "r", "table": "orders", "handler": "worker.handlers.orders:handle", **(route or {})}],
    }


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(doc, env={})
    return list(caught.value.problems)


def test_default_is_ten_calls_per_route_and_shard_and_a_thousand_per_process() -> None:
    config = parse_config(document(), env={})
    assert DEFAULT_MAX_CONCURRENCY == 10
    assert config.routes[0].concurrency == 10
    assert build_route(config.routes[0], None, config.processing).max_concurrency == 10
    assert config.processing.max_concurrent_handler_calls == 1_000


@pytest.mark.parametrize(("setting", "value"), [("max_concurrency", 1), ("max_concurrency", 1_000),
                                                ("parallelization_factor", 4), ("parallelization_factor", 100)])
def test_max_concurrency_or_its_lambda_alias_sets_the_route_bound(setting: str, value: int) -> None:
    config = parse_config(document({setting: value}), env={})
    assert build_route(config.routes[0], None, config.processing).max_concurrency == value


def test_both_names_at_once_is_an_error_naming_the_replacement() -> None:
    assert problems(document({"max_concurrency": 20, "parallelization_factor": 4})) == [
        ("routes[0]", "set max_concurrency only: parallelization_factor is its Lambda-compatible alias"),
    ]


@pytest.mark.parametrize(("setting", "value", "reason"), [
    ("max_concurrency", 0, "greater than or equal to 1"),
    ("max_concurrency", 1_001, "less than or equal to 1000"),
    ("parallelization_factor", 101, "less than or equal to 100"),
])
def test_out_of_range_values_name_the_key(setting: str, value: int, reason: str) -> None:
    ((key, message),) = problems(document({setting: value}))
    assert key == f"routes[0].{setting}" and reason in message


def test_process_bound_out_of_range_names_the_key() -> None:
    ((key, message),) = problems(document(processing={"max_concurrent_handler_calls": 0}))
    assert key == "processing.max_concurrent_handler_calls" and "greater than or equal to 1" in message
