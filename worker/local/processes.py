"""Loopback ports and child processes for the local endpoints (moto, DynamoDB Local, the
stream simulator) and the tools that tests and benchmarks start next to them."""

from __future__ import annotations

import socket
import subprocess
from typing import Any


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it; another process may take it
    before it is bound again, which the callers' start-up checks catch)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def terminate(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; returns once the process is gone."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
