"""observability.tracing: settled from the config or the standard OTLP environment, and a
clear error when tracing is asked for without the otel extra."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers import seed_document
from worker import config as config_module
from worker.config import parse_config
from worker.errors import ConfigError


def document(tracing: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = seed_document("http://127.0.0.1:1", "t-")
    if tracing is not None:
        doc["observability"]["tracing"] = tracing
    return doc


@pytest.mark.parametrize(("tracing", "env", "expected"), [
    (None, {}, False),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"enabled": False}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"enabled": True, "endpoint": "http://collector:4318/v1/traces"}, {}, True),
])
def test_enabled_is_settled_from_config_and_environment(
    tracing: dict[str, Any] | None, env: dict[str, str], expected: bool
) -> None:
    assert parse_config(document(tracing), env=env).observability.tracing.enabled is expected


def test_without_the_extra_tracing_is_a_config_error_naming_key_and_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "_importable", lambda module: False)
    with pytest.raises(ConfigError) as raised:
        parse_config(document({"enabled": True}), env={})
    assert raised.value.problems[0][0] == "observability.tracing.enabled"
    assert "pip install 'stream-worker[otel]'" in raised.value.problems[0][1]

    with pytest.raises(ConfigError) as raised:
        parse_config(document(), env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in raised.value.problems[0][0]
    # Off: the extra is not needed.
    assert parse_config(document(), env={}).observability.tracing.enabled is False


@pytest.mark.parametrize(("tracing", "key"), [
    ({"sampling_ratio": 1.5}, "observability.tracing.sampling_ratio"),
    ({"endpoint": "collector:4318"}, "observability.tracing.endpoint"),
    ({"sample": 0.5}, "observability.tracing.sample"),
])
def test_bad_tracing_values_name_the_key(tracing: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(document(tracing), env={})
    assert [path for path, _ in raised.value.problems] == [key]
