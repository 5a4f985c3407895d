"""The trimmed-data policy both the reader and the consumer call: count, then stop or go on."""

from __future__ import annotations

import uuid

import pytest
import structlog
from prometheus_client import REGISTRY

from worker.config import ReaderConfig
from worker.errors import TrimmedDataError
from worker.retrieval.trimmed import TrimmedDataPolicy

LOG = structlog.get_logger("test")


def count(name: str, stream: str) -> float:
    return REGISTRY.get_sample_value(f"stream_worker_{name}_total", {"stream": stream}) or 0.0


def policy(on_trimmed_data: str) -> TrimmedDataPolicy:
    config = ReaderConfig.model_validate({"on_trimmed_data": on_trimmed_data})
    return TrimmedDataPolicy.from_config(config, f"table-{uuid.uuid4().hex[:8]}", "shard-1")


def test_restart_policy_counts_the_loss_and_lets_the_caller_go_on() -> None:
    restart = policy("restart_at_trim_horizon")
    restart.records_lost(LOG, "AFTER_SEQUENCE_NUMBER 120", "position is past retention")
    assert count("trimmed_data", restart.stream_label) == 1


def test_stop_shard_policy_counts_the_loss_and_stops_the_shard() -> None:
    stop = policy("stop_shard")
    cause = RuntimeError("TrimmedDataAccessException")
    with pytest.raises(TrimmedDataError, match="shard-1: shard aged out at AFTER 7") as caught:
        stop.records_lost(LOG, "AFTER 7", "shard aged out", cause)
    assert caught.value.__cause__ is cause
    assert count("trimmed_data", stop.stream_label) == 1


async def test_trimmed_at_the_horizon_is_counted_apart_from_the_alerts_counter() -> None:
    stop = policy("stop_shard")  # even under stop_shard: nothing was lost, nothing stops
    await stop.stale_at_horizon(LOG, retries=1)
    assert count("trimmed_at_horizon", stop.stream_label) == 1
    assert count("trimmed_data", stop.stream_label) == 0
