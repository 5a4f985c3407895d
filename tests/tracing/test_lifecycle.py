"""One tracer per process: workers that share a process share it, the last stop flushes."""

from __future__ import annotations

from worker.config import TracingConfig
from worker.observability import tracing


async def test_workers_of_one_process_share_the_tracer_until_the_last_stops() -> None:
    on = TracingConfig(enabled=True, endpoint="http://127.0.0.1:9/v1/traces")
    assert tracing.start(TracingConfig(enabled=False), worker_id="off") is False
    assert not tracing.enabled()
    try:
        assert tracing.start(on, worker_id="a") is True
        assert tracing.start(on, worker_id="b") is True
        await tracing.stop()
        assert tracing.enabled()  # "b" still runs
    finally:
        await tracing.stop()
    assert not tracing.enabled()
    await tracing.stop()  # harmless once off
    assert not tracing.enabled()
