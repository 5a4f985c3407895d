"""``route_harness``: one route of a real config, run in-process against moto's mock.

Records go through the real router (table, events, ``when`` conditions, filter patterns),
the real delivery (retries, bisection, partial batch failures, parking) and the route's
own handler. What differs from a running worker, and why:

* AWS is moto's in-process mock: every table of the config exists, empty, under its AWS
  name; ``await h.table(name)`` gives the same table the handler gets, to seed and inspect;
  clients a handler makes itself (an SQS queue of its own) reach the same mock;
* the publisher records events in ``h.published`` instead of sending them;
* the route's dead-letter destination, if the config has one, is a list (``h.dead_letters``)
  whatever its type; a route without one retries as the worker would, but the harness
  gives up after ``retry_limit`` back-offs a record and raises :class:`HarnessStuck`;
* back-off sleeps do not wait (the delays asked for are kept in ``h.backoffs``);
* the config's ``hooks.on_start`` runs on entry and ``hooks.on_stop`` on exit, as in the
  worker, so handlers find ``ctx.resources`` (``h.resources``); the shard hooks do not
  run: the harness has no shards or leases.

All wiring of the engine is in this module, so that pointing the kit at a new engine
means changing this file only.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from worker.aws import AwsClients
from worker.config import Config, load_config
from worker.deadletter import DeadLetter
from worker.lifecycle.hooks import LifecycleHooks
from worker.local.tables import create_application_table
from worker.processing.context import HandlerContext, Resources, Table
from worker.processing.delivery import DeliveryServices, RouteDelivery
from worker.processing.progress import ShardProgress
from worker.processing.router import Route, Router
from worker.processing.tables import Tables
from worker.publishing.events import Event
from worker.records import EventName, StreamRecord
from worker.testing import aws_mock
from worker.testing.memory import MemoryDeadLetters, MemoryPublisher
from worker.testing.records import make_record


class Outcome(str, enum.Enum):
    """What became of one record given to :meth:`RouteHarness.deliver`."""

    HANDLED = "handled"  # the handler succeeded with it
    PARKED = "parked"  # written to the dead-letter destination (see ``h.dead_letters``)
    FILTERED = "filtered"  # the route does not take it (table, events, conditions, filters)


class HarnessStuck(RuntimeError):
    """A record kept failing on a route without a dead-letter destination: the worker
    would retry it forever (it never drops a record), so the harness stops instead."""


class _Recorder:
    """Told by the delivery about every outcome and back-off of the harness's route."""

    def __init__(self, route_name: str, retry_limit: int) -> None:
        self.route_name = route_name
        self.retry_limit = retry_limit
        self.outcomes: dict[int, Outcome] = {}
        self.backoffs: list[float] = []
        self.budget = 0

    def observe(self, record: StreamRecord, route: str, outcome: str, started: float, ended: float) -> None:
        if outcome == "ok":
            self.outcomes[id(record)] = Outcome.HANDLED
        elif outcome == "dead_lettered":
            self.outcomes[id(record)] = Outcome.PARKED

    async def sleep(self, delay: float) -> None:
        self.backoffs.append(delay)
        self.budget -= 1
        if self.budget < 0:
            raise HarnessStuck(
                f"route {self.route_name!r}: records still failing after {self.retry_limit} retries each; "
                "without a dead-letter destination (or with unbounded retries) the worker would retry "
                "them forever. Give the route a dead_letter and retry.max_attempts, or fix the handler."
            )
        await asyncio.sleep(0)  # let other tasks run, as a real back-off would


@dataclass(frozen=True)
class RouteHarness:
    """One route, wired to the real delivery. Made by :func:`route_harness`.

    ``published`` and ``dead_letters`` fill as records are delivered; ``backoffs`` lists the
    back-off delays the delivery asked for (none was waited for).
    """

    config: Config
    route: Route
    router: Router
    tables: Tables
    published: list[Event]
    dead_letters: list[DeadLetter]
    resources: Resources
    _delivery: RouteDelivery = field(repr=False)
    _progress: ShardProgress = field(repr=False)
    _recorder: _Recorder = field(repr=False)
    _hash_key: str = field(repr=False, default="")

    @property
    def backoffs(self) -> list[float]:
        return self._recorder.backoffs

    def _partition_key(self, record: StreamRecord) -> str:
        keys = record.raw.get("dynamodb", {}).get("Keys", {})
        return repr(keys.get(self._hash_key, keys))

    async def table(self, logical_name: str) -> Table:
        """The (mocked) table ``logical_name`` of the config, as the handler sees it."""
        table: Table = await self.tables.table(logical_name)
        return table

    def record(
        self,
        event_name: EventName | str,
        keys: Mapping[str, Any],
        new_image: Mapping[str, Any] | None = None,
        old_image: Mapping[str, Any] | None = None,
        **details: Any,
    ) -> StreamRecord:
        """:func:`~worker.testing.make_record` for this route's table."""
        details.setdefault("table", self.route.table)
        details.setdefault("region", self.config.aws.resolved_region())
        return make_record(event_name, keys, new_image, old_image, **details)

    def context(self, record: StreamRecord, attempt: int = 1) -> HandlerContext:
        """The context the route's handler would get for ``record`` (to call a handler, or
        a function it uses, directly)."""
        return self._delivery.invoker.context(record, attempt)

    async def deliver(self, records: list[StreamRecord]) -> list[Outcome]:
        """Run ``records`` through the route, as one shard's pipeline would hand them over
        (in order; batch routes get batches of up to ``batch_size``). Returns each record's
        outcome, in the order given."""
        routed = [record for record in records
                  if any(route is self.route for route in self.router.routes_for(record))]
        self._recorder.budget = self._recorder.retry_limit * max(len(routed), 1)
        size = self.route.batch_size if self.route.is_batch else len(routed) or 1
        for start in range(0, len(routed), size):
            part = routed[start:start + size]
            for record in part:  # as the pipeline does: the shard's progress owes each one route
                self._progress.add(record, 1)
            # Keyed as the worker's key scheduler keys them: a failed part of a batch holds
            # back only its own keys' later records.
            await self._delivery.deliver(part, self._partition_key)
        return [self._recorder.outcomes.pop(id(record), Outcome.FILTERED) for record in records]


@contextlib.asynccontextmanager
async def route_harness(
    config_path: str | Path,
    route_name: str,
    *,
    env: dict[str, str] | None = None,
    retry_limit: int = 100,
) -> AsyncIterator[RouteHarness]:
    """Load the config at ``config_path`` and run its route ``route_name`` in-process.

    ``env`` replaces the environment for ``${VAR}`` interpolation in the config.
    """
    loaded = load_config(config_path, env)
    names = [route.name for route in loaded.routes]
    if route_name not in names:
        raise ValueError(f"no route {route_name!r} in {config_path} (routes: {', '.join(names)})")
    region = loaded.aws.region or "us-east-1"
    aws = loaded.aws.model_copy(update={"region": region, "endpoint_url": None, "endpoints": {}})
    config = loaded.model_copy(update={"aws": aws})
    router = Router.from_config(config)
    hooks = LifecycleHooks.from_config(config, worker_id="route-harness")
    route = next(route for route in router.routes if route.name == route_name)
    with aws_mock.in_process_aws(region):
        clients = AwsClients(config.aws)
        try:
            ddb = await clients.client("dynamodb")
            for table in config.tables.values():
                await create_application_table(ddb, table.name, table.key, with_stream=False)
            table_names = {logical: table.name for logical, table in config.tables.items()}
            tables = Tables(clients, table_names)
            publisher = MemoryPublisher()
            letters = MemoryDeadLetters() if route.dead_letter is not None else None
            recorder = _Recorder(route.name, retry_limit)
            services = DeliveryServices(publisher=publisher, tables=tables, config=config,
                                        worker_id="route-harness", observers=[recorder.observe],
                                        resources=hooks.resources)
            progress = ShardProgress()
            delivery = RouteDelivery(route, services, letters, progress=progress, sleep=recorder.sleep)
            harness = RouteHarness(config=config, route=route, router=router, tables=tables,
                                   published=publisher.events,
                                   dead_letters=letters.letters if letters is not None else [],
                                   resources=hooks.resources, _hash_key=config.tables[route.table].key,
                                   _delivery=delivery, _progress=progress, _recorder=recorder)
            await hooks.start()
            try:
                yield harness
            finally:
                await hooks.stop(deadline=time.monotonic() + config.hooks.timeout_seconds)
        finally:
            await clients.close()
