"""Replay: re-drive parked records through their routes, then acknowledge them.

A letter is acknowledged only after its route's handler succeeded (within ``attempts``
tries with back-off); a letter that fails again stays parked and is reported. Handlers are
idempotent, so replaying a letter whose effects already happened is harmless. Handlers
are called the way delivery calls them (:class:`HandlerInvoker`): same context, same
``timeout_seconds``, same reading of a batch handler's failure report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential_jitter

from worker.aws import AwsClients
from worker.config import Config, DeadLetterConfig
from worker.deadletter import DeadLetter, Parked, build_dead_letter_source
from worker.lifecycle.hooks import LifecycleHooks
from worker.processing.invocation import DeliveryServices, HandlerInvoker
from worker.processing.router import Route, Router
from worker.processing.tables import Tables
from worker.publishing.base import Publisher
from worker.publishing.factory import build_publisher

log = structlog.get_logger(__name__)


@dataclass
class ReplayReport:
    replayed: list[str] = field(default_factory=list)  # "route seq"
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # With dry_run: the letters that would be replayed, so their errors can be shown.
    previews: list[DeadLetter] = field(default_factory=list)


async def _run(invoker: HandlerInvoker, parked: Parked, attempts: int) -> None:
    record = parked.message.to_stream_record()
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts), wait=wait_exponential_jitter(multiplier=0.2, max=5, jitter=0.2),
        reraise=True,
    ):
        with attempt:
            number = attempt.retry_state.attempt_number  # ctx.attempt, as delivery counts calls
            if not invoker.route.is_batch:
                await invoker.handle(record, number)
            elif await invoker.handle_batch([record], number):
                raise RuntimeError("the batch handler reported the record as failed again")


def _sources(router: Router, route_filter: str | None) -> dict[DeadLetterConfig, list[Route]]:
    grouped: dict[DeadLetterConfig, list[Route]] = {}
    for route in router.routes:
        if route.dead_letter is not None and route_filter in (None, route.name):
            grouped.setdefault(route.dead_letter, []).append(route)
    return grouped


async def replay(
    config: Config, *, route_filter: str | None = None, limit: int = 100, dry_run: bool = False, attempts: int = 3
) -> ReplayReport:
    router = Router.from_config(config)
    # Replayed handlers get ctx.resources as in the worker: on_start before the first
    # call, on_stop at the end (a dry run calls no handler, so it runs neither).
    hooks = LifecycleHooks.from_config(config, worker_id="replay")
    if route_filter is not None and route_filter not in {r.name for r in router.routes}:
        raise ValueError(f"no route named {route_filter!r}")
    report = ReplayReport()
    clients = AwsClients(config.aws)
    publisher: Publisher | None = None
    try:
        names = {logical: table.name for logical, table in config.tables.items()}
        publisher = await build_publisher(config.publisher, clients, names)
        services = DeliveryServices(publisher=publisher, tables=Tables(clients, names), config=config,
                                    worker_id="replay", observers=[], resources=hooks.resources)
        if not dry_run:
            await hooks.start()
        invokers = {route.name: HandlerInvoker(route, services, log.bind(route=route.name, replay=True))
                    for route in router.routes}
        seen: set[str] = set()
        for destination, routes in _sources(router, route_filter).items():
            source = await build_dead_letter_source(destination, clients, names)
            wanted = {route.name for route in routes}
            for parked in await source.fetch(limit):
                letter = parked.message
                label = f"{letter.route} {letter.table} {letter.shard_id} {letter.sequence_number}"
                if letter.route not in wanted or letter.id in seen:
                    report.skipped.append(label)
                    continue
                seen.add(letter.id)
                if dry_run:
                    report.skipped.append(label)
                    report.previews.append(letter)
                    continue
                try:
                    await _run(invokers[letter.route], parked, attempts)
                except Exception as exc:  # noqa: BLE001 - reported; the letter stays parked
                    log.error("replay failed", letter=label, error=type(exc).__name__, detail=str(exc)[:300])
                    report.failed.append(label)
                    continue
                await source.acknowledge(parked)
                report.replayed.append(label)
    finally:
        await hooks.stop(time.monotonic() + config.hooks.timeout_seconds)  # only if it started
        if publisher is not None:
            await publisher.close()
        await clients.close()
    return report
