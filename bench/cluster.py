"""Runs separate `stream-worker` processes over the stream simulator (streams) and a local
endpoint, moto or DynamoDB Local (lease table), and reports what they did: coverage, per-key
order, checkpoints.

The lease benchmark measures with it (balance, failover, hand-off); the multi-worker and
chaos tests check with it. It lives here, not under tests/, because a benchmark must not
depend on the test suite, while tests may use the benchmark's tools."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import boto3
import yaml
from boto3.dynamodb.types import TypeDeserializer

from worker.local.simulator import Simulator

REPO = Path(__file__).resolve().parents[1]
STREAM_WORKER = str(Path(sys.executable).with_name("stream-worker"))
_deserializer = TypeDeserializer()


@dataclass
class Written:
    key: str
    n: int
    shard: str
    seq: str


@dataclass
class Cluster:
    endpoint_url: str
    sim: Simulator
    workdir: Path
    prefix: str
    table: str = "load"
    duration: float = 3.0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    written: list[Written] = field(default_factory=list)
    checkpoint_regressions: list[str] = field(default_factory=list)
    _monitor: threading.Thread | None = None
    _monitor_stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.records_dir = self.workdir / "handled"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.lease_table = f"{self.prefix}leases"
        self.ddb = boto3.client("dynamodb", endpoint_url=self.endpoint_url, region_name="us-east-1")

    # -- config and processes ------------------------------------------------------------

    def write_config(self, stream_arn: str, *, product_timings: bool = False, reader: dict[str, Any] | None = None,
                     **leases: Any) -> Path:
        """Test timings (short lease duration, fast polls) unless ``product_timings``: then
        the lease and reader sections keep the product defaults (the benchmark's case).
        ``reader`` overrides keys of the reader section either way."""
        doc = {
            "worker": {"id": "${WORKER_ID}", "shutdown_timeout_seconds": 10},
            "aws": {"region": "us-east-1", "endpoint_url": self.endpoint_url,
                    "endpoints": {"dynamodbstreams": self.sim.url}},
            "tables": {"load": {"name": self.table, "key": "pk",
                                "stream": {"arn": stream_arn, "starting_position": "TRIM_HORIZON"}}},
            "leases": {"table": self.lease_table, "duration_seconds": self.duration,
                       "poll_interval_seconds": 0.25, "scan_interval_seconds": 5, **leases},
            "reader": {"idle_poll_seconds": 0.25, "max_idle_poll_seconds": 0.5,
                       "discovery_interval_seconds": 1, "parent_poll_seconds": 0.2},
            "processing": {"retry": {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.5}},
            "publisher": {"type": "outbox", "table": "load"},
            "routes": [{"name": "record", "table": "load", "handler": "bench.recording_handlers:record",
                        "options": {"dir": str(self.records_dir)}}],
            "observability": {"metrics": {"port": 0}, "logging": {"level": "INFO", "format": "json"}},
        }
        if product_timings:
            doc["leases"] = {"table": self.lease_table, **leases}
            doc["reader"] = {}
            del doc["processing"]
        doc["reader"].update(reader or {})
        path = self.workdir / "worker.yaml"
        path.write_text(yaml.safe_dump(doc))
        self.config_path = path
        return path

    def start_worker(self, worker_id: str, metrics_port: int = 0) -> None:
        log = open(self.workdir / f"{worker_id}.log", "ab")  # noqa: SIM115 - owned by the process
        env = {**os.environ, "WORKER_ID": worker_id}
        self.processes[worker_id] = subprocess.Popen(
            [STREAM_WORKER, "run", "--config", str(self.config_path), "--metrics-port", str(metrics_port)],
            cwd=REPO, env=env, stdout=log, stderr=log,
        )

    def kill(self, worker_id: str) -> None:
        process = self.processes.pop(worker_id)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def terminate(self, worker_id: str, timeout: float = 20.0) -> int:
        process = self.processes.pop(worker_id)
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout)

    def stop_all(self) -> None:
        for worker_id in list(self.processes):
            process = self.processes.pop(worker_id)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._monitor_stop.set()
        if self._monitor:
            self._monitor.join(timeout=5)

    def alive(self) -> list[str]:
        return [w for w, p in self.processes.items() if p.poll() is None]

    # -- the lease table ------------------------------------------------------------------

    def leases(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.lease_table, "ConsistentRead": True}
        try:
            while True:
                page = self.ddb.scan(**kwargs)
                items.extend(page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        except self.ddb.exceptions.ResourceNotFoundException:
            return []
        rows = [{k: _deserializer.deserialize(v) for k, v in item.items()} for item in items]
        return [row for row in rows if str(row["pk"]).startswith("lease#")]

    def owners(self) -> dict[str, str | None]:
        return {row["sk"]: row.get("owner") for row in self.leases() if row.get("checkpoint") != "SHARD_END"}

    def load(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for owner in self.owners().values():
            if owner:
                counts[owner] += 1
        return dict(counts)

    def start_checkpoint_monitor(self, interval: float = 0.2) -> None:
        """Watch every lease's checkpoint; any move backwards is recorded as a regression."""
        last: dict[str, int] = {}

        def watch() -> None:
            while not self._monitor_stop.is_set():
                for row in self.leases():
                    checkpoint = row.get("checkpoint")
                    if checkpoint is None:
                        if row["sk"] in last:
                            self.checkpoint_regressions.append(f"{row['sk']}: checkpoint cleared")
                        continue
                    value = 10**60 if checkpoint == "SHARD_END" else int(checkpoint)
                    if value < last.get(row["sk"], -1):
                        self.checkpoint_regressions.append(f"{row['sk']}: {last[row['sk']]} -> {value}")
                    last[row["sk"]] = value
                self._monitor_stop.wait(interval)

        self._monitor = threading.Thread(target=watch, daemon=True)
        self._monitor.start()

    # -- records --------------------------------------------------------------------------

    def write(self, keys: list[str], per_key: int = 1) -> None:
        counts: dict[str, int] = defaultdict(int)
        for w in self.written:
            counts[w.key] = max(counts[w.key], w.n + 1)
        for _ in range(per_key):
            for key in keys:
                n = counts[key]
                counts[key] += 1
                shard, seq = self.sim.put_record(self.table, {"pk": key}, {"pk": key, "n": n})
                self.written.append(Written(key, n, shard, seq))

    def handled(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for path in self.records_dir.glob("*.jsonl"):
            for line in path.read_text().splitlines():
                if line.strip():
                    try:
                        lines.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a line cut by kill -9
        return sorted(lines, key=lambda line: line["t"])

    def missing(self) -> list[Written]:
        seen = {(h["shard"], h["seq"]) for h in self.handled()}
        return [w for w in self.written if (w.shard, w.seq) not in seen]

    def order_violations(self) -> list[str]:
        """Per key: when a record is handled, every earlier record of its key must already
        have been handled at least once (redeliveries are allowed, gaps are not)."""
        by_seq = {(w.shard, w.seq): w for w in self.written}
        done: dict[str, set[int]] = defaultdict(set)
        violations = []
        for line in self.handled():
            written = by_seq.get((line["shard"], line["seq"]))
            if written is None:
                continue
            earlier = set(range(written.n))
            if not earlier <= done[written.key]:
                violations.append(f"{written.key}#{written.n} before #{min(earlier - done[written.key])}")
            done[written.key].add(written.n)
        return violations


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> float:
    """Poll ``predicate`` until true; return the seconds it took. Raises on timeout."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def balanced(load: dict[str, int], workers: list[str], shards: int) -> bool:
    counts = [load.get(w, 0) for w in workers]
    return sum(counts) == shards and max(counts) - min(counts) <= 1


@contextlib.contextmanager
def running_cluster(endpoint_url: str, sim: Simulator, workdir: Path, prefix: str) -> Iterator[Cluster]:
    """A Cluster whose worker processes are all stopped on exit (the tests' fixture body)."""
    cluster = Cluster(endpoint_url=endpoint_url, sim=sim, workdir=workdir, prefix=prefix, table=f"{prefix}load")
    try:
        yield cluster
    finally:
        cluster.stop_all()
