"""A first SIGINT/SIGTERM during a stuck start-up ends it at once (exit 0: nothing was held),
instead of the start-up retrying the unreachable endpoint until its timeout."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import seed_document
from worker.local.processes import free_port

pytestmark = pytest.mark.integration
STREAM_WORKER = str(Path(sys.executable).with_name("stream-worker"))
STARTUP_TIMEOUT = 30.0


def _config(tmp_path: Path, endpoint: str, prefix: str) -> Path:
    doc = seed_document(endpoint, prefix)
    doc["worker"]["startup_timeout_seconds"] = STARTUP_TIMEOUT
    doc["aws"]["connect_timeout_seconds"] = 1
    doc["aws"]["read_timeout_seconds"] = 1
    doc["observability"] = {"metrics": {"port": 0}, "logging": {"level": "INFO", "format": "json"}}
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_during_a_stuck_startup_exits_0_well_before_the_timeout(
    tmp_path: Path, prefix: str, signum: signal.Signals
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there: start-up retries
    process = await asyncio.create_subprocess_exec(
        STREAM_WORKER, "run", "--config", str(_config(tmp_path, endpoint, prefix)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    seen: list[str] = []
    try:
        # Wait until the start-up is visibly stuck on the endpoint, then ask it to stop.
        async with asyncio.timeout(STARTUP_TIMEOUT / 2):
            while not any("retry aws call" in line for line in seen):
                line = await process.stderr.readline()
                assert line, "the worker exited before its start-up got stuck: " + "".join(seen)
                seen.append(line.decode())
        signalled = time.monotonic()
        process.send_signal(signum)
        async with asyncio.timeout(5):  # generous: a couple of seconds is the aim
            rest = await process.stderr.read()
            code = await process.wait()
        exited_after = time.monotonic() - signalled
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    output = "".join(seen) + rest.decode()
    assert code == 0, output
    assert exited_after < STARTUP_TIMEOUT
    assert "cancel start-up on stop" in output
    assert "start-up failed" not in output


class _FakeApp:
    """Records what _serve does with an app whose start-up hangs or fails."""

    def __init__(self, start_error: Exception | None = None) -> None:
        self.start_error = start_error
        self.start_cancelled = False
        self.stopped = 0

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        try:
            await asyncio.Event().wait()  # a start-up that never finishes by itself
        except asyncio.CancelledError:
            self.start_cancelled = True
            raise

    async def stop(self) -> None:
        self.stopped += 1


async def test_serve_cancels_a_hanging_startup_when_a_stop_arrives() -> None:
    from worker.cli import _serve

    app, stop = _FakeApp(), asyncio.Event()
    serving = asyncio.create_task(_serve(app, stop))
    await asyncio.sleep(0.05)
    assert not serving.done()
    stop.set()
    await asyncio.wait_for(serving, 5)
    assert app.start_cancelled and app.stopped == 1


async def test_serve_passes_a_startup_error_on_and_still_stops() -> None:
    from worker.cli import _serve
    from worker.errors import StartupError

    app = _FakeApp(StartupError("unreachable"))
    with pytest.raises(StartupError):
        await _serve(app, asyncio.Event())
    assert app.stopped == 1
