"""Every Prometheus metric the worker exports, in one place.

Labels stay bounded: ``stream`` is the logical table name (bounded by config),
``route`` by config, ``outcome``/``reason`` by code. Shard ids are never labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

from worker.observability.loop_metrics import LoopCounter, LoopGauge, LoopHistogram, ScrapedGauge
from worker.version import __version__

NS = "stream_worker"

build_info = Info(f"{NS}_build", "Build information")
build_info.info({"version": __version__})

up = Gauge(f"{NS}_up", "1 while the worker process runs")
ready = Gauge(f"{NS}_ready", "1 when connected, renewing leases and no loop has crashed")

records_read = Counter(f"{NS}_records_read_total", "Records returned by GetRecords", ["stream"])
# Updated once per handled record: lock-free children (worker/observability/loop_metrics.py).
records_handled = LoopCounter(
    f"{NS}_records_handled_total", "Handler invocations by outcome", ["stream", "route", "outcome"]
)
records_unrouted = Counter(
    f"{NS}_records_filtered_total", "Records that matched no route (acknowledged)", ["stream"]
)
records_dead_lettered = Counter(
    f"{NS}_records_dead_lettered_total",
    "Records parked in a dead-letter destination",
    ["stream", "route", "error_class"],
)
dead_letter_failures = Counter(
    f"{NS}_dead_letter_failures_total", "Dead-letter writes that failed (retried; the checkpoint holds)", ["route"]
)
handler_retries = Counter(f"{NS}_handler_retries_total", "Handler attempts that failed and were retried", ["route"])
handler_duration = LoopHistogram(
    f"{NS}_handler_duration_seconds",
    "Time spent in one handler call",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
batch_size = Histogram(
    f"{NS}_batch_size_records",
    "Records per processed GetRecords page",
    ["stream"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
)

get_records_calls = Counter(f"{NS}_get_records_total", "GetRecords calls by outcome", ["stream", "outcome"])
get_records_latency = Histogram(
    f"{NS}_get_records_duration_seconds",
    "GetRecords call latency",
    ["stream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
iterators_expired = Counter(f"{NS}_iterator_expired_total", "Shard iterators renewed after expiry", ["stream"])
trimmed_data = Counter(f"{NS}_trimmed_data_total", "TrimmedDataAccessException events", ["stream"])
# Kept apart from trimmed_data (which the TrimmedData alert watches): met while reading from
# TRIM_HORIZON, where nothing can have been lost, so it is retried quietly.
trimmed_at_horizon = Counter(
    f"{NS}_trimmed_at_horizon_total",
    "TrimmedDataAccessException met while reading from TRIM_HORIZON (nothing lost; iterator renewed)",
    ["stream"],
)
aws_retries = Counter(
    f"{NS}_aws_retries_total",
    "AWS calls retried after throttling, 5xx or connection errors (GetRecords + LimitExceededException = throttled reads)",
    ["operation", "code"],
)

last_record_age = LoopGauge(
    f"{NS}_last_handled_record_age_seconds",
    "Age (from ApproximateCreationDateTime) of the last handled record, at handling time",
    ["stream"],
)
# Read from the live key schedulers and shard progress at scrape time (worker/processing/engine.py).
handler_calls_in_flight = ScrapedGauge(
    f"{NS}_handler_calls_in_flight",
    "Handler calls running now (per route; bounded by max_concurrency per shard and "
    "processing.max_concurrent_handler_calls per process)",
    ["route"],
)
handler_calls_in_backoff = ScrapedGauge(
    f"{NS}_handler_calls_in_backoff",
    "Calls waiting out a back-off (after a failed handler call or dead-letter write); each holds back only its own keys",
    ["route"],
)
oldest_failing_record = ScrapedGauge(
    f"{NS}_oldest_failing_record_seconds",
    "Seconds since the first failed call of the longest-failing record still being retried or parked (0: none)",
    ["route"],
    aggregate=max,
)
records_in_flight = ScrapedGauge(
    f"{NS}_records_in_flight",
    "Records read and not yet checkpointable (not behind their shard's finished prefix); "
    "reading a shard pauses at processing.max_in_flight_records (checked once per page)",
    ["stream"],
)
seconds_since_tip = Gauge(
    f"{NS}_shard_seconds_since_tip_max",
    "Largest time since a shard reader last reached the tip (an empty page)",
    ["stream"],
)

leases_held = Gauge(f"{NS}_leases_held", "Leases this worker holds", ["stream"])
lease_events = Counter(
    f"{NS}_lease_events_total", "Lease transitions", ["event"]
)  # taken, stolen, lost, released, finished
shards_unassigned = Gauge(
    f"{NS}_shards_over_cap", "Unfinished shards that no live worker may take because of lease caps"
)
lease_table_writes = Counter(
    f"{NS}_lease_table_writes_total", "Writes to the lease table by operation (cost visibility)", ["operation"]
)
checkpoints = Counter(f"{NS}_checkpoints_total", "Checkpoint writes by outcome", ["stream", "outcome"])
loop_crashes = Counter(f"{NS}_loop_crashes_total", "Background loops that crashed and were restarted", ["loop"])
hook_failures = Counter(
    f"{NS}_hook_failures_total", "Lifecycle hooks that raised (error) or were cancelled at their timeout", ["hook", "reason"]
)
