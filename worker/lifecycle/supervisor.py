"""ShardSupervisor: one consumer per held lease, from acquisition to release.

It owns the worker's :class:`LeaseCoordinator` (heartbeats, taking, fencing) and reacts to
it: a lease taken starts a :class:`ShardConsumer`, a lease lost stops it through the
consumer's state machine. A consumer that crashed is restarted from its last checkpoint
with the same back-off as every background loop (worker/supervision.py), as long as the
lease is still held. A consumer stopped by the trimmed-data policy ``stop_shard`` is held
stopped: its lease is kept so nobody reads past the gap, and the worker is not ready.

At a shard's end the children start at once: their lease rows are created (the stream
catalog) and this worker, which just read their parent to its end, tries to take them
(the lease coordinator); the leader's periodic discovery remains the safety net.

On stop: :meth:`drain` lets every consumer finish and checkpoint within a budget, then
cancels the rest (which save their finished prefix); :meth:`release_all` hands every lease
back so other workers resume at once.

It runs the config's ``on_lease_lost`` hook (worker/lifecycle/hooks.py) when a consumer
ended with its lease lost, however that was noticed; the hook runs beside the other
consumers, bounded by ``hooks.timeout_seconds``, and the drain waits for it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, replace
from typing import Callable

import structlog

from worker.config import Config
from worker.errors import TrimmedDataError
from worker.leases.coordinator import LeaseCoordinator, LeaseKey
from worker.leases.model import Lease
from worker.leases.table import LeaseTable
from worker.lifecycle.consumer import ConsumerState, PipelineSource, ShardConsumer, ShardLineage
from worker.lifecycle.hooks import LifecycleHooks
from worker.observability import metrics
from worker.retrieval.idle_budget import IdlePollBudget
from worker.supervision import RestartBackoff

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Running:
    consumer: ShardConsumer
    task: asyncio.Task[ConsumerState]
    stop: asyncio.Event


class ShardSupervisor:
    def __init__(
        self,
        config: Config,
        *,
        worker_id: str,
        lease_table: LeaseTable,
        streams_client: object,
        pipelines: PipelineSource,
        lineage: ShardLineage,
        streams: Callable[[], dict[str, str]],
        hooks: LifecycleHooks | None = None,
        idle_budget: IdlePollBudget | None = None,
    ) -> None:
        """``streams`` answers the consumed streams (ARN -> logical table) for the taker;
        ``hooks`` are the config's lifecycle hooks (None: none); ``idle_budget`` is shared
        with whoever wakes readers (default: one of its own)."""
        self._hooks = hooks
        self._hook_runs: set[asyncio.Task[None]] = set()
        self._config = config
        self._lease_table = lease_table
        self._streams_client = streams_client
        self._pipelines = pipelines
        self._lineage = lineage
        self._idle_budget = idle_budget or IdlePollBudget(config.reader.idle_polls_per_second)
        self._running: dict[LeaseKey, _Running] = {}
        self._backoffs: dict[LeaseKey, RestartBackoff] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        self._child_starts: set[asyncio.Task[None]] = set()
        self._held_stopped: set[str] = set()  # "table:shard" held stopped by the trimmed-data policy
        self._stopping = False
        self._log = log.bind(worker=worker_id)
        self.leases = LeaseCoordinator(
            lease_table, worker_id, config.leases,
            streams=streams, on_acquired=self._acquire, on_lost=self._lose,
        )

    @property
    def holding_stopped_shards(self) -> bool:
        return bool(self._held_stopped)

    def consumers(self) -> list[ShardConsumer]:
        return [running.consumer for running in self._running.values()]

    def seconds_behind_tip(self) -> dict[str, float]:
        """Per logical table, the longest time a processing shard has not reached the tip."""
        now = time.monotonic()
        behind: dict[str, float] = {}
        for consumer in self.consumers():
            reader = consumer.reader
            if reader is not None and consumer.state is ConsumerState.PROCESSING:
                table = consumer.lease.table
                behind[table] = max(behind.get(table, 0.0), now - reader.last_tip_at)
        return behind

    # -- the coordinator's notices ---------------------------------------------------------

    def _acquire(self, lease: Lease) -> None:
        # Called by the taker, synchronously, right after its conditional write took the
        # lease and before it awaits anything else: the consumer exists (and is in the map)
        # before any later notice about this lease (lost, fenced) can run, and a stop that
        # began since cannot be missed (checked first).
        if self._stopping or lease.key in self._running:
            return
        consumer = ShardConsumer(
            lease,
            streams_client=self._streams_client,
            lease_table=self._lease_table,
            pipelines=self._pipelines,
            lineage=self._lineage,
            config=self._config,
            stream=self._config.tables[lease.table].stream,
            idle_budget=self._idle_budget,
            hooks=self._hooks,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop), name=f"consumer:{lease.table}:{lease.shard_id}")
        self._running[lease.key] = _Running(consumer, task, stop)
        self._backoffs.setdefault(lease.key, RestartBackoff()).started()
        task.add_done_callback(functools.partial(self._on_consumer_done, lease.key))
        metrics.leases_held.labels(lease.table).inc()

    def _lose(self, lease: Lease) -> None:
        running = self._running.get(lease.key)
        if running is not None and not running.task.done():
            # Fenced: stop at once; its checkpoint write would fail anyway. The state changes
            # first, so the cancelled run does not try to save its progress.
            running.consumer.lose("taken" if self.leases.renewing else "expired")
            running.task.cancel()

    # -- a consumer ended ------------------------------------------------------------------

    def _on_consumer_done(self, key: LeaseKey, task: asyncio.Task[ConsumerState]) -> None:
        running = self._running.pop(key, None)
        if running is None:
            return
        lease = running.consumer.lease
        metrics.leases_held.labels(lease.table).dec()
        if running.consumer.state is ConsumerState.LEASE_LOST:
            self._run_lease_lost_hook(running.consumer)
        if task.cancelled():
            if running.consumer.state is ConsumerState.SHARD_END:
                self.leases.forget(lease)  # finished, then cut off in its on_shard_end hook
            return
        exc = task.exception()
        if exc is None:
            if task.result() in (ConsumerState.SHARD_END, ConsumerState.LEASE_LOST):
                self.leases.forget(lease)
                self._backoffs.pop(key, None)
            if task.result() is ConsumerState.SHARD_END and running.consumer.children and not self._stopping:
                start = asyncio.create_task(self._start_children(lease, running.consumer.children),
                                            name=f"children:{lease.shard_id}")
                self._child_starts.add(start)
                start.add_done_callback(self._child_starts.discard)
            return
        if isinstance(exc, TrimmedDataError):
            # Policy "stop_shard": keep the lease so nobody else reads past the gap.
            self._log.error("hold stopped shard", shard=lease.shard_id, error=str(exc))
            self._held_stopped.add(f"{lease.table}:{lease.shard_id}")
            return
        metrics.loop_crashes.labels("consumer").inc()
        delay = self._backoffs.setdefault(key, RestartBackoff()).after_crash()
        self._log.error("restart crashed consumer", shard=lease.shard_id, error=repr(exc), delay=delay, exc_info=exc)
        if self._stopping:
            return
        checkpoint = running.consumer.checkpointed or lease.checkpoint
        restart = asyncio.create_task(self._restart(key, checkpoint, delay), name=f"restart:{lease.shard_id}")
        self._restarts.add(restart)
        restart.add_done_callback(self._restarts.discard)

    def _run_lease_lost_hook(self, consumer: ShardConsumer) -> None:
        hooks = self._hooks
        if hooks is None or not hooks.has("on_lease_lost"):
            return
        info = hooks.shard_info(consumer.lease, consumer.lost_reason or "taken", consumer.checkpointed)
        run = asyncio.create_task(hooks.shard_event("on_lease_lost", info), name=f"on_lease_lost:{info.shard_id}")
        self._hook_runs.add(run)
        run.add_done_callback(self._hook_runs.discard)

    async def _start_children(self, parent: Lease, children: list[str]) -> None:
        """Lease the finished shard's children and take them now. Best effort: on an error
        the leader's next discovery pass creates the rows, and any taker's pass takes them."""
        try:
            created = await self._lineage.lease_children(parent, children)
            taken = await self.leases.take_children(parent.stream_arn, parent.shard_id, children, created)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - discovery is the safety net
            self._log.warning("leave child shards to discovery", shard=parent.shard_id, children=children,
                              error=type(exc).__name__, detail=str(exc)[:200])
            self.leases.request_scan()
            return
        self._log.info("start child shards", shard=parent.shard_id, children=children,
                       created=[lease.shard_id for lease in created],
                       taken=[lease.shard_id for lease in taken])
        if len(taken) < len(children):
            self.leases.request_scan()  # the rest: the next pass, here or on another worker

    async def _restart(self, key: LeaseKey, checkpoint: str | None, delay: float) -> None:
        await asyncio.sleep(delay)
        lease = self.leases.held.get(key)
        if lease is not None and not self._stopping:
            self._acquire(replace(lease, checkpoint=checkpoint))

    # -- stop ------------------------------------------------------------------------------

    async def drain(self, deadline: float) -> None:
        """Stop taking leases; let every consumer finish its records and checkpoint, within
        80 % of the time left before ``deadline`` (the rest is for releasing leases and
        closing clients); cancel the consumers still running then."""
        self._stopping = True
        self.leases.taking = False
        for restart in list(self._restarts) + list(self._child_starts):
            restart.cancel()
        for running in self._running.values():
            running.stop.set()
        tasks = [running.task for running in self._running.values()]
        if not tasks:
            await self._wait_hook_runs(deadline)
            return
        budget = max(0.5, (deadline - time.monotonic()) * 0.8)
        _, pending = await asyncio.wait(tasks, timeout=budget)
        for task in pending:
            task.cancel()
        if pending:
            self._log.warning("cancel consumers past the shutdown budget", count=len(pending))
            await asyncio.wait(pending, timeout=max(0.1, deadline - time.monotonic()))
        await self._wait_hook_runs(deadline)

    async def _wait_hook_runs(self, deadline: float) -> None:
        """Let running on_lease_lost hooks finish (each is bounded by its own timeout too)."""
        runs = list(self._hook_runs)
        if runs:
            _, pending = await asyncio.wait(runs, timeout=max(0.1, (deadline - time.monotonic()) * 0.8))
            for run in pending:
                run.cancel()

    async def release_all(self) -> None:
        """Release every held lease (shielded: a release is not cut in half) and leave."""
        held = list(self.leases.held.values())
        await asyncio.gather(*(asyncio.shield(self.leases.release(lease)) for lease in held))
        await self.leases.leave()
