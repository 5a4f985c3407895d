"""Find a tool from a Debian package, installing the package when the tool is absent.

A clean CI machine (Debian, running as root) may lack the binaries some tests and
benchmarks drive (``prometheus``/``promtool``, ``haproxy``): the first caller runs
``apt-get update`` and ``apt-get install -y --no-install-recommends <package>``. While
installing, service starts are denied through ``/usr/sbin/policy-rc.d`` (exit 101, the
Debian-standard switch that ``invoke-rc.d`` and ``deb-systemd-invoke`` honour) when the
machine has no such file already, so the package's own service is not left running; the
file is removed again afterwards. A file lock serialises concurrent callers so only one
runs apt-get.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

SEARCH_DIRS = ("/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
LOCK_FILE = Path("/tmp/stream-worker-apt-install.lock")
APT_TIMEOUT_SECONDS = 900


class PackageUnavailable(RuntimeError):
    """A tool is missing and its package could not be installed."""


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


@contextlib.contextmanager
def services_denied() -> Iterator[None]:
    """Deny service starts during the install unless a policy-rc.d is already there."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# temporary: written by worker/local/debian_packages.py\nexit 101\n")
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


def install_package(package: str, error: type[Exception] = PackageUnavailable) -> None:
    """``apt-get update`` then ``apt-get install -y --no-install-recommends <package>``;
    failures raise ``error`` with apt's output."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise error(f"{package} is not installed and this process is not root: "
                    f"run `apt-get install -y --no-install-recommends {package}` first")
    if find_tool("apt-get") is None:
        raise error(f"{package} is not installed and there is no apt-get")
    with services_denied():
        update = _apt("update")
        if update.returncode != 0:
            raise error(f"apt-get update failed:\n{update.stdout[-2000:]}{update.stderr[-2000:]}")
        install = _apt("install", "-y", "--no-install-recommends", package)
        if install.returncode != 0:
            raise error(f"apt-get install {package} failed:\n{install.stdout[-2000:]}{install.stderr[-2000:]}")


def ensure_installed(found: Callable[[], str | None], install: Callable[[], None]) -> str | None:
    """``found()``, else ``install()`` under the lock and ``found()`` again."""
    result = found()
    if result is not None:
        return result
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            result = found()
            if result is None:
                install()
                result = found()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return result


def ensure_tool(tool: str, package: str) -> str:
    """The path of ``tool``, installing ``package`` when it is missing."""
    path = ensure_installed(lambda: find_tool(tool), lambda: install_package(package))
    if path is None:
        raise PackageUnavailable(f"package {package!r} installed, but {tool} is still not on PATH or in {SEARCH_DIRS}")
    return path
