"""The lock-free per-record metrics expose exactly what prometheus-client's own would."""

from __future__ import annotations

import pytest

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from worker.observability.loop_metrics import LoopCounter, LoopGauge, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1, 10)
OBSERVED = [0.0005, 0.001, 0.0011, 0.05, 0.05, 0.9, 3.0, 42.0]


def _without_created(text: str) -> list[str]:
    """The exposition with each `_created` sample's value blanked (the moment each child was
    made: the two registries differ there only); the samples themselves stay compared."""
    lines = []
    for line in text.splitlines():
        name = line.split(" ")[0]
        if "_created" in name and not line.startswith("#"):
            line = name + " <created>"
        lines.append(line)
    return lines


def _pair() -> tuple[CollectorRegistry, CollectorRegistry]:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = LoopCounter("w_handled_total", "Handled", ["stream", "outcome"], registry=ours)
    reference_counter = Counter("w_handled_total", "Handled", ["stream", "outcome"], registry=theirs)
    histogram = LoopHistogram("w_duration_seconds", "Duration", ["route"], buckets=BUCKETS, registry=ours)
    reference_histogram = Histogram("w_duration_seconds", "Duration", ["route"], buckets=BUCKETS, registry=theirs)
    gauge = LoopGauge("w_age_seconds", "Age", ["stream"], registry=ours)
    reference_gauge = Gauge("w_age_seconds", "Age", ["stream"], registry=theirs)
    for i, value in enumerate(OBSERVED):
        outcome = "ok" if i % 3 else "error"
        counter.labels("orders", outcome).inc()
        reference_counter.labels("orders", outcome).inc()
        exemplar = {"trace_id": f"{i:032x}"} if i == 3 else None
        histogram.labels("r1" if i % 2 else "r2").observe(value, exemplar)
        reference_histogram.labels("r1" if i % 2 else "r2").observe(value, exemplar)
        gauge.labels("orders").set(value)
        reference_gauge.labels("orders").set(value)
    counter.labels("events", "ok").inc(5)
    reference_counter.labels("events", "ok").inc(5)
    histogram.labels("r3").observe(float("nan"))  # into the sum, into no bucket
    reference_histogram.labels("r3").observe(float("nan"))
    return ours, theirs


def test_text_exposition_matches_prometheus_client() -> None:
    ours, theirs = _pair()
    assert _without_created(generate_latest(ours).decode()) == _without_created(generate_latest(theirs).decode())


def test_openmetrics_exposition_matches_prometheus_client_exemplars_included() -> None:
    ours, theirs = _pair()
    ours_text, theirs_text = generate_openmetrics(ours).decode(), generate_openmetrics(theirs).decode()
    # Exemplars carry the time they were taken: compare everything up to it.
    strip = [line.rsplit(" ", 1)[0] if " # {" in line else line for line in _without_created(ours_text)]
    reference = [line.rsplit(" ", 1)[0] if " # {" in line else line for line in _without_created(theirs_text)]
    assert strip == reference
    assert any('# {trace_id="' in line for line in strip)


def test_created_samples_are_exposed_per_child() -> None:
    ours, _ = _pair()
    assert ours.get_sample_value("w_handled_created", {"stream": "orders", "outcome": "ok"}) is not None
    assert ours.get_sample_value("w_duration_seconds_created", {"route": "r1"}) is not None


def test_sample_values_read_through_the_registry() -> None:
    ours, _ = _pair()
    assert ours.get_sample_value("w_handled_total", {"stream": "orders", "outcome": "ok"}) == 5.0
    assert ours.get_sample_value("w_handled_total", {"stream": "events", "outcome": "ok"}) == 5.0
    assert ours.get_sample_value("w_duration_seconds_count", {"route": "r2"}) == 4.0
    assert ours.get_sample_value("w_duration_seconds_bucket", {"route": "r2", "le": "0.001"}) == 1.0
    assert ours.get_sample_value("w_duration_seconds_bucket", {"route": "r1", "le": "0.1"}) == 2.0
    assert ours.get_sample_value("w_age_seconds", {"stream": "orders"}) == 42.0


def test_wrong_label_count_is_an_error_naming_the_metric() -> None:
    counter = LoopCounter("w_x_total", "X", ["stream"], registry=None)
    try:
        counter.labels("a", "b")
    except ValueError as error:
        assert "w_x" in str(error) and "stream" in str(error)
    else:
        raise AssertionError("two values for one label were accepted")


def test_a_name_registered_twice_is_refused() -> None:
    registry = CollectorRegistry()
    LoopCounter("w_dup_total", "X", ["stream"], registry=registry)
    try:
        Counter("w_dup_total", "X", ["stream"], registry=registry)
    except ValueError as error:
        assert "w_dup" in str(error)
    else:
        raise AssertionError("a duplicate metric name was registered")


def test_created_samples_follow_prometheus_clients_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import metrics as prometheus_metrics

    monkeypatch.setattr(prometheus_metrics, "_use_created", False)  # what disable_created_metrics() sets
    ours, theirs = _pair()
    assert "_created" not in generate_latest(ours).decode()
    assert generate_latest(ours).decode() == generate_latest(theirs).decode()


def test_negative_counter_increments_are_refused_as_by_prometheus_client() -> None:
    counter = LoopCounter("w_neg_total", "X", ["stream"], registry=None)
    with pytest.raises(ValueError):
        counter.labels("a").inc(-1)
