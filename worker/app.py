"""The supervisor: owns every task, starts components in order, stops them in reverse.

Start: clients -> lease table -> streams (checked against the routes) -> publisher ->
router/delivery -> heartbeat -> discovery -> taker -> health server.

Stop (SIGTERM/SIGINT, or ``request_stop``): stop taking leases, let every consumer finish
its current record and checkpoint (bounded by ``worker.shutdown_timeout_seconds``, after
which consumers are cancelled and save their finished prefix), release every lease so
others resume at once, remove the worker row, close clients.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import structlog
from botocore.exceptions import ClientError

from worker.aws import AwsClients, error_code
from worker.config import Config
from worker.deadletter import DeadLetterDestination, build_dead_letters
from worker.errors import SetupError, StartupError, TrimmedDataError
from worker.gc_tuning import tune_garbage_collector
from worker.leases.coordinator import LeaseCoordinator
from worker.leases.model import Lease
from worker.leases.table import LeaseTable
from worker.lifecycle.consumer import ConsumerState, ShardConsumer, ShardTopology
from worker.observability import metrics
from worker.observability.health import HealthServer
from worker.processing.delivery import DeliveryServices, ProcessingObserver, RouteDelivery
from worker.processing.key_scheduler import CallSlots
from worker.processing.pipeline import ShardPipeline
from worker.processing.router import Route, Router
from worker.processing.tracker import ProgressTracker
from worker.publishing.base import Publisher
from worker.publishing.factory import build_publisher
from worker.retrieval.fast_decode import install_fast_get_records
from worker.retrieval.idle_budget import IdlePollBudget
from worker.shards.discovery import StreamInfo, describe_shards, resolve_stream, sync_leases
from worker.shards.lineage import ShardGraph

log = structlog.get_logger(__name__)


class Tables:
    """Caches one aioboto3 ``Table`` per logical name for handlers."""

    def __init__(self, clients: AwsClients, names: dict[str, str]) -> None:
        self._clients = clients
        self._names = names
        self._tables: dict[str, Any] = {}

    async def table(self, logical_name: str) -> Any:
        if logical_name not in self._tables:
            if logical_name not in self._names:
                raise KeyError(f"no table {logical_name!r} in the config's tables section")
            resource = await self._clients.dynamodb_resource()
            self._tables[logical_name] = await resource.Table(self._names[logical_name])
        return self._tables[logical_name]


@dataclass
class _Running:
    consumer: ShardConsumer
    task: asyncio.Task[ConsumerState]
    stop: asyncio.Event


class App:
    def __init__(
        self,
        config: Config,
        *,
        observers: list[ProcessingObserver] | None = None,
        metrics_port: int | None = None,
        tune_gc: bool = False,
    ) -> None:
        self.config = config
        self._tune_gc = tune_gc  # the `run` process does; in-process tests do not (worker/gc_tuning.py)
        self.worker_id = config.worker.resolved_id()
        self._observers = list(observers or [])
        self._metrics_port = config.observability.metrics.port if metrics_port is None else metrics_port
        self._stop = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._consumers: dict[tuple[str, str], _Running] = {}
        self._idle_budget = IdlePollBudget(config.reader.idle_polls_per_second)
        # Shared by every shard's pipeline: handler calls in flight in the whole process.
        self._call_slots = CallSlots(config.processing.max_concurrent_handler_calls)
        self._graphs: dict[str, ShardGraph] = {}
        self.streams: dict[str, StreamInfo] = {}  # stream arn -> info
        self.clients: AwsClients | None = None
        self.lease_table: LeaseTable | None = None
        self.coordinator: LeaseCoordinator | None = None
        self.publisher: Publisher | None = None
        self.router: Router | None = None
        self.services: DeliveryServices | None = None
        self._dead_letters: dict[str, DeadLetterDestination | None] = {}
        self.health: HealthServer | None = None
        self._started = False
        self._crashed_at: dict[str, float] = {}  # loop -> monotonic time of its last crash
        self._stopped_shards: set[str] = set()  # shards held stopped by the trimmed-data policy
        self._log = log.bind(worker=self.worker_id)

    # -- start -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and set up within ``worker.startup_timeout_seconds``, then start the loops.

        Raises ConfigError/SetupError (exit 2) for config or tables that do not fit, and
        StartupError (exit 1) when AWS cannot be reached in time or refuses a call.
        """
        # Every log line of this worker (and the tasks it starts) names the worker.
        structlog.contextvars.bind_contextvars(worker_id=self.worker_id)
        router = Router.from_config(self.config)  # handler import errors are config errors
        self.clients = AwsClients(self.config.aws)
        timeout = self.config.worker.startup_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                await self._connect(router)
        except TimeoutError:
            raise StartupError(
                f"start-up did not finish within {timeout:g} s: the AWS endpoint "
                f"({self.clients.endpoint_url or 'the default for ' + self.clients.region}) is unreachable "
                "or throttling; see the 'retry aws call' warnings"
            ) from None
        except ClientError as exc:
            raise StartupError(
                f"AWS refused a start-up call: {error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"
                " (check the credentials and the IAM policy, deploy/iam/worker-policy.json)"
            ) from None
        await self._start_loops()

    async def _connect(self, router: Router) -> None:
        config = self.config
        assert self.clients is not None
        ddb = await self.clients.client("dynamodb")
        streams_client = await self.clients.client("dynamodbstreams")
        if config.reader.fast_decode:
            install_fast_get_records(streams_client)
        self.lease_table = LeaseTable(ddb, await self.clients.dynamodb_resource(), config.leases.table)
        if config.leases.create_table:
            await self.lease_table.create_if_missing()
        self._needs = router.tables_needing_images()
        problems: list[str] = []
        for logical in config.consumed_tables:
            try:
                info = await self._resolve(logical, streams_client)
            except SetupError as exc:
                problems.append(str(exc))
                continue
            self.streams[info.stream_arn] = info
        if problems:  # report every table at once, not one per restart
            raise SetupError("; ".join(problems))
        names = {logical: table.name for logical, table in config.tables.items()}
        self.publisher = await build_publisher(config.publisher, self.clients, names)
        self.router = router
        self.services = DeliveryServices(
            publisher=self.publisher, tables=Tables(self.clients, names), config=config,
            worker_id=self.worker_id, observers=self._observers,
        )
        for route in router.routes:
            self._dead_letters[route.name] = await build_dead_letters(route.dead_letter, self.clients, names)
        self._streams_client = streams_client
        self.coordinator = LeaseCoordinator(
            self.lease_table,
            self.worker_id,
            config.leases,
            streams=lambda: {arn: info.table for arn, info in self.streams.items()},
            on_acquired=self._on_acquired,
            on_lost=self._on_lost,
        )
        # First heartbeat and discovery before any lease is taken.
        await self.coordinator.heartbeat_once()
        await self._discover_all()

    async def _start_loops(self) -> None:
        config = self.config
        assert self.coordinator is not None
        self._spawn("heartbeat", self.coordinator.run_heartbeats)
        self._spawn("discovery", self._run_discovery)
        self._spawn("taker", self.coordinator.run_taker)
        self._spawn("gauges", self._run_gauges)
        if self._metrics_port:
            self.health = HealthServer(
                config.observability.metrics.host, self._metrics_port, alive=self.alive, ready=self.ready
            )
            await self.health.start()
        metrics.up.set(1)
        self._started = True
        if self._tune_gc:
            tune_garbage_collector()
        self._log.info("start worker", streams=sorted(info.table for info in self.streams.values()))

    # A loop that crashed is restarted; it counts against readiness for this long after.
    CRASH_GRACE_SECONDS = 30.0
    # A loop that ran this long before crashing is restarted after the shortest delay again.
    HEALTHY_RUN_SECONDS = 30.0

    def alive(self) -> bool:
        """Liveness: the event loop answers (this runs on it). Crashed loops are restarted by
        the supervisor, so they do not make the process dead; they make it not ready."""
        return True

    def ready(self) -> bool:
        now = time.monotonic()
        recent_crash = any(now - at < self.CRASH_GRACE_SECONDS for at in self._crashed_at.values())
        ok = self._started and not self._stopping and not recent_crash and not self._stopped_shards
        ok = ok and self.coordinator is not None and self.coordinator.renewing
        metrics.ready.set(1 if ok else 0)
        return ok

    # -- supervised loops ----------------------------------------------------------------

    def _spawn(self, name: str, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self._loops.append(asyncio.create_task(self._supervise(name, body), name=name))

    async def _supervise(self, name: str, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        """Run a background loop; a crash is logged, counted and restarted with back-off."""
        delay = 0.5
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                await body(self._stop)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if time.monotonic() - began >= self.HEALTHY_RUN_SECONDS:
                    # It ran fine for a while: a new incident, not the same crash loop. Without
                    # this, the delay only ever grew, and after a few transient crashes over
                    # the process's life every later one stopped the loop for 30 s (for the
                    # taker: no lease taken and no loss noticed for 30 s).
                    delay = 0.5
                metrics.loop_crashes.labels(name).inc()
                self._crashed_at[name] = time.monotonic()
                self._log.exception("restart crashed loop", loop=name, delay=delay)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)

    async def _resolve(self, logical: str, streams_client: Any) -> StreamInfo:
        table = self.config.tables[logical]
        return await resolve_stream(
            await self._client("dynamodb"), logical, table.name, self._needs.get(logical, set()),
            streams_client=streams_client, stream_arn=table.stream.arn,
        )

    async def _discover_all(self) -> None:
        """Describe every stream and keep one lease row per shard (see shards/discovery.py)."""
        assert self.lease_table is not None
        created = 0
        for arn, info in list(self.streams.items()):
            current = await self._resolve(info.table, self._streams_client)
            if current.stream_arn != arn:
                self._log.warning("follow new stream of table", stream=info.table, arn=current.stream_arn)
                del self.streams[arn]
                self.streams[current.stream_arn] = current
            graph = await describe_shards(self._streams_client, current.stream_arn)
            self._graphs[current.stream_arn] = graph
            position = self.config.tables[info.table].stream.starting_position
            created += await sync_leases(self.lease_table, current, graph, position)
        if created and self.coordinator is not None:
            self.coordinator.request_scan()

    async def _run_discovery(self, stop: asyncio.Event) -> None:
        """Only the leader describes streams periodically, so N workers cost what one does."""
        interval = self.config.reader.discovery_interval_seconds
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval * random.uniform(0.9, 1.1))
                return
            except TimeoutError:
                if self.coordinator is not None and self.coordinator.is_leader:
                    await self._discover_all()

    async def _run_gauges(self, stop: asyncio.Event) -> None:
        """Per stream, the longest time any held shard has not reached the tip: a lag signal
        that stays meaningful when ApproximateCreationDateTime is coarse."""
        while not stop.is_set():
            now = time.monotonic()
            behind: dict[str, float] = {info.table: 0.0 for info in self.streams.values()}
            for running in list(self._consumers.values()):
                reader = running.consumer.reader
                if reader is not None and running.consumer.state is ConsumerState.PROCESSING:
                    table = running.consumer.lease.table
                    behind[table] = max(behind.get(table, 0.0), now - reader.last_tip_at)
            for table, seconds in behind.items():
                metrics.seconds_since_tip.labels(table).set(seconds)
            self.ready()
            try:
                await asyncio.wait_for(stop.wait(), timeout=2.0)
            except TimeoutError:
                pass

    async def _client(self, name: str) -> Any:
        assert self.clients is not None
        return await self.clients.client(name)

    # -- consumers ---------------------------------------------------------------------

    def _topology(self) -> ShardTopology:
        async def children(stream_arn: str, shard_id: str) -> list[str]:
            found = set(self._graphs[stream_arn].children_of(shard_id)) if stream_arn in self._graphs else set()
            if self.lease_table is not None:  # non-leaders know children from the lease rows
                leases = await self.lease_table.list_leases(stream_arn)
                found.update(lease.shard_id for lease in leases if shard_id in lease.parent_shard_ids)
            if not found:  # not discovered yet: a closed shard's children exist, ask the stream
                graph = await describe_shards(self._streams_client, stream_arn)
                found.update(graph.children_of(shard_id))
            return sorted(found)

        return ShardTopology(children_of=children)

    def _on_acquired(self, lease: Lease) -> None:
        if self._stopping or lease.key in self._consumers:
            return
        assert self.lease_table is not None
        consumer = ShardConsumer(
            lease,
            streams_client=self._streams_client,
            lease_table=self.lease_table,
            make_pipeline=self._make_pipeline,
            topology=self._topology(),
            config=self.config,
            stream=self.config.tables[lease.table].stream,
            idle_budget=self._idle_budget,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop), name=f"consumer:{lease.table}:{lease.shard_id}")
        self._consumers[lease.key] = _Running(consumer, task, stop)
        task.add_done_callback(functools.partial(self._on_consumer_done, lease.key))
        metrics.leases_held.labels(lease.table).inc()

    def _make_pipeline(self, lease: Lease, on_failure: Callable[[], None]) -> ShardPipeline:
        """One pipeline per consumed shard: the routes' key schedulers and the progress tracker."""
        assert self.router is not None and self.services is not None
        info = self.streams.get(lease.stream_arn)
        pipeline: ShardPipeline

        def delivery_for(route: Route) -> RouteDelivery:
            return RouteDelivery(
                route, self.services, self._dead_letters.get(route.name),  # type: ignore[arg-type]
                on_finished=pipeline.on_finished, on_failure=on_failure, sleep=pipeline.backoff_sleep,
            )

        pipeline = ShardPipeline(
            routes_for=self.router.routes_for,
            delivery_for=delivery_for,
            tracker=ProgressTracker(),
            max_in_flight=self.config.processing.max_in_flight_records,
            hash_key=info.hash_key if info else None,
            stream_label=lease.table,
            call_slots=self._call_slots,
        )
        return pipeline

    def _on_lost(self, lease: Lease) -> None:
        running = self._consumers.get(lease.key)
        if running is not None and not running.task.done():
            # Fenced: stop at once; its checkpoint write would fail anyway.
            running.consumer.state = ConsumerState.LEASE_LOST
            running.task.cancel()

    def _on_consumer_done(self, key: tuple[str, str], task: asyncio.Task[ConsumerState]) -> None:
        running = self._consumers.pop(key, None)
        if running is None:
            return
        lease = running.consumer.lease
        metrics.leases_held.labels(lease.table).dec()
        assert self.coordinator is not None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            state = task.result()
            if state in (ConsumerState.SHARD_END, ConsumerState.LEASE_LOST):
                self.coordinator.forget(lease)
            return
        if isinstance(exc, TrimmedDataError):
            # Policy "stop_shard": keep the lease so nobody else reads past the gap.
            self._log.error("hold stopped shard", shard=lease.shard_id, error=str(exc))
            self._stopped_shards.add(f"{lease.table}:{lease.shard_id}")
            return
        metrics.loop_crashes.labels("consumer").inc()
        self._log.error("restart crashed consumer", shard=lease.shard_id, error=repr(exc), exc_info=exc)
        if self._stopping:
            return
        checkpoint = running.consumer._checkpointer.checkpointed or lease.checkpoint
        asyncio.get_running_loop().call_later(
            2.0, self._restart_consumer, lease.key, checkpoint
        )

    def _restart_consumer(self, key: tuple[str, str], checkpoint: str | None) -> None:
        assert self.coordinator is not None
        lease = self.coordinator.held.get(key)
        if lease is not None and not self._stopping:
            from dataclasses import replace

            self._on_acquired(replace(lease, checkpoint=checkpoint))

    # -- stop --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Safe from a signal handler: schedules the stop, does not wait for it."""
        if not self._stop.is_set():
            self._log.info("stop requested")
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        """Graceful stop; idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._stop.set()
        started = time.monotonic()
        deadline = started + self.config.worker.shutdown_timeout_seconds
        if self.coordinator is not None:
            self.coordinator.taking = False
        for running in self._consumers.values():
            running.stop.set()
        tasks = [r.task for r in self._consumers.values()]
        # Leave a slice of the budget for releasing leases and closing clients.
        budget = max(0.5, (deadline - time.monotonic()) * 0.8)
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=budget)
            for task in pending:
                task.cancel()
            if pending:
                self._log.warning("cancel consumers past the shutdown budget", count=len(pending))
                await asyncio.wait(pending, timeout=max(0.1, deadline - time.monotonic()))
        for loop_task in self._loops:
            loop_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self.coordinator is not None:
            held = list(self.coordinator.held.values())
            await asyncio.gather(*(asyncio.shield(self.coordinator.release(lease)) for lease in held))
            await self.coordinator.leave()
        if self.publisher is not None:
            await self.publisher.close()
        for destination in self._dead_letters.values():
            if destination is not None:
                await destination.close()
        if self.health is not None:
            await self.health.close()
        if self.clients is not None:
            await self.clients.close()
        metrics.up.set(0)
        self._log.info("stop worker", seconds=round(time.monotonic() - started, 3))

    async def run(self) -> None:
        """Start, run until a stop is requested, stop gracefully."""
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.stop()
