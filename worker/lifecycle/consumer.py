"""ShardConsumer: the life of one leased shard.

States and the transitions allowed between them::

    INITIALIZING -> WAITING_ON_PARENTS -> PROCESSING -> SHARD_END
          |                 |                 |
          +-----------------+-----------------+--> LEASE_LOST   (a fenced write failed)
          +-----------------+-----------------+--> SHUT_DOWN    (stop asked, progress saved)

* WAITING_ON_PARENTS: a child shard starts only after every parent's lease says
  ``SHARD_END`` (a parent without a lease row is done: see docs/leases.md), so records of
  one key are handled in stream order across splits.
* PROCESSING: pages are read in order and fed to the :class:`ShardPipeline` (a key
  scheduler per route: one key in order, other keys concurrently) that the processing
  engine gives this shard. The consumer owns the
  shard's :class:`ShardProgress`: the pipeline and its deliveries report finished records
  and failing calls to it, and the checkpoint loop writes the end of the finished prefix
  every ``processing.checkpoint_interval_seconds``, and at once when a record starts
  failing, so a restart does not redo what was finished before it.
* LEASE_LOST: also entered from outside, by :meth:`ShardConsumer.lose`, when the lease
  coordinator sees the lease taken (the supervisor then cancels the consumer's task).
* SHARD_END: the lease records ``SHARD_END`` and the child shard ids, and is given up;
  the supervisor then creates the children's leases and takes them at once.

The config's shard hooks (worker/lifecycle/hooks.py) run on this consumer's task:
``on_shard_start`` before the first record is fed, ``on_shard_end`` after ``SHARD_END``
was checkpointed. ``on_lease_lost`` is run by the supervisor, which sees every way a
lease is lost (this consumer's fenced write, or the coordinator's notice).
"""

from __future__ import annotations

import asyncio
import enum
from datetime import datetime
from typing import Awaitable, Protocol, TypeVar

import structlog
from botocore.exceptions import ClientError

from worker.aws_errors import error_code
from worker.checkpoint.checkpointer import Checkpointer
from worker.checkpoint.ranges import SeqRange, records_in
from worker.config import Config, StreamSettings
from worker.errors import LeaseLostError, ShardGoneError, TrimmedDataError
from worker.leases.model import Lease
from worker.leases.table import LeaseTable
from worker.lifecycle.hooks import LifecycleHooks
from worker.observability import metrics
from worker.processing.pipeline import ShardPipeline
from worker.processing.progress import ShardProgress
from worker.records import StreamRecord
from worker.retrieval.idle_budget import IdlePollBudget
from worker.retrieval.reader import TRIM_HORIZON, ShardReader, StartPosition
from worker.retrieval.trimmed import TrimmedDataPolicy
from worker.retry import call_aws
from worker.shards.discovery import describe_shards
from worker.supervision import sleep_until_stopped

log = structlog.get_logger(__name__)
T = TypeVar("T")


class ConsumerState(enum.Enum):
    INITIALIZING = "initializing"
    WAITING_ON_PARENTS = "waiting_on_parents"
    PROCESSING = "processing"
    SHARD_END = "shard_end"
    LEASE_LOST = "lease_lost"
    SHUT_DOWN = "shut_down"


_ALLOWED: dict[ConsumerState, frozenset[ConsumerState]] = {
    ConsumerState.INITIALIZING: frozenset(
        {ConsumerState.WAITING_ON_PARENTS, ConsumerState.LEASE_LOST, ConsumerState.SHUT_DOWN}
    ),
    ConsumerState.WAITING_ON_PARENTS: frozenset(
        {ConsumerState.PROCESSING, ConsumerState.LEASE_LOST, ConsumerState.SHUT_DOWN}
    ),
    ConsumerState.PROCESSING: frozenset(
        {ConsumerState.SHARD_END, ConsumerState.LEASE_LOST, ConsumerState.SHUT_DOWN}
    ),
    ConsumerState.SHARD_END: frozenset(),
    ConsumerState.LEASE_LOST: frozenset(),
    ConsumerState.SHUT_DOWN: frozenset(),
}


class ShardLineage(Protocol):
    """What the consumer needs to know of the stream's shard graph (the stream catalog)."""

    async def children_of(self, stream_arn: str, shard_id: str) -> list[str]: ...

    async def lease_children(self, parent: Lease, children: list[str]) -> list[Lease]: ...


class PipelineSource(Protocol):
    """Gives a shard its pipeline, reporting to the shard's progress (the processing engine)."""

    def pipeline_for(self, lease: Lease, progress: ShardProgress) -> ShardPipeline: ...


class ShardConsumer:
    def __init__(
        self,
        lease: Lease,
        *,
        streams_client: object,
        lease_table: LeaseTable,
        pipelines: PipelineSource,
        lineage: ShardLineage,
        config: Config,
        stream: StreamSettings,
        idle_budget: IdlePollBudget | None = None,
        hooks: LifecycleHooks | None = None,
    ) -> None:
        self.lease = lease
        self._hooks = hooks
        # Why the lease was lost (``taken``, ``expired``, ``fenced``), for on_lease_lost.
        self.lost_reason = ""
        self._idle_budget = idle_budget
        self.state = ConsumerState.INITIALIZING
        self._streams = streams_client
        self._leases = lease_table
        self._pipelines = pipelines
        self._lineage = lineage
        self._config = config
        self._stream = stream
        self._checkpointer = Checkpointer(lease_table, lease, lease.table)
        # Records the previous owner finished past its checkpoint are skipped, not redone.
        self.progress = ShardProgress(lease.finished_ranges if config.processing.max_finished_ranges else ())
        self.reader: ShardReader | None = None
        self.children: list[str] = []  # set at SHARD_END: the supervisor starts them at once
        self._log = log.bind(stream=lease.table, shard=lease.shard_id)

    def _transition(self, new: ConsumerState) -> None:
        if new not in _ALLOWED[self.state]:
            raise RuntimeError(f"illegal consumer transition {self.state.value} -> {new.value}")
        self._log.debug("change consumer state", old=self.state.value, new=new.value)
        self.state = new

    def _start_position(self) -> StartPosition:
        checkpoint = self.lease.checkpoint
        if checkpoint in ("TRIM_HORIZON", "LATEST"):  # set by reset-checkpoint
            return StartPosition(checkpoint)
        if checkpoint and not self.lease.finished:
            return StartPosition.after(checkpoint)
        if self.lease.parent_shard_ids:
            # A child continues where its parents ended: from its own beginning.
            return TRIM_HORIZON
        if self._stream.starting_position == "AT_TIMESTAMP":
            return TRIM_HORIZON  # emulated: records older than the timestamp are skipped
        return StartPosition(self._stream.starting_position)

    def _skip_before(self) -> datetime | None:
        """AT_TIMESTAMP applies only to a shard that has never been checkpointed."""
        if self.lease.checkpoint or self._stream.starting_position != "AT_TIMESTAMP":
            return None
        return self._stream.starting_timestamp

    async def run(self, stop: asyncio.Event) -> ConsumerState:
        """Consume until shard end, lease loss or ``stop``; always leaves a final state."""
        try:
            self._transition(ConsumerState.WAITING_ON_PARENTS)
            if not await self._wait_for_parents(stop):
                await self._save_progress()
                self._transition(ConsumerState.SHUT_DOWN)
                return self.state
            self._transition(ConsumerState.PROCESSING)
            await self._process(stop)
        except LeaseLostError:
            self._on_lease_lost()
        except asyncio.CancelledError:
            # Cut off (shutdown timeout or self-fencing): save the finished prefix, shielded
            # so that the write itself is not cut in half.
            if self.state not in (ConsumerState.LEASE_LOST, ConsumerState.SHARD_END):
                try:
                    await asyncio.shield(self._save_progress())
                except LeaseLostError:
                    self._on_lease_lost()
            raise
        return self.state

    @property
    def checkpointed(self) -> str | None:
        """The last sequence number this consumer wrote (or the lease's at the start)."""
        return self._checkpointer.checkpointed

    @property
    def finished_ranges(self) -> tuple[SeqRange, ...]:
        """The finished ranges past ``checkpointed`` as last written (or the lease's)."""
        return self._checkpointer.finished_ranges

    def lose(self, reason: str = "taken") -> None:
        """The lease was taken by another worker (fenced): the caller cancels the run."""
        if self.state not in (ConsumerState.LEASE_LOST, ConsumerState.SHARD_END, ConsumerState.SHUT_DOWN):
            self.lost_reason = reason
            self._transition(ConsumerState.LEASE_LOST)

    def _on_lease_lost(self) -> None:
        metrics.lease_events.labels("lost").inc()
        self._log.warning("stop shard on lost lease", checkpoint=self._checkpointer.checkpointed)
        self.lose("fenced")

    async def _parent_done(self, parent_id: str) -> bool:
        parent = await call_aws("GetItem", self._leases.get_lease, self.lease.stream_arn, parent_id)
        # No lease means done: discovery creates a parent's lease before its children's, and
        # deletes it only after it finished and its children progressed, or it aged out.
        return parent is None or parent.finished

    async def _wait_for_parents(self, stop: asyncio.Event) -> bool:
        if self.lease.checkpoint:
            return not stop.is_set()  # it made progress before, so its parents were done
        waiting = list(self.lease.parent_shard_ids)
        while waiting:
            waiting = [p for p in waiting if not await self._parent_done(p)]
            if not waiting:
                break
            self._log.debug("wait on parent shards", parents=waiting)
            if await sleep_until_stopped(stop, self._config.reader.parent_poll_seconds):
                return False
        return not stop.is_set()

    async def _save_progress(self) -> None:
        limit = self._config.processing.max_finished_ranges
        ahead = self.progress.finished_ahead(limit) if limit else ()
        await self._checkpointer.checkpoint(self.progress.finished_up_to, ahead)

    async def _checkpoint_loop(self) -> None:
        """Write the finished prefix at most every ``checkpoint_interval_seconds``, and only
        after progress: an idle shard's loop sleeps on an event and costs nothing."""
        interval = self._config.processing.checkpoint_interval_seconds
        moved, urgent = self.progress.moved, self.progress.urgent
        while True:
            await moved.wait()
            moved.clear()
            if not urgent.is_set():
                try:  # gather more progress into one write, unless asked to write now
                    await asyncio.wait_for(urgent.wait(), timeout=interval)
                except TimeoutError:
                    pass
            urgent.clear()
            # Throttling, 5xx and resets are retried here: they must not end the loop. Any
            # other error (LeaseLostError: fenced; AccessDenied) ends it, and _wait raises it
            # in the consumer, which stops the shard or fails like a processing error.
            await call_aws("UpdateItem", self._save_progress)

    async def _process(self, stop: asyncio.Event) -> None:
        self.reader = reader = ShardReader(
            self._streams,
            stream_arn=self.lease.stream_arn,
            shard_id=self.lease.shard_id,
            stream_label=self.lease.table,
            start=self._start_position(),
            config=self._config.reader,
            budget=self._idle_budget,
        )
        self._log.info(
            "start shard", position=str(reader.position),
            finished_ahead=records_in(self.lease.finished_ranges),
        )
        if self._hooks is not None and self._hooks.has("on_shard_start"):
            await self._hooks.shard_event(
                "on_shard_start", self._hooks.shard_info(self.lease, "started", self._checkpointer.checkpointed))
        # Made after the hook (which may be cancelled) and closed in the finally below: an
        # open pipeline stays in the engine's load gauges.
        pipeline = self._pipelines.pipeline_for(self.lease, self.progress)
        checkpointing = asyncio.create_task(self._checkpoint_loop(), name=f"checkpoint:{self.lease.shard_id}")
        aged_out = False
        try:
            try:
                shard_end = await self._feed(reader, pipeline, stop, checkpointing)
            except ShardGoneError:
                if not await self._aged_out():
                    raise
                shard_end = aged_out = True  # nothing left to read: finish, so that the children start
            await self._wait(pipeline.drain(), checkpointing)
        finally:
            checkpointing.cancel()
            try:
                await asyncio.gather(checkpointing, return_exceptions=True)
            finally:
                await pipeline.close()  # even when cancelled again meanwhile
        await self._save_progress()
        if shard_end:
            children = await self._lineage.children_of(self.lease.stream_arn, self.lease.shard_id)
            await self._checkpointer.finish(children)
            self.children = children
            metrics.lease_events.labels("finished").inc()
            self._log.info("finish shard", children=children)
            self._transition(ConsumerState.SHARD_END)
            if self._hooks is not None and self._hooks.has("on_shard_end"):
                info = self._hooks.shard_info(self.lease, "aged_out" if aged_out else "shard_end",
                                              self._checkpointer.checkpointed, tuple(children))
                await self._hooks.shard_event("on_shard_end", info)
        else:
            self._transition(ConsumerState.SHUT_DOWN)

    async def _aged_out(self) -> bool:
        """After ResourceNotFoundException: True if the stream is still there but no longer
        lists this shard. It was closed and every record in it is past the retention window:
        trimmed data, all of it. Restarting the consumer would fail the same way forever, and
        the children would wait forever on this unfinished lease; so by the trimmed-data
        policy the shard ends here (its children start) or is held stopped."""
        try:
            graph = await describe_shards(self._streams, self.lease.stream_arn)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return False  # the whole stream is gone
            raise
        if self.lease.shard_id in graph:
            return False
        position = str(self.reader.position) if self.reader is not None else None
        policy = TrimmedDataPolicy.from_config(self._config.reader, self.lease.table, self.lease.shard_id)
        policy.records_lost(self._log, position, "shard aged out of the stream (past retention)")
        self._log.error("end shard that aged out of the stream after trimmed data", position=position)
        return True

    async def _wait(self, work: Awaitable[T], checkpointing: asyncio.Task[None]) -> T:
        """Await ``work``; if the checkpoint loop dies first (lease lost, a write refused),
        cancel ``work`` and raise the loop's error, as if ``work`` itself had failed."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, checkpointing}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                checkpointing.result()  # raises LeaseLostError or the write's error
                raise RuntimeError("checkpoint loop ended unexpectedly")
        finally:
            if not task.done():  # also when cancelled: leave no reader polling for a dead consumer
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return task.result()

    async def _feed(self, reader: ShardReader, pipeline: ShardPipeline, stop: asyncio.Event,
                    checkpointing: asyncio.Task[None]) -> bool:
        """Read pages into the pipeline until shard end (True) or stop (False)."""
        progress = self.progress
        skip_before = self._skip_before()
        table, stream_arn, shard_id = self.lease.table, self.lease.stream_arn, self.lease.shard_id
        while not stop.is_set():
            await self._wait(pipeline.wait_for_capacity(), checkpointing)
            # An idle shard spends its time in next_page: raced with the checkpoint loop so
            # that a write failing for good stops the shard now, not when records arrive.
            page = await self._wait(reader.next_page(stop), checkpointing)
            if page is None:
                return False
            if page.records:
                metrics.batch_size.labels(table).observe(len(page.records))
            inherited = progress.inherits_finished  # checked per page, not per record: usually False
            for raw in page.records:
                record = StreamRecord(raw, table=table, stream_arn=stream_arn, shard_id=shard_id)
                if inherited and progress.already_finished(record):
                    # Finished by a previous owner past its checkpoint: acknowledged, not
                    # redone; the prefix moves over it like over any finished record.
                    pipeline.skip(record)
                    continue
                if skip_before is not None:
                    # Skip only what was surely created before the mark: a coarse timestamp
                    # (whole minutes on DynamoDB Local) keeps the record.
                    created = record.latest_creation_epoch
                    if created is not None and created < skip_before.timestamp():
                        pipeline.skip(record)
                        continue
                    skip_before = None  # stream order: everything after is newer
                pipeline.submit(record)
            if checkpointing.done():
                checkpointing.result()
            if page.shard_end:
                return True
        return False
