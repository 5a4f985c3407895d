"""Start and stop a real ``moto_server`` process on a free loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from worker.local.processes import free_port, terminate


class MotoServer:
    """``command`` replaces the ``moto_server`` executable (the benchmarks run a patched one)."""

    def __init__(self, command: list[str] | None = None, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._command = command
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> "MotoServer":
        exe = Path(sys.executable).with_name("moto_server")
        command = self._command or ([str(exe)] if exe.exists() else [shutil.which("moto_server") or "moto_server"])
        self._proc = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=self._cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not answer in time")

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc, timeout=10)
