"""The worker process: build the runtime, start its loops, stop them in reverse order.

Start: :func:`build_runtime` (clients, lease table, streams, publisher, processing
engine, shard supervisor, first heartbeat and discovery, ``hooks.on_start``), then the loops: heartbeat ->
discovery -> taker -> lag gauges, then the health server.

Stop (SIGTERM/SIGINT, or ``request_stop``): stop taking leases, let every consumer finish
its current record and checkpoint (bounded by ``worker.shutdown_timeout_seconds``, after
which consumers are cancelled and save their finished prefix), stop the loops, release
every lease so others resume at once, remove the worker row, run ``hooks.on_stop``
(within what is left of the budget; a failure is logged), close clients.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Awaitable, Callable

import structlog

from worker.config import Config
from worker.gc_tuning import tune_garbage_collector
from worker.observability import metrics, tracing
from worker.observability.health import HealthServer
from worker.processing.delivery import ProcessingObserver
from worker.runtime import Runtime, build_runtime
from worker.supervision import sleep_until_stopped, supervise

log = structlog.get_logger(__name__)


class App:
    # A loop that crashed is restarted; it counts against readiness for this long after.
    CRASH_GRACE_SECONDS = 30.0
    # How often the lag gauges and readiness are refreshed.
    GAUGE_INTERVAL_SECONDS = 2.0

    def __init__(
        self,
        config: Config,
        *,
        observers: list[ProcessingObserver] | None = None,
        metrics_port: int | None = None,
        tune_gc: bool = False,
    ) -> None:
        self.config = config
        self.worker_id = config.worker.resolved_id()
        self._observers = list(observers or [])
        self._metrics_port = config.observability.metrics.port if metrics_port is None else metrics_port
        self._tune_gc = tune_gc  # the `run` process does; in-process tests do not (worker/gc_tuning.py)
        self._stop = asyncio.Event()
        self._stopping = False
        # Set by start(): the one thing an App holds before it has started is nothing.
        self._runtime: Runtime | None = None
        self._health: HealthServer | None = None
        self._tracing = False  # this worker started tracing (worker/observability/tracing.py)
        self._loops: list[asyncio.Task[None]] = []
        self._crashed_at: dict[str, float] = {}  # loop -> monotonic time of its last crash
        self._log = log.bind(worker=self.worker_id)

    # -- start -------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the runtime (see worker/runtime.py for the errors it raises), start the loops."""
        # Every log line of this worker (and the tasks it starts) names the worker.
        structlog.contextvars.bind_contextvars(worker_id=self.worker_id)
        self._tracing = tracing.start(self.config.observability.tracing, worker_id=self.worker_id)
        runtime = self._runtime = await build_runtime(self.config, worker_id=self.worker_id, observers=self._observers)
        self._spawn("heartbeat", runtime.leases.run_heartbeats)
        self._spawn("discovery", functools.partial(runtime.catalog.run_discovery, leases=runtime.leases))
        self._spawn("taker", runtime.leases.run_taker)
        self._spawn("gauges", functools.partial(self._run_gauges, runtime))
        if self._metrics_port:
            self._health = HealthServer(
                self.config.observability.metrics.host, self._metrics_port, alive=self.alive, ready=self.ready
            )
            await self._health.start()
        metrics.up.set(1)
        if self._tune_gc:
            tune_garbage_collector()
        self._log.info("start worker", streams=sorted(info.table for info in runtime.catalog.streams))

    def _spawn(self, name: str, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        loop = supervise(name, body, self._stop, log=self._log, on_crash=self._on_loop_crash)
        self._loops.append(asyncio.create_task(loop, name=name))

    def _on_loop_crash(self, name: str) -> None:
        self._crashed_at[name] = time.monotonic()

    # -- health --------------------------------------------------------------------------

    def alive(self) -> bool:
        """Liveness: the event loop answers (this runs on it). Crashed loops are restarted by
        the supervisor, so they do not make the process dead; they make it not ready."""
        return True

    def ready(self) -> bool:
        runtime = self._runtime
        now = time.monotonic()
        recent_crash = any(now - at < self.CRASH_GRACE_SECONDS for at in self._crashed_at.values())
        ok = (runtime is not None and not self._stopping and not recent_crash
              and not runtime.shards.holding_stopped_shards and runtime.leases.renewing)
        metrics.ready.set(1 if ok else 0)
        return ok

    async def _run_gauges(self, runtime: Runtime, stop: asyncio.Event) -> None:
        """Per stream, the longest time any held shard has not reached the tip: a lag signal
        that stays meaningful when ApproximateCreationDateTime is coarse."""
        while not stop.is_set():
            behind = {info.table: 0.0 for info in runtime.catalog.streams}
            behind.update(runtime.shards.seconds_behind_tip())
            for table, seconds in behind.items():
                metrics.seconds_since_tip.labels(table).set(seconds)
            self.ready()
            await sleep_until_stopped(stop, self.GAUGE_INTERVAL_SECONDS)

    # -- stop --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Safe from a signal handler: schedules the stop, does not wait for it."""
        if not self._stop.is_set():
            self._log.info("stop requested")
        self._stop.set()

    async def stop(self) -> None:
        """Graceful stop, in the reverse order of start; idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._stop.set()
        started = time.monotonic()
        deadline = started + self.config.worker.shutdown_timeout_seconds
        runtime = self._runtime
        if runtime is not None:
            # The consumers drain while the heartbeat loop still runs: a worker that stopped
            # renewing would see its leases expire (and be taken, or self-fence) while its
            # consumers are still finishing records and writing their last checkpoints.
            await runtime.shards.drain(deadline)
        for loop_task in self._loops:
            loop_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if runtime is not None:
            await runtime.shards.release_all()
            # After every handler call ended and before the clients close: on_stop closes
            # what on_start built, and nothing can use it any more.
            await runtime.hooks.stop(deadline)
        if self._health is not None:
            await self._health.close()
        if runtime is not None:
            await runtime.close()
        if self._tracing:
            self._tracing = False
            await tracing.stop()  # flushes the spans of the stop itself too
        metrics.up.set(0)
        self._log.info("stop worker", seconds=round(time.monotonic() - started, 3))

    async def run(self) -> None:
        """Start, run until a stop is requested, stop gracefully."""
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.stop()
