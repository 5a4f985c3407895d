"""Find ``promtool`` and ``prometheus``, installing Debian's ``prometheus`` package when absent.

A clean CI machine (Debian, running as root) has neither binary: the first test that needs
one runs ``apt-get update`` and ``apt-get install -y --no-install-recommends prometheus``.
While installing, service starts are denied through ``/usr/sbin/policy-rc.d`` (exit 101,
the Debian-standard switch that ``invoke-rc.d`` and ``deb-systemd-invoke`` honour) when
the machine has no such file already, so the package's own ``prometheus`` service is not
left running; the file is removed again afterwards. Tests never rely on that service: they
start their own server on a free loopback port with their own storage directory.

If the binaries cannot be found or installed, :func:`ensure_prometheus_tools` raises
:class:`PrometheusToolsUnavailable`; the fixtures turn that into a test *failure*, never a skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SEARCH_DIRS = ("/usr/bin", "/usr/local/bin", "/bin")
PACKAGE = "prometheus"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
LOCK_FILE = Path("/tmp/stream-worker-prometheus-install.lock")
APT_TIMEOUT_SECONDS = 900


class PrometheusToolsUnavailable(RuntimeError):
    """promtool/prometheus are missing and could not be installed."""


@dataclass(frozen=True)
class PrometheusTools:
    promtool: str
    prometheus: str


def find_tool(name: str) -> str | None:
    """``name`` on PATH, else in the usual system directories."""
    found = shutil.which(name)
    if found:
        return found
    for directory in SEARCH_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _found() -> PrometheusTools | None:
    promtool, prometheus = find_tool("promtool"), find_tool("prometheus")
    if promtool and prometheus:
        return PrometheusTools(promtool=promtool, prometheus=prometheus)
    return None


@contextlib.contextmanager
def _services_denied() -> Iterator[None]:
    """Deny service starts during the install unless a policy-rc.d is already there."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# temporary: written by tests/deploy/prometheus_tools.py\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            POLICY_RC_D.unlink()


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "l"}
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args],
        capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_SECONDS, check=False,
    )


def install_prometheus_package() -> None:
    """``apt-get update`` then ``apt-get install -y --no-install-recommends prometheus``."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise PrometheusToolsUnavailable(
            "promtool/prometheus are not installed and this process is not root: "
            "run `apt-get install -y --no-install-recommends prometheus` first"
        )
    if find_tool("apt-get") is None:
        raise PrometheusToolsUnavailable("promtool/prometheus are not installed and there is no apt-get")
    with _services_denied():
        update = _apt("update")
        if update.returncode != 0:
            raise PrometheusToolsUnavailable(f"apt-get update failed:\n{update.stdout[-2000:]}{update.stderr[-2000:]}")
        install = _apt("install", "-y", "--no-install-recommends", PACKAGE)
        if install.returncode != 0:
            raise PrometheusToolsUnavailable(
                f"apt-get install {PACKAGE} failed:\n{install.stdout[-2000:]}{install.stderr[-2000:]}"
            )


def ensure_prometheus_tools() -> PrometheusTools:
    """The paths of ``promtool`` and ``prometheus``, installing the package if needed.

    A file lock serialises concurrent test processes so only one runs apt-get."""
    tools = _found()
    if tools is not None:
        return tools
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            tools = _found()
            if tools is None:
                install_prometheus_package()
                tools = _found()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if tools is None:
        raise PrometheusToolsUnavailable(
            f"package {PACKAGE!r} installed, but promtool/prometheus are still not on PATH or in {SEARCH_DIRS}"
        )
    return tools
