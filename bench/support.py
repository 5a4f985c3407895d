"""Shared plumbing of the benchmarks: the simulator and `stream-worker run` as separate
processes, worker configs, JSON log timestamps, /proc CPU and memory, py-spy summaries.

Every process started here is stopped by the ``Processes`` context manager that started it
(SIGTERM, then SIGKILL after a grace period), whatever happens in between.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import yaml

import bench.results  # noqa: F401 - sets the fake local AWS credentials first
from worker.local.moto_process import MotoServer

REPO = Path(__file__).resolve().parents[1]
SEED_CONFIG = REPO / "config" / "worker.yaml"
BIN = Path(sys.executable).parent
STREAM_WORKER = str(BIN / "stream-worker")
PY_SPY = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Processes:
    """Owns child processes; ``with Processes() as procs:`` stops every one on exit."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[Any]] = []
        self._files: list[IO[Any]] = []

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, argv: list[str], *, log: Path | None = None, env: dict[str, str] | None = None,
              stdout_pipe: bool = False) -> subprocess.Popen[Any]:
        """Start ``argv`` in the repository; stdout and stderr go to ``log`` (or nowhere);
        with ``stdout_pipe`` stdout is a text pipe for the caller and only stderr goes to ``log``."""
        sink: Any = subprocess.DEVNULL
        if log is not None:
            sink = open(log, "ab")  # noqa: SIM115 - closed in stop_all
            self._files.append(sink)
        proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **(env or {})},
                                stdout=subprocess.PIPE if stdout_pipe else sink, stderr=sink,
                                text=stdout_pipe)
        self._children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL; returns the exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self._children:
            self._children.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self._children)):
            self.stop(proc)
        for handle in self._files:
            handle.close()
        self._files.clear()


class BenchMoto(MotoServer):
    """A moto server process running ``bench.moto_server`` (moto_server with atomic stream
    sequence numbers, less per-request overhead and, with ``latency_ms``, a modelled network
    round trip on every request) on a free loopback port; ``stop()`` ends it."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        extra = ["--latency-ms", str(latency_ms)] if latency_ms > 0 else []
        super().__init__(command=[sys.executable, "-m", "bench.moto_server", *extra], cwd=REPO)


def start_simulator(procs: Processes, streams: list[str], *extra: str,
                    log: Path | None = None) -> tuple[str, dict[str, str], subprocess.Popen[Any]]:
    """``python -m worker.local.simulator`` in its own process (its own GIL); returns the URL and
    the ARN of each stream (``TABLE:SHARDS:KEY`` specs)."""
    argv = [sys.executable, "-m", "worker.local.simulator", "--port", "0", *extra]
    for spec in streams:
        argv += ["--streams", spec]
    proc = procs.start(argv, stdout_pipe=True, log=log)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise RuntimeError(f"simulator did not start (first line {url!r})")
    arns: dict[str, str] = {}
    for _ in streams:
        _, table, arn = proc.stdout.readline().split()
        arns[table] = arn
    return url, arns, proc


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def seed_document(endpoint: str, prefix: str) -> dict[str, Any]:
    """config/worker.yaml itself (tables, routes, handlers, reader and lease timings) with
    prefixed table names on ``endpoint``, metrics off and JSON logs at INFO (as
    tests/integration/helpers.py derives its configs, minus the test-speed timings)."""
    doc: dict[str, Any] = copy.deepcopy(yaml.safe_load(SEED_CONFIG.read_text()))
    doc["worker"] = {**doc["worker"], "id": f"{prefix}worker"}
    doc["aws"] = {"region": "us-east-1", "endpoint_url": endpoint}
    for logical, table in doc["tables"].items():
        table["name"] = f"{prefix}{logical}"
    doc["leases"]["table"] = f"{prefix}leases"
    doc["observability"] = {"metrics": {"port": 0}, "logging": {"level": "INFO", "format": "json"}}
    return doc


def start_worker(procs: Processes, config: Path, log: Path, metrics_port: int = 0,
                 env: dict[str, str] | None = None) -> subprocess.Popen[Any]:
    """``stream-worker run`` with cwd = the repository, so ``bench.*`` handlers import."""
    return procs.start([STREAM_WORKER, "run", "--config", str(config), "--metrics-port", str(metrics_port)],
                       log=log, env=env)


def create_tables(config: Path, log: Path) -> None:
    with open(log, "ab") as handle:
        subprocess.run([STREAM_WORKER, "create-tables", "--config", str(config)], cwd=REPO, check=True,
                       stdout=handle, stderr=handle, timeout=120)


def worker_source_hash() -> str:
    """sha256 (12 hex digits) of every worker/**/*.py file: which code a result is of
    (the package changes under active development; git is not consulted)."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "worker").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_average() -> float:
    """The machine's 1-minute load average (other processes compete for the 2 cores)."""
    return round(os.getloadavg()[0], 2)


# -- JSON logs --------------------------------------------------------------------------


def provenance_rows(source: str, load_before: float) -> list[tuple[str, str, str]]:
    """The last rows of every benchmark table: the code measured and the machine's load."""
    return [
        ("worker source (sha256 of worker/**/*.py)", source, "the code measured"),
        ("machine load (1 min avg)", f"{load_before:.2f} -> {load_average():.2f}", "start -> end of the run, 2 cores"),
    ]


def log_events(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON lines of a worker log (other lines, e.g. a traceback, are skipped)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def log_time(event: dict[str, Any]) -> float:
    """structlog's ISO UTC timestamp as epoch seconds (same clock as ``time.time()``)."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def first_event_time(path: Path, event: str, **fields: Any) -> float | None:
    times = [log_time(e) for e in log_events(path)
             if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())]
    return min(times) if times else None


def count_events(path: Path, event: str) -> int:
    return sum(1 for e in log_events(path) if e.get("event") == event)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
             what: str = "condition", alive: subprocess.Popen[Any] | None = None) -> float:
    """Poll until ``predicate()`` is truthy; seconds it took. ``alive``: fail early if that
    process exited."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"process exited with {alive.returncode} while waiting for {what}")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)


# -- /proc -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def metric_value(body: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample's values over every label set matching ``labels``."""
    total = 0.0
    for line in body.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name):]
        if rest and rest[0] not in "{ ":
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- percentiles -------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


# -- py-spy ------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match.group("file")
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({file})"


_LAYERS = [
    ("botocore/parsers.py", "botocore response parsing"),
    ("aiobotocore/parsers.py", "botocore response parsing"),
    ("botocore/auth.py", "botocore request signing (SigV4)"),
    ("botocore/serialize.py", "botocore request serialization"),
    ("botocore/validate.py", "botocore parameter validation"),
    ("botocore/useragent.py", "botocore user-agent header"),
    ("botocore/hooks.py", "botocore event hooks"),
    ("aiobotocore/hooks.py", "botocore event hooks"),
    ("aiohttp/", "aiohttp (HTTP client)"),
    ("aiobotocore/httpsession.py", "aiohttp (HTTP client)"),
    ("botocore/", "botocore other (endpoint, client, retries)"),
    ("boto3/dynamodb/types.py", "TypeDeserializer (image decoding)"),
    ("dateutil/", "dateutil (botocore timestamps)"),
    ("prometheus_client", "prometheus metrics"),
    ("structlog", "structlog"),
    ("worker/", "stream-worker code"),
    ("bench/", "benchmark code"),
    ("asyncio/", "asyncio (tasks, timeouts, transports)"),
    ("selectors.py", "event loop select"),
    ("json/", "json"),
]


def _bucket(frames: list[str]) -> str:
    """The layer of a sample: the first known layer walking from the leaf to the root."""
    for frame in reversed(frames):
        for needle, label in _LAYERS:
            if needle in frame:
                return label
    return "other"


def py_spy_profile(pid: int, seconds: float, raw_path: Path, rate: int = 200) -> dict[str, Any] | None:
    """Sample ``pid`` with py-spy for ``seconds`` (collapsed stacks to ``raw_path``); return
    the busy share and the top functions by self and inclusive samples. None without py-spy."""
    if PY_SPY is None:
        return None
    result = subprocess.run(
        [PY_SPY, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
         "--format", "raw", "--output", str(raw_path), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=seconds + 60,
    )
    if result.returncode != 0 or not raw_path.exists():
        print(f"py-spy failed: {result.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    return summarize_collapsed(raw_path.read_text())


def summarize_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample counts from py-spy's collapsed ('a;b;c N') output.

    py-spy records only samples in which a thread runs (idle threads are skipped without
    --idle), so the sample count over duration x rate is the process's busy share."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_counts[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            incl_counts[frame] += count
        buckets[_bucket(frames)] += count
    def share(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []
    ours = collections.Counter({k: v for k, v in incl_counts.items() if "(worker/" in k or "(bench/" in k})
    return {"samples": total, "self": share(self_counts), "inclusive": share(incl_counts),
            "layers": share(buckets), "ours": share(ours)}


def print_profile(title: str, profile: dict[str, Any]) -> str:
    lines = [f"{title}: {profile['samples']} busy samples",
             "  by layer (share of busy samples):"]
    lines += [f"    {pct:5.1f}%  {name}" for name, pct in profile["layers"]]
    lines.append("  top self time:")
    lines += [f"    {pct:5.1f}%  {name}" for name, pct in profile["self"][:10]]
    lines.append("  top inclusive time:")
    lines += [f"    {pct:5.1f}%  {name}" for name, pct in profile["inclusive"][:12]]
    lines.append("  stream-worker functions, inclusive:")
    lines += [f"    {pct:5.1f}%  {name}" for name, pct in profile["ours"][:12]]
    text = "\n".join(lines)
    print("\n" + text)
    return text
