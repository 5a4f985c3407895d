"""Start-up against an endpoint that is down, or that refuses the calls, ends with exit 1
and a message that says what happened, within worker.startup_timeout_seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from tests.integration.helpers import seed_document
from worker.local.processes import free_port

pytestmark = pytest.mark.integration
STREAM_WORKER = str(Path(sys.executable).with_name("stream-worker"))


def _config(tmp_path: Path, endpoint: str, prefix: str) -> Path:
    doc = seed_document(endpoint, prefix)
    doc["worker"]["startup_timeout_seconds"] = 3
    doc["aws"]["connect_timeout_seconds"] = 1
    doc["aws"]["read_timeout_seconds"] = 1
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_unreachable_endpoint_exits_1_after_the_startup_timeout(tmp_path: Path, prefix: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run([STREAM_WORKER, "run", "--config", str(_config(tmp_path, endpoint, prefix))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "start-up failed: start-up did not finish within 3 s" in result.stderr
    assert endpoint in result.stderr


async def test_access_denied_exits_1_naming_the_error(tmp_path: Path, prefix: str) -> None:
    async def deny(request: web.Request) -> web.Response:
        body = {"__type": "com.amazon.coral.service#AccessDeniedException",
                "message": "User is not authorized to perform: dynamodb:DescribeTable"}
        return web.json_response(body, status=400, content_type="application/x-amz-json-1.0")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", deny)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        import asyncio

        process = await asyncio.create_subprocess_exec(
            STREAM_WORKER, "run", "--config", str(_config(tmp_path, f"http://127.0.0.1:{port}", prefix)),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        await runner.cleanup()
    assert process.returncode == 1, stderr.decode()
    assert "AWS refused a start-up call: AccessDeniedException: User is not authorized" in stderr.decode()
