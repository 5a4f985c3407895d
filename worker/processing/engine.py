"""ProcessingEngine: built once per worker, gives each leased shard its pipeline.

It holds what every shard's processing shares: the router (which routes a record
matches), the delivery services (publisher, tables, config, observers) and each route's
dead-letter destination, and the process-wide bound on handler calls in flight
(:class:`CallSlots`, ``processing.max_concurrent_handler_calls``) that every shard's key
schedulers share. A consumer asks it for a pipeline and passes the shard's
:class:`ShardProgress`, which the pipeline and every route delivery of that shard report to.
"""

from __future__ import annotations

from typing import Callable, Iterator, Mapping

from worker.deadletter import DeadLetterDestination
from worker.leases.model import Lease
from worker.observability import metrics
from worker.observability.loop_metrics import GaugeSource, ScrapedGauge
from worker.processing.delivery import DeliveryServices, RouteDelivery
from worker.processing.key_scheduler import CallSlots, KeyScheduler, sleep_without_slots
from worker.processing.pipeline import ShardPipeline
from worker.processing.progress import ShardProgress
from worker.processing.router import Route, Router


class ProcessingEngine:
    def __init__(
        self,
        *,
        router: Router,
        services: DeliveryServices,
        dead_letters: Mapping[str, DeadLetterDestination | None],
        max_in_flight: int,
        hash_key_of: Callable[[str], str | None],
        max_concurrent_calls: int | None = None,
    ) -> None:
        """``dead_letters`` maps a route name to its destination (None: retried until it
        succeeds); ``hash_key_of`` gives a stream ARN's partition key attribute;
        ``max_concurrent_calls`` bounds handler calls in flight over every pipeline this
        engine builds (None: only each route's ``max_concurrency``)."""
        self.router = router
        self.services = services
        self._dead_letters = dict(dead_letters)
        self._max_in_flight = max_in_flight
        self._hash_key_of = hash_key_of
        # One for the process: 1,000 busy shards must not open 1,000 times max_concurrency calls.
        self.call_slots = None if max_concurrent_calls is None else CallSlots(max_concurrent_calls)
        # Open pipelines, whose load the scrape-time gauges read (until close()).
        self._pipelines: set[ShardPipeline] = set()
        self._gauges: tuple[tuple[ScrapedGauge, GaugeSource], ...] = (
            (metrics.handler_calls_in_flight, self._per_route(lambda scheduler: scheduler.calls_in_flight)),
            (metrics.handler_calls_in_backoff, self._per_route(lambda scheduler: scheduler.calls_in_backoff)),
            (metrics.oldest_failing_record, self._per_route(lambda scheduler: scheduler.oldest_failure_seconds)),
            (metrics.records_in_flight, self._records_in_flight),
        )
        for gauge, source in self._gauges:
            gauge.add_source(source)

    def pipeline_for(self, lease: Lease, progress: ShardProgress) -> ShardPipeline:
        """A new pipeline for one consumed shard; it and its deliveries report to ``progress``."""

        def delivery_for(route: Route) -> RouteDelivery:
            # A back-off gives the call's slots back: the failing key waits, the others go.
            return RouteDelivery(route, self.services, self._dead_letters.get(route.name), progress=progress,
                                 sleep=sleep_without_slots)

        pipeline = ShardPipeline(
            routes_for=self.router.routes_for,
            delivery_for=delivery_for,
            progress=progress,
            max_in_flight=self._max_in_flight,
            hash_key=self._hash_key_of(lease.stream_arn),
            stream_label=lease.table,
            call_slots=self.call_slots,
            on_close=self._pipelines.discard,
        )
        self._pipelines.add(pipeline)
        return pipeline

    # -- load, read when the registry is collected (on the loop: reads only, copies first) --

    def _per_route(self, read: Callable[[KeyScheduler], float]) -> GaugeSource:
        """A source giving ``read`` of every open key scheduler, by route."""

        def source() -> Iterator[tuple[tuple[str, ...], float]]:
            for route in self.router.routes:
                yield (route.name,), 0.0  # every configured route has a series, busy or not
            for pipeline in list(self._pipelines):
                for name, scheduler in pipeline.schedulers():
                    yield (name,), float(read(scheduler))

        return source

    def _records_in_flight(self) -> Iterator[tuple[tuple[str, ...], float]]:
        for table in {route.table for route in self.router.routes}:
            yield (table,), 0.0
        for pipeline in list(self._pipelines):
            yield (pipeline.stream_label,), float(pipeline.progress.in_flight)

    def stop_reporting(self) -> None:
        """Take this engine's load out of the metrics (idempotent)."""
        for gauge, source in self._gauges:
            gauge.remove_source(source)

    async def close(self) -> None:
        """Stop reporting load; close every dead-letter destination (the publisher belongs
        to the runtime)."""
        self.stop_reporting()
        for destination in self._dead_letters.values():
            if destination is not None:
                await destination.close()
