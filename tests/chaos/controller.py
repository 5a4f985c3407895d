"""Chaos run of the seed chain: orders -> order-processing -> events outbox -> shipment-dispatch
-> shipments, on a moto server behind a fault-injecting proxy, with real worker processes
killed (-9), stopped (SIGTERM) and restarted while orders flow.

    python -m tests.chaos.controller --orders 3000 --duration 300 --seed 7     # exit 0 = pass

What a run does (everything random comes from ``--seed``):

1. starts a moto server (``--endpoint dynamodb-local``: DynamoDB Local), a
   :class:`FaultProxy` in front of it, creates the seed tables and writes a worker config
   (short lease timings, unlimited retries, no dead-letter destination: nothing may be
   parked, every order must complete);
2. starts ``--workers`` ``stream-worker run`` processes (endpoint = the proxy);
3. during ``--duration`` seconds: writes the orders (``PutItem status NEW``, spread over
   the first 80 % of the window), changes the amount of every ``--modify-every``-th order
   shortly after (``UpdateItem``: a MODIFY record that no route takes), kills a worker with
   SIGKILL (start-up included) and restarts it after a moment, stops a started one with
   SIGTERM (must exit 0) and restarts it, always keeping one worker running, and switches the proxy's fault profile every few seconds (throttling
   5-20 %, 5xx 5 %, resets 2 %, 50-200 ms latency, or off); a monitor thread reads the
   lease table all along and records any checkpoint that moves backwards;
4. switches faults off, waits (bounded) until the chain finished for every order and every
   lease checkpoint reached its stream's last record, stops every worker with SIGTERM
   (each must exit 0);
5. checks the outcome (verification talks to moto directly, never through the proxy):
   every order PROCESSING with its final amount, exactly one DISPATCHED shipment and
   exactly one ShipmentRequested event (with the id derived from the order id) per order,
   every order handled at least once by both routes (the workers' logs), no checkpoint
   regression, no dead letter, no unexpected worker exit; and prints a summary table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import boto3
import yaml
from boto3.dynamodb.types import TypeDeserializer

from tests.chaos.fault_proxy import KINDS, FaultProxy, FaultRates
from tests.integration.helpers import seed_document
from worker.local.moto_process import MotoServer
from worker.local.dynamodb_local import DynamoDBLocal

REPO = Path(__file__).resolve().parents[2]
STREAM_WORKER = str(Path(sys.executable).with_name("stream-worker"))
REGION = "us-east-1"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
SHUTDOWN_TIMEOUT = 10.0
_deserializer = TypeDeserializer()


# --------------------------------------------------------------------------- the plan


@dataclass
class ChaosPlan:
    orders: int = 150
    duration: float = 30.0  # the chaos window: writes, kills, SIGTERMs, fault profiles
    workers: int = 3
    kills: int = 2
    sigterms: int = 1
    modify_every: int = 5  # every n-th order also gets an amount change (0: none)
    max_write_rate: float = 200.0  # PutItem per second, at most (moto manages ~350)
    seed: int = 1
    settle_timeout: float = 120.0  # after the window: chain finished and checkpoints at the tips
    restart_delay: tuple[float, float] = (0.5, 6.0)  # below and above the 3 s lease duration
    fault_period: tuple[float, float] = (2.0, 5.0)
    lease_duration: float = 3.0

    @classmethod
    def for_duration(cls, orders: int, duration: float, seed: int, **overrides: Any) -> "ChaosPlan":
        """The long form: disruptions scale with the window (one kill per ~20 s, one
        SIGTERM per ~30 s)."""
        values: dict[str, Any] = {
            "orders": orders, "duration": duration, "seed": seed,
            "kills": max(2, int(duration // 20)), "sigterms": max(1, int(duration // 30)),
            "settle_timeout": max(120.0, duration / 2),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(order=True)
class Action:
    at: float
    kind: str = field(compare=False)  # kill | sigterm | restart | faults
    worker: str | None = field(default=None, compare=False)
    rates: FaultRates | None = field(default=None, compare=False)
    restart_after: float = field(default=0.0, compare=False)


def fault_profile(rng: random.Random) -> FaultRates:
    """One of the profiles the run switches between: mostly faulty, sometimes clean."""
    if rng.random() < 0.2:
        return FaultRates()
    throttle = rng.uniform(0.05, 0.20)
    provisioned_share = rng.uniform(0.2, 0.5)  # part of the throttling as the DynamoDB variant
    return FaultRates(
        throttle=throttle * (1 - provisioned_share),
        provisioned=throttle * provisioned_share,
        server_error=0.05,
        reset=0.01,
        reset_after=0.01,
        latency=rng.uniform(0.3, 1.0),
        latency_seconds=(0.05, 0.2),
    )


def build_schedule(plan: ChaosPlan, worker_ids: list[str]) -> list[Action]:
    """Kills, SIGTERMs and fault profiles over the window, deterministic from the seed.
    Restarts are scheduled when the kill/stop happens (``restart_after``)."""
    rng = random.Random(plan.seed)
    actions: list[Action] = []
    disruptions = ["kill"] * plan.kills + ["sigterm"] * plan.sigterms
    rng.shuffle(disruptions)
    if disruptions:
        # Spread over 10 %..85 % of the window, one slot each, jittered inside its slot.
        span = 0.75 * plan.duration / len(disruptions)
        for i, kind in enumerate(disruptions):
            at = 0.10 * plan.duration + span * (i + rng.uniform(0.1, 0.9))
            actions.append(Action(at, kind, worker=rng.choice(worker_ids),
                                  restart_after=rng.uniform(*plan.restart_delay)))
    t = rng.uniform(0.5, 2.0)
    while t < plan.duration:
        actions.append(Action(t, "faults", rates=fault_profile(rng)))
        t += rng.uniform(*plan.fault_period)
    return sorted(actions)


# --------------------------------------------------------------------------- worker processes


@dataclass
class WorkerProcess:
    worker_id: str
    config_path: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    expected_exit: bool = False  # we signalled it
    log_offset: int = 0  # where this incarnation's log lines begin

    def start(self) -> None:
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child; closed below
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_ENDPOINT_URL")}
        env.update(FAKE_AWS_ENV)
        env["WORKER_ID"] = self.worker_id
        try:
            self.process = subprocess.Popen(
                [STREAM_WORKER, "run", "--config", str(self.config_path), "--metrics-port", "0"],
                cwd=REPO, env=env, stdout=log, stderr=log,
            )
        finally:
            log.close()
        self.starts += 1
        self.expected_exit = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def started(self) -> bool:
        """Running and past start-up (it logged ``start worker``): its signal handlers are
        installed. A SIGTERM during the first second (interpreter start, imports) ends the
        process by the default action (exit -15), before the worker can handle it."""
        if not self.running:
            return False
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return b'"event": "start worker"' in log.read()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.expected_exit = True
        self.process.send_signal(signum)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time (returns None then)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode


# --------------------------------------------------------------------------- lease monitor


class LeaseMonitor:
    """Reads the lease table (moto, directly) in a thread; any checkpoint that moves
    backwards (or disappears from a row that keeps existing) is a regression."""

    def __init__(self, client: Any, table: str, interval: float = 0.2) -> None:
        self._client = client
        self._table = table
        self._interval = interval
        self.regressions: list[str] = []
        self.owner_changes = 0
        self.reads = 0
        self._last: dict[str, int] = {}
        self._owners: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lease-monitor", daemon=True)

    def start(self) -> "LeaseMonitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def rows(self) -> list[dict[str, Any]]:
        rows = [{k: _deserializer.deserialize(v) for k, v in item.items()} for item in scan(self._client, self._table)]
        return [row for row in rows if str(row["pk"]).startswith("lease#")]

    def check_once(self) -> None:
        for row in self.rows():
            key = f"{row.get('table')}:{row['sk']}"
            checkpoint = row.get("checkpoint")
            if checkpoint is None:
                if key in self._last:
                    self.regressions.append(f"{key}: checkpoint cleared (was {self._last[key]})")
                continue
            value = 10**60 if checkpoint == "SHARD_END" else int(checkpoint)
            if value < self._last.get(key, -1):
                self.regressions.append(f"{key}: {self._last[key]} -> {value}")
            self._last[key] = value
            owner = row.get("owner")
            if key in self._owners and self._owners[key] != owner:
                self.owner_changes += 1
            self._owners[key] = owner
        self.reads += 1

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception as exc:  # noqa: BLE001 - moto busy: try again next round
                print(f"lease monitor: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._stop.wait(self._interval)


# --------------------------------------------------------------------------- moto helpers


def scan(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def stream_tips(ddb: Any, streams: Any, table_name: str) -> dict[str, str | None]:
    """shard id -> sequence number of the last record in it (None: empty shard)."""
    arn = ddb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
    tips: dict[str, str | None] = {}
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        last = None
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                break
            last = page["Records"][-1]["dynamodb"]["SequenceNumber"]
            iterator = page.get("NextShardIterator")
        tips[shard["ShardId"]] = last
    return tips


# --------------------------------------------------------------------------- the report


@dataclass
class LogStats:
    processed: Counter[str] = field(default_factory=Counter)  # order id -> order-processing completions
    dispatched: Counter[str] = field(default_factory=Counter)  # order id -> shipment-dispatch completions
    skip_not_new: int = 0
    skip_dispatched: int = 0
    events: Counter[str] = field(default_factory=Counter)  # interesting log events
    crashed_loops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # error-level events
    unparsed: int = 0

    @property
    def duplicates_delivered(self) -> int:
        return sum(max(0, n - 1) for n in self.processed.values()) + sum(max(0, n - 1) for n in self.dispatched.values())


INTERESTING = (
    "stop shard on lost lease", "notice lost lease", "stop all shards: heartbeat not renewed in time",
    "miss heartbeat", "retry aws call", "retry failed handler", "restart crashed loop", "restart crashed consumer",
    "park record in dead-letter destination", "renew expired iterator", "take lease", "skip release",
    "cancel consumers past the shutdown budget", "stop worker", "start worker",
)


def parse_logs(paths: list[Path]) -> LogStats:
    stats = LogStats()
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue  # a traceback continuation, or a line cut by kill -9
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                stats.unparsed += 1
                continue
            event = entry.get("event", "")
            order_id = entry.get("order_id")
            if event == "publish shipment event" and order_id:
                stats.processed[order_id] += 1
            elif event in ("dispatch shipment", "skip shipment already dispatched") and order_id:
                stats.dispatched[order_id] += 1
                if event == "skip shipment already dispatched":
                    stats.skip_dispatched += 1
            elif event == "skip order not in NEW":
                stats.skip_not_new += 1
            if event in INTERESTING:
                stats.events[event] += 1
            if event == "restart crashed loop":
                stats.crashed_loops[str(entry.get("loop"))] += 1
            elif event == "restart crashed consumer":
                stats.crashed_loops["consumer"] += 1
            if entry.get("level") in ("error", "critical"):
                stats.errors[event] += 1
    return stats


@dataclass
class ChaosReport:
    plan: ChaosPlan
    workdir: Path
    orders: int = 0
    modified: int = 0
    kills: int = 0
    sigterms: int = 0
    restarts: int = 0
    fault_profiles: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    faults_by_operation: dict[str, dict[str, int]] = field(default_factory=dict)
    proxied_requests: int = 0
    duplicates_delivered: int = 0
    duplicated_effects: int = 0
    checkpoint_regressions: list[str] = field(default_factory=list)
    lease_owner_changes: int = 0
    logs: LogStats = field(default_factory=LogStats)
    sigterm_exit_codes: list[int | None] = field(default_factory=list)
    unexpected_exits: list[str] = field(default_factory=list)
    settle_seconds: float | None = None
    elapsed: float = 0.0
    timeline: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def table(self) -> str:
        faults = ", ".join(f"{k} {self.faults.get(k, 0)}" for k in KINDS)
        crashes = ", ".join(f"{k} {v}" for k, v in sorted(self.logs.crashed_loops.items())) or "0"
        rows = [
            ("orders", f"{self.orders} ({self.modified} also modified)"),
            ("workers", f"{self.plan.workers}, {self.restarts} restarts"),
            ("kill -9", str(self.kills)),
            ("SIGTERM", f"{self.sigterms} (+{self.plan.workers} at the end), exit codes "
                        f"{sorted(set(map(str, self.sigterm_exit_codes))) or '-'}"),
            ("fault profiles", str(self.fault_profiles)),
            ("faults injected", f"{sum(self.faults.get(k, 0) for k in KINDS)} of {self.proxied_requests} "
                                f"requests: {faults}"),
            ("duplicates delivered", f"{self.duplicates_delivered} (allowed; skip-already-dispatched "
                                     f"{self.logs.skip_dispatched}, skip-not-NEW {self.logs.skip_not_new})"),
            ("duplicated effects", str(self.duplicated_effects)),
            ("checkpoint regressions", str(len(self.checkpoint_regressions))),
            ("lease owner changes", str(self.lease_owner_changes)),
            ("lost leases / fences", f"{self.logs.events['stop shard on lost lease']} / "
                                     f"{self.logs.events['stop all shards: heartbeat not renewed in time']}"),
            ("aws retries logged", str(self.logs.events["retry aws call"])),
            ("handler retries", str(self.logs.events["retry failed handler"])),
            ("loop crashes", crashes),
            ("unexpected exits", str(len(self.unexpected_exits))),
            ("settle after window", f"{self.settle_seconds:.1f} s" if self.settle_seconds is not None else "-"),
            ("elapsed", f"{self.elapsed:.1f} s"),
            ("result", "PASS" if self.ok else f"FAIL ({len(self.failures)})"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"chaos run seed={self.plan.seed} (logs: {self.workdir})", "-" * (width + 50)]
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"  FAIL: {message}" for message in self.failures]
        return "\n".join(lines)


# --------------------------------------------------------------------------- the run


class ChaosRun:
    def __init__(self, plan: ChaosPlan, workdir: Path, *, log: Callable[[str], None] = print,
                 endpoint_url: str | None = None) -> None:
        self.plan = plan
        self.workdir = workdir
        self._print = log
        self.endpoint_url = endpoint_url
        self._moto: MotoServer | None = None
        self.proxy: FaultProxy | None = None
        self.workers: dict[str, WorkerProcess] = {}
        self.monitor: LeaseMonitor | None = None
        self.report = ChaosReport(plan=plan, workdir=workdir)
        self._started = 0.0
        self.prefix = f"chaos{plan.seed}-{os.getpid()}-"
        self.order_ids = [f"order-{plan.seed}-{i:05d}" for i in range(plan.orders)]
        self.amounts: dict[str, int] = {}  # order id -> the amount it must end with
        self._writer_error: BaseException | None = None
        self._written = 0

    # -- helpers ---------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self._started

    def note(self, message: str) -> None:
        line = f"[{self.now():7.2f}s] {message}"
        self.report.timeline.append(line)
        self._print(line)

    def _client(self, service: str) -> Any:
        assert self.endpoint_url is not None
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    # -- set-up ----------------------------------------------------------------------

    def _setup(self) -> None:
        if self.endpoint_url is None:
            self._moto = MotoServer().start()
            self.endpoint_url = self._moto.url
        self.proxy = FaultProxy(self.endpoint_url, seed=self.plan.seed).start()
        doc = seed_document(self.proxy.url, self.prefix)
        self.tables = {logical: spec["name"] for logical, spec in doc["tables"].items()}
        self.lease_table = doc["leases"]["table"]
        doc["worker"] = {"id": "${WORKER_ID}", "shutdown_timeout_seconds": SHUTDOWN_TIMEOUT}
        doc["leases"].update({"duration_seconds": self.plan.lease_duration, "poll_interval_seconds": 0.25,
                              "scan_interval_seconds": 5})
        doc["reader"].update({"idle_poll_seconds": 0.1, "max_idle_poll_seconds": 0.5,
                              "discovery_interval_seconds": 2, "parent_poll_seconds": 0.2})
        # Unlimited attempts and no dead-letter destination: nothing may be parked.
        doc["processing"]["retry"] = {"max_attempts": -1, "initial_backoff_seconds": 0.05,
                                      "max_backoff_seconds": 1.0}
        doc["processing"].pop("dead_letter", None)
        doc["observability"] = {"metrics": {"port": 0}, "logging": {"level": "INFO", "format": "json"}}
        self.config_path = self.workdir / "worker.yaml"
        self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        # Tables straight on moto, before any fault.
        from worker.aws import AwsClients
        from worker.config import parse_config
        from worker.local.tables import create_tables

        setup_doc = json.loads(json.dumps(doc))
        setup_doc["aws"]["endpoint_url"] = self.endpoint_url
        config = parse_config(setup_doc, env={"WORKER_ID": "setup"})

        async def create() -> None:
            clients = AwsClients(config.aws)
            try:
                await create_tables(config, clients)
            finally:
                await clients.close()

        asyncio.run(create())
        self.ddb = self._client("dynamodb")
        self.streams = self._client("dynamodbstreams")

    # -- writing -----------------------------------------------------------------------

    def _write_orders(self) -> None:
        """PutItem NEW orders at a steady pace over 80 % of the window; every n-th order
        gets an amount change (UpdateItem, a MODIFY no route takes) 0.2-3 s later."""
        try:
            client = self._client("dynamodb")
            rng = random.Random(self.plan.seed * 7919 + 1)
            window = max(1.0, 0.8 * self.plan.duration)
            rate = min(self.plan.max_write_rate, max(1.0, len(self.order_ids) / window))
            modifies: list[tuple[float, str, int]] = []
            began = time.monotonic()
            table = self.tables["orders"]
            for i, order_id in enumerate(self.order_ids):
                due = began + i / rate
                while True:
                    now = time.monotonic()
                    modifies = self._apply_modifies(client, table, modifies, now)
                    if now >= due:
                        break
                    time.sleep(min(0.05, due - now))
                amount = 10 + i % 90
                client.put_item(TableName=table, Item={"orderId": {"S": order_id}, "status": {"S": "NEW"},
                                                       "amount": {"N": str(amount)}})
                self.amounts[order_id] = amount
                self._written += 1
                if self.plan.modify_every and i % self.plan.modify_every == 0:
                    modifies.append((time.monotonic() + rng.uniform(0.2, 3.0), order_id, amount + 1000))
            while modifies:
                modifies = self._apply_modifies(client, table, modifies, time.monotonic())
                time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            self._writer_error = exc

    def _apply_modifies(self, client: Any, table: str, pending: list[tuple[float, str, int]],
                        now: float) -> list[tuple[float, str, int]]:
        left = []
        for due, order_id, amount in pending:
            if due > now:
                left.append((due, order_id, amount))
                continue
            # Only the amount: the status is the handler's (a PutItem would reset it to NEW).
            client.update_item(TableName=table, Key={"orderId": {"S": order_id}},
                               UpdateExpression="SET amount = :a", ExpressionAttributeValues={":a": {"N": str(amount)}})
            self.amounts[order_id] = amount
            self.report.modified += 1
        return left

    # -- chaos -------------------------------------------------------------------------

    def _check_processes(self) -> None:
        """A worker that exits without being signalled is a failure; restart it so the run
        can still show whether anything was lost."""
        for worker in self.workers.values():
            process = worker.process
            if process is not None and process.poll() is not None and not worker.expected_exit:
                message = f"{worker.worker_id} exited by itself with code {process.returncode}"
                self.report.unexpected_exits.append(message)
                self.note(f"UNEXPECTED: {message}; restart it")
                worker.start()
                self.report.restarts += 1

    def _run_schedule(self, schedule: list[Action]) -> None:
        assert self.proxy is not None
        pending = list(schedule)
        restarts: list[tuple[float, str]] = []  # (at, worker): after a kill, or after a SIGTERM exit
        stopping: dict[str, tuple[float, float]] = {}  # worker -> (signalled at, restart delay)
        ids = sorted(self.workers)
        end = self.plan.duration
        while self.now() < end or stopping or restarts or any(a.kind != "faults" for a in pending):
            now = self.now()
            if now > end + 60:
                raise RuntimeError(f"schedule did not finish: stopping={stopping} restarts={restarts}")
            while pending and pending[0].at <= now:
                action = pending.pop(0)
                if action.kind == "faults":
                    assert action.rates is not None
                    self.proxy.set_faults(action.rates)
                    self.report.fault_profiles += 1
                    self.note(f"faults: {action.rates.describe()}")
                    continue
                # The scheduled victim, or the next running one (keep one worker running).
                order = ids[ids.index(action.worker):] + ids[:ids.index(action.worker)]  # type: ignore[arg-type]
                running = [w for w in order if self.workers[w].running and w not in stopping]
                # kill -9 hits any running worker, start-up included; SIGTERM a started one
                # (a graceful stop is what is under test, see WorkerProcess.started).
                eligible = running if action.kind == "kill" else [w for w in running if self.workers[w].started]
                if len(running) <= 1 or not eligible:  # keep one worker running: try again soon
                    action.at = now + 1.0
                    pending.append(action)
                    pending.sort()
                    continue
                victim = self.workers[eligible[0]]
                if action.kind == "kill":
                    victim.signal(signal.SIGKILL)
                    assert victim.process is not None
                    victim.process.wait()
                    self.report.kills += 1
                    restarts.append((now + action.restart_after, victim.worker_id))
                    self.note(f"kill -9 {victim.worker_id} (restart in {action.restart_after:.1f} s)")
                else:
                    victim.signal(signal.SIGTERM)
                    self.report.sigterms += 1
                    stopping[victim.worker_id] = (now, action.restart_after)
                    self.note(f"SIGTERM {victim.worker_id}")
            for worker_id, (since, delay) in list(stopping.items()):
                process = self.workers[worker_id].process
                assert process is not None
                code = process.poll()
                if code is None:
                    if now - since > SHUTDOWN_TIMEOUT + 15:
                        process.kill()
                        process.wait()
                        self.report.sigterm_exit_codes.append(None)
                        self.report.fail(f"{worker_id} did not exit within {SHUTDOWN_TIMEOUT + 15} s of SIGTERM")
                        del stopping[worker_id]
                        restarts.append((now, worker_id))
                    continue
                self.report.sigterm_exit_codes.append(code)
                self.note(f"{worker_id} exited with {code} after {now - since:.1f} s (restart in {delay:.1f} s)")
                if code != 0:
                    self.report.fail(f"{worker_id} exited with {code} on SIGTERM (expected 0)")
                del stopping[worker_id]
                restarts.append((now + delay, worker_id))
            for item in sorted(restarts):
                at, worker_id = item
                if at <= now:
                    restarts.remove(item)
                    self.workers[worker_id].start()
                    self.report.restarts += 1
                    self.note(f"restart {worker_id}")
            self._check_processes()
            time.sleep(0.05)

    # -- settling and checking ---------------------------------------------------------

    def _chain_state(self) -> tuple[list[str], dict[str, Any]]:
        """Problems with the current outcome (empty: done) and the scanned tables."""
        orders = {o["orderId"]: o for o in map(plain, scan(self.ddb, self.tables["orders"]))}
        shipments = [plain(s) for s in scan(self.ddb, self.tables["shipments"])]
        events = [plain(e) for e in scan(self.ddb, self.tables["events"])]
        problems = []
        not_processing = [i for i in self.order_ids if (orders.get(i) or {}).get("status") != "PROCESSING"]
        if not_processing:
            problems.append(f"{len(not_processing)} orders not PROCESSING (e.g. {not_processing[:3]})")
        wrong_amount = [i for i in self.order_ids if i in orders and orders[i].get("amount") != self.amounts.get(i)]
        if wrong_amount:
            problems.append(f"{len(wrong_amount)} orders without their final amount (e.g. {wrong_amount[:3]})")
        dispatched = Counter(s["orderId"] for s in shipments if s.get("status") == "DISPATCHED")
        missing = [i for i in self.order_ids if dispatched[i] == 0]
        if missing:
            problems.append(f"{len(missing)} orders without a DISPATCHED shipment (e.g. {missing[:3]})")
        return problems, {"orders": orders, "shipments": shipments, "events": events}

    def _checkpoints_at_tips(self) -> list[str]:
        """Leases whose checkpoint is not the last record of their shard."""
        rows = {(row.get("table"), row["sk"]): row.get("checkpoint") for row in self.monitor.rows()}  # type: ignore[union-attr]
        behind = []
        for logical in ("orders", "events"):
            for shard, tip in stream_tips(self.ddb, self.streams, self.tables[logical]).items():
                checkpoint = rows.get((logical, shard))
                if tip is not None and checkpoint != tip:
                    behind.append(f"{logical}:{shard} checkpoint {checkpoint} < last record {tip}")
        return behind

    def _wait_settled(self) -> None:
        deadline = time.monotonic() + self.plan.settle_timeout
        began = time.monotonic()
        problems = ["not checked"]
        while time.monotonic() < deadline:
            self._check_processes()
            problems, _ = self._chain_state()
            if not problems:
                problems = self._checkpoints_at_tips()
            if not problems:
                self.report.settle_seconds = time.monotonic() - began
                self.note(f"chain finished and checkpoints at the stream tips after {self.report.settle_seconds:.1f} s")
                return
            time.sleep(1.0)
        self.report.fail(f"not settled within {self.plan.settle_timeout:.0f} s: {'; '.join(problems)}")
        self.note(f"NOT SETTLED: {problems}")

    def _verify(self) -> None:
        from worker.handlers.orders import SHIPMENT_REQUESTED
        from worker.publishing.events import derive_event_id

        report = self.report
        problems, state = self._chain_state()
        for problem in problems:
            report.fail(problem)
        # Effects: exactly one shipment and one ShipmentRequested event per order, with the
        # event id derived from the order id, and nothing for orders never written.
        known = set(self.order_ids)
        shipments_per_order = Counter(s["orderId"] for s in state["shipments"])
        events_per_order: Counter[str] = Counter()
        for event in state["events"]:
            order_id = (event.get("payload") or {}).get("orderId")
            events_per_order[order_id] += 1
            if event.get("type") != SHIPMENT_REQUESTED:
                report.fail(f"unexpected event type {event.get('type')!r} ({event.get('eventId')})")
            elif event.get("eventId") != derive_event_id(SHIPMENT_REQUESTED, str(order_id)):
                report.fail(f"event {event.get('eventId')} of {order_id} does not have the derived id")
        report.duplicated_effects = sum(n - 1 for n in shipments_per_order.values() if n > 1) + sum(
            n - 1 for n in events_per_order.values() if n > 1)
        if report.duplicated_effects:
            report.fail(f"{report.duplicated_effects} duplicated effects")
        strangers = (set(shipments_per_order) | set(events_per_order)) - known
        if strangers:
            report.fail(f"effects for orders never written: {sorted(strangers)[:5]}")
        no_event = [i for i in self.order_ids if events_per_order[i] != 1]
        if no_event:
            report.fail(f"{len(no_event)} orders without exactly one ShipmentRequested event (e.g. {no_event[:3]})")
        for shipment in state["shipments"]:
            expected = derive_event_id(SHIPMENT_REQUESTED, str(shipment["orderId"]))
            if shipment.get("requestEventId") != expected:
                report.fail(f"shipment of {shipment['orderId']} caused by {shipment.get('requestEventId')}, "
                            f"not {expected}")
        dead = scan(self.ddb, self.tables["dead_letters"])
        if dead:
            report.fail(f"{len(dead)} dead letters (no destination is configured; nothing may be parked)")
        # Deliveries: every order handled at least once by each route (from the logs, which
        # a handler writes before it returns, i.e. before its record can be checkpointed).
        logs = parse_logs(sorted(self.workdir.glob("*.log")))
        report.logs = logs
        report.duplicates_delivered = logs.duplicates_delivered
        unprocessed = [i for i in self.order_ids if logs.processed[i] == 0]
        if unprocessed:
            report.fail(f"{len(unprocessed)} orders never completed order-processing (e.g. {unprocessed[:3]})")
        undispatched = [i for i in self.order_ids if logs.dispatched[i] == 0]
        if undispatched:
            report.fail(f"{len(undispatched)} events never completed shipment-dispatch (e.g. {undispatched[:3]})")
        if logs.events["park record in dead-letter destination"]:
            report.fail("records were parked")
        if logs.skip_not_new:
            report.fail(f"{logs.skip_not_new} 'skip order not in NEW': an order left NEW by another way")
        assert self.monitor is not None
        report.checkpoint_regressions = list(self.monitor.regressions)
        report.lease_owner_changes = self.monitor.owner_changes
        if report.checkpoint_regressions:
            report.fail(f"checkpoint regressions: {report.checkpoint_regressions[:5]}")
        if report.unexpected_exits:
            report.fail(f"unexpected worker exits: {report.unexpected_exits}")
        if self.monitor.reads < 3:
            report.fail("the lease monitor hardly ran")

    # -- the whole run -----------------------------------------------------------------

    def run(self) -> ChaosReport:
        self._started = time.monotonic()
        writer: threading.Thread | None = None
        try:
            self._setup()
            self.report.orders = len(self.order_ids)
            for n in range(1, self.plan.workers + 1):
                worker_id = f"w{n}"
                self.workers[worker_id] = WorkerProcess(worker_id, self.config_path, self.workdir / f"{worker_id}.log")
            schedule = build_schedule(self.plan, sorted(self.workers))
            self.note(f"endpoint {self.endpoint_url}, proxy {self.proxy.url if self.proxy else '-'}, "  # noqa: SLF001
                      f"{len(schedule)} scheduled actions, workdir {self.workdir}")
            self.monitor = LeaseMonitor(self._client("dynamodb"), self.lease_table).start()
            for worker in self.workers.values():
                worker.start()
            self._started = time.monotonic()  # the window starts with the workers
            writer = threading.Thread(target=self._write_orders, name="order-writer", daemon=True)
            writer.start()
            self._run_schedule(schedule)
            assert self.proxy is not None
            self.proxy.clear_faults()
            self.note("faults off")
            writer.join(timeout=max(60.0, self.plan.orders / 50))
            if writer.is_alive():
                self.report.fail(f"order writer still running ({self._written}/{len(self.order_ids)} written)")
            if self._writer_error is not None:
                self.report.fail(f"order writer failed: {self._writer_error!r}")
            self.note(f"{self._written} orders written, {self.report.modified} modified")
            self._wait_settled()
            for worker in self.workers.values():
                code = worker.stop(timeout=SHUTDOWN_TIMEOUT + 15)
                self.report.sigterm_exit_codes.append(code)
                self.note(f"SIGTERM {worker.worker_id} at the end: exit {code}")
                if code != 0:
                    self.report.fail(f"{worker.worker_id} exited with {code} on the final SIGTERM (expected 0)")
            self.monitor.check_once()
            after_stop = self._checkpoints_at_tips() if self.report.settle_seconds is not None else []
            for problem in after_stop:
                self.report.fail(f"after the final stop: {problem}")
            self._verify()
        finally:
            for worker in self.workers.values():
                if worker.running:
                    worker.stop(timeout=5)
            if self.monitor is not None:
                self.monitor.stop()
            if self.proxy is not None:
                self.report.faults = self.proxy.counts()
                self.report.faults_by_operation = self.proxy.counts_by_operation()
                self.report.proxied_requests = self.proxy.stats()["requests"]
                self.proxy.stop()
            if self._moto is not None:
                self._moto.stop()
            self.report.elapsed = self.now()
        return self.report


def run_chaos(plan: ChaosPlan, workdir: Path | None = None, *, log: Callable[[str], None] = print,
              endpoint_url: str | None = None) -> ChaosReport:
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="stream-worker-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return ChaosRun(plan, workdir, log=log, endpoint_url=endpoint_url).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.controller", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--duration", type=float, default=300.0, help="chaos window in seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=None, help="default: one per 20 s of window")
    parser.add_argument("--sigterms", type=int, default=None, help="default: one per 30 s of window")
    parser.add_argument("--modify-every", type=int, default=5)
    parser.add_argument("--settle-timeout", type=float, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="logs and config (default: a temp dir)")
    parser.add_argument("--endpoint", choices=["moto", "dynamodb-local"], default="moto",
                        help="the endpoint behind the fault proxy (dynamodb-local: installed on first use)")
    args = parser.parse_args(argv)
    os.environ.update(FAKE_AWS_ENV)
    os.environ.pop("AWS_PROFILE", None)
    plan = ChaosPlan.for_duration(args.orders, args.duration, args.seed, workers=args.workers, kills=args.kills,
                                  sigterms=args.sigterms, modify_every=args.modify_every,
                                  settle_timeout=args.settle_timeout)
    local = DynamoDBLocal().start() if args.endpoint == "dynamodb-local" else None
    try:
        report = run_chaos(plan, args.workdir, endpoint_url=local.url if local is not None else None)
    finally:
        if local is not None:
            local.stop()
    print()
    print(report.table())
    by_op = defaultdict(int)
    for kind, operations in report.faults_by_operation.items():
        for operation, n in operations.items():
            by_op[operation] += n
    print("faults by operation:", ", ".join(f"{op} {n}" for op, n in sorted(by_op.items(), key=lambda x: -x[1])))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
