"""Lifecycle hooks named in the config's ``hooks:`` section (the Kinesis Client Library's
``initialize`` / ``shardEnded`` / ``leaseLost`` / ``shutdown``, in this project's shape).

Every hook is ``async def hook(info)`` and takes ONE info object, so that fields can be
added later without breaking anybody's hook:

* ``on_start(WorkerInfo)``: once, after the worker connected and before any shard is
  consumed. Build shared clients here: set them on ``info.resources`` (or return a mapping
  of name -> client); handlers reach them as ``ctx.resources.<name>``. A hook that raises
  or times out fails the start-up (exit 1); ``on_stop`` is not called then.
* ``on_stop(WorkerInfo)``: once, after every shard stopped and its lease was released,
  before the AWS clients close; bounded by what is left of ``worker.shutdown_timeout_seconds``.
  A failure is logged and counted, never fatal: the worker still exits 0.
* ``on_shard_start(ShardInfo)``: a leased shard starts (again) being processed, before
  its first record; ``info.checkpoint`` is where it resumes after.
* ``on_shard_end(ShardInfo)``: the shard was read to its end and ``SHARD_END`` was
  checkpointed (``info.child_shard_ids`` name the children that continue it).
* ``on_lease_lost(ShardInfo)``: the shard's lease was lost (``info.reason``: ``taken`` by
  another worker, ``expired`` because this worker's heartbeat lapsed, or ``fenced`` when
  a checkpoint write was refused). Nothing is checkpointed after it; the records past
  ``info.checkpoint`` are redelivered to the new owner.

A shard hook that raises or outlives ``hooks.timeout_seconds`` is logged with its
traceback and counted (``stream_worker_hook_failures_total``); the shard goes on. Shard
hooks run on the consumer's task (start, end) or beside it (lease lost): they are off the
per-record path.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

import structlog

from worker.errors import ConfigError, StartupError
from worker.observability import metrics
from worker.processing.context import Resources
from worker.processing.registry import HandlerImportError, load_hook
from worker.tracebacks import failure_site

if TYPE_CHECKING:
    from worker.config import Config
    from worker.leases.model import Lease

log = structlog.get_logger(__name__)

Hook = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    """What ``on_start`` and ``on_stop`` get: the worker, its config, its resources."""

    worker_id: str
    config: Config
    resources: Resources


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """What the shard hooks get.

    ``table`` is the logical table (config ``tables:``) whose stream holds the shard;
    ``checkpoint`` the last sequence number checkpointed (None: none yet; at shard end the
    last record's); ``reason`` says why the hook runs: ``started``, ``shard_end``,
    ``aged_out`` (ended because its records passed retention), ``taken``, ``expired`` or
    ``fenced``.
    """

    worker_id: str
    table: str
    stream_arn: str
    shard_id: str
    checkpoint: str | None
    reason: str
    parent_shard_ids: tuple[str, ...] = ()
    child_shard_ids: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)


def load_hooks(config: Config) -> dict[str, Hook]:
    """Resolve every hook the config names; all problems together, each under its key."""
    hooks: dict[str, Hook] = {}
    problems: list[tuple[str, str]] = []
    for name, import_string in config.hooks.named().items():
        try:
            hooks[name] = load_hook(import_string, config_dir=config.directory)
        except HandlerImportError as exc:
            problems.append((f"hooks.{name}", str(exc)))
    if problems:
        raise ConfigError(problems)
    return hooks


class LifecycleHooks:
    """Runs the configured hooks: bounded, logged, counted. Built once per worker."""

    def __init__(self, hooks: Mapping[str, Hook], *, config: Config, worker_id: str) -> None:
        self._hooks = dict(hooks)
        self._config = config
        self._timeout = config.hooks.timeout_seconds
        self.worker_id = worker_id
        self.resources = Resources()
        self._started = False
        self._log = log.bind(worker=worker_id)

    @classmethod
    def from_config(cls, config: Config, *, worker_id: str) -> LifecycleHooks:
        """Raises :class:`ConfigError` (exit 2) for hooks that do not import or fit."""
        return cls(load_hooks(config), config=config, worker_id=worker_id)

    def has(self, name: str) -> bool:
        return name in self._hooks

    def _worker_info(self) -> WorkerInfo:
        return WorkerInfo(worker_id=self.worker_id, config=self._config, resources=self.resources)

    # -- worker ------------------------------------------------------------------------

    async def start(self) -> None:
        """Run ``on_start``; raises :class:`StartupError` (exit 1) if it fails or times out."""
        hook = self._hooks.get("on_start")
        if hook is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    returned = await hook(self._worker_info())
            except TimeoutError:
                metrics.hook_failures.labels("on_start", "timeout").inc()
                raise StartupError(f"hooks.on_start did not finish within {self._timeout:g} s "
                                   "(hooks.timeout_seconds)") from None
            except Exception as exc:
                metrics.hook_failures.labels("on_start", "error").inc()
                self._log.error("fail hook", hook="on_start", at=failure_site(exc), exc_info=exc)
                raise StartupError(f"hooks.on_start failed: {type(exc).__name__}: {exc} "
                                   f"(at {failure_site(exc) or 'unknown'})") from exc
            if returned is not None:
                if not isinstance(returned, Mapping):
                    raise StartupError(
                        f"hooks.on_start returned {type(returned).__name__}: return None (after setting "
                        "attributes on info.resources) or a mapping of resource names to objects")
                self.resources.__dict__.update({str(key): value for key, value in returned.items()})
            self._log.info("run hook", hook="on_start", resources=sorted(self.resources.__dict__))
        self._started = True

    async def stop(self, deadline: float) -> None:
        """Run ``on_stop`` (once, and only after a successful start) until ``deadline``
        (a ``time.monotonic()`` value) or ``hooks.timeout_seconds``, whichever is first."""
        hook = self._hooks.get("on_stop")
        if not self._started:
            return
        self._started = False
        if hook is not None:
            budget = min(self._timeout, max(0.5, deadline - time.monotonic()))
            await self._run("on_stop", hook, self._worker_info(), budget)

    # -- shards ------------------------------------------------------------------------

    def shard_info(
        self, lease: Lease, reason: str, checkpoint: str | None, child_shard_ids: tuple[str, ...] = ()
    ) -> ShardInfo:
        return ShardInfo(
            worker_id=self.worker_id, table=lease.table, stream_arn=lease.stream_arn, shard_id=lease.shard_id,
            checkpoint=checkpoint, reason=reason, parent_shard_ids=tuple(lease.parent_shard_ids),
            child_shard_ids=child_shard_ids, resources=self.resources,
        )

    async def shard_event(self, name: str, info: ShardInfo) -> None:
        """Run the shard hook ``name`` (if configured) with ``info``; never raises (but
        lets a cancellation through)."""
        hook = self._hooks.get(name)
        if hook is not None:
            await self._run(name, hook, info, self._timeout)

    async def _run(self, name: str, hook: Hook, info: Any, timeout: float) -> None:
        bound = self._log.bind(hook=name)
        if isinstance(info, ShardInfo):
            bound = bound.bind(stream=info.table, shard=info.shard_id)
        try:
            async with asyncio.timeout(timeout):
                await hook(info)
        except TimeoutError:
            metrics.hook_failures.labels(name, "timeout").inc()
            bound.error("cancel hook past its timeout", timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a hook's failure is logged and counted, never fatal
            metrics.hook_failures.labels(name, "error").inc()
            bound.error("fail hook", error=type(exc).__name__, detail=str(exc)[:200], at=failure_site(exc),
                        exc_info=exc)
        else:
            bound.debug("run hook")


def no_hooks(config: Config, worker_id: str = "") -> LifecycleHooks:
    """Hooks that do nothing (for components built without a config's hooks: tests, tools)."""
    return LifecycleHooks({}, config=config, worker_id=worker_id)
