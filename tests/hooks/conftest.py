"""A worker (the real App, in this process) reading a simulated stream, its lease table on
the moto server; the hooks it runs are tests/hooks/recording_hooks.py."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.hooks import recording_hooks
from worker.local.simulator import Simulator
from worker.config import Config, parse_config

HOOKS = "tests.hooks.recording_hooks"


@pytest.fixture(autouse=True)
def journal() -> Iterator[list[tuple[Any, ...]]]:
    recording_hooks.JOURNAL.clear()
    recording_hooks.BEHAVIOUR.clear()
    yield recording_hooks.JOURNAL
    recording_hooks.JOURNAL.clear()
    recording_hooks.BEHAVIOUR.clear()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(seed=11, throttle_enabled=False).start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def table(sim: Simulator) -> str:
    name = f"hk{uuid.uuid4().hex[:8]}"
    sim.create_stream(name, key_schema=("pk",))
    return name


ConfigFactory = Callable[..., Config]


@pytest.fixture
def make_config(moto_url: str, sim: Simulator, table: str, prefix: str) -> ConfigFactory:
    """The worker's config; keyword arguments replace top-level sections or hooks' keys."""

    def make(worker_id: str = "w1", hooks: dict[str, Any] | None = None, **sections: Any) -> Config:
        all_hooks: dict[str, Any] = {name: f"{HOOKS}:{name}" for name in
                                     ("on_start", "on_stop", "on_shard_start", "on_shard_end", "on_lease_lost")}
        all_hooks["timeout_seconds"] = 2
        all_hooks.update(hooks or {})
        doc: dict[str, Any] = {
            "worker": {"id": f"{prefix}{worker_id}", "shutdown_timeout_seconds": 10},
            "aws": {"region": "us-east-1", "endpoint_url": moto_url, "endpoints": {"dynamodbstreams": sim.url}},
            "tables": {"orders": {"name": table, "key": "pk",
                                  "stream": {"arn": sim.stream_arn(table), "starting_position": "TRIM_HORIZON"}}},
            "leases": {"table": f"{prefix}leases", "duration_seconds": 3, "poll_interval_seconds": 0.2},
            "reader": {"idle_poll_seconds": 0.05, "max_idle_poll_seconds": 0.2, "discovery_interval_seconds": 0.5,
                       "parent_poll_seconds": 0.1},
            "processing": {"checkpoint_interval_seconds": 0.1},
            "routes": [{"name": "record", "table": "orders", "handler": f"{HOOKS}:handle"}],
            "hooks": all_hooks,
            "observability": {"metrics": {"port": 0}, "logging": {"level": "WARNING", "format": "console"}},
        }
        doc.update(sections)
        return parse_config(doc, env={})

    return make
