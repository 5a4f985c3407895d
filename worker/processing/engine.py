"""ProcessingEngine: built once per worker, gives each leased shard its pipeline.

It holds what every shard's processing shares: the router (which routes a record
matches), the delivery services (publisher, tables, config, observers) and each route's
dead-letter destination. A consumer asks it for a pipeline and passes the shard's
:class:`ShardProgress`, which the pipeline and every route delivery of that shard report to.
"""

from __future__ import annotations

from typing import Callable, Mapping

from worker.deadletter import DeadLetterDestination
from worker.leases.model import Lease
from worker.processing.delivery import DeliveryServices, RouteDelivery
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
    ) -> None:
        """``dead_letters`` maps a route name to its destination (None: retried until it
        succeeds); ``hash_key_of`` gives a stream ARN's partition key attribute."""
        self.router = router
        self.services = services
        self._dead_letters = dict(dead_letters)
        self._max_in_flight = max_in_flight
        self._hash_key_of = hash_key_of

    def pipeline_for(self, lease: Lease, progress: ShardProgress) -> ShardPipeline:
        """A new pipeline for one consumed shard; it and its deliveries report to ``progress``."""

        def delivery_for(route: Route) -> RouteDelivery:
            return RouteDelivery(route, self.services, self._dead_letters.get(route.name), progress=progress)

        return ShardPipeline(
            routes_for=self.router.routes_for,
            delivery_for=delivery_for,
            progress=progress,
            max_in_flight=self._max_in_flight,
            hash_key=self._hash_key_of(lease.stream_arn),
            stream_label=lease.table,
        )

    async def close(self) -> None:
        """Close every dead-letter destination (the publisher belongs to the runtime)."""
        for destination in self._dead_letters.values():
            if destination is not None:
                await destination.close()
