"""The worker's long-lived objects, built once by :func:`build_runtime`, then frozen.

Build order: clients -> lease table -> stream catalog (streams resolved and checked against
the routes) -> publisher and dead-letter destinations -> processing engine -> shard
supervisor (with its lease coordinator) -> first heartbeat -> first discovery -> the
config's ``hooks.on_start`` (its resources reach every handler as ``ctx.resources``).
Nothing is filled in later: a component that needs another gets it as a constructor
argument (the hooks' ``resources`` namespace is made first and filled by ``on_start``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from botocore.exceptions import ClientError

from worker.aws import AwsClients
from worker.aws_errors import error_code
from worker.config import Config
from worker.deadletter import build_dead_letters
from worker.errors import StartupError
from worker.leases.coordinator import LeaseCoordinator
from worker.leases.table import LeaseTable
from worker.lifecycle.hooks import LifecycleHooks
from worker.lifecycle.supervisor import ShardSupervisor
from worker.observability import tracing
from worker.processing.delivery import DeliveryServices, ProcessingObserver
from worker.processing.engine import ProcessingEngine
from worker.processing.router import Router
from worker.processing.tables import Tables
from worker.publishing.base import Publisher
from worker.publishing.factory import build_publisher
from worker.retrieval.fast_decode import install_fast_get_records
from worker.retrieval.idle_budget import IdlePollBudget
from worker.shards.catalog import StreamCatalog


@dataclass(frozen=True)
class Runtime:
    config: Config
    worker_id: str
    clients: AwsClients
    catalog: StreamCatalog
    publisher: Publisher
    engine: ProcessingEngine
    shards: ShardSupervisor
    hooks: LifecycleHooks

    @property
    def leases(self) -> LeaseCoordinator:
        return self.shards.leases

    async def close(self) -> None:
        """Close what was opened, in reverse (the leases are released by the supervisor)."""
        await self.publisher.close()
        await self.engine.close()
        await self.clients.close()


async def build_runtime(config: Config, *, worker_id: str, observers: list[ProcessingObserver]) -> Runtime:
    """Connect and set up within ``worker.startup_timeout_seconds``.

    Raises ConfigError/SetupError (exit 2) for config or tables that do not fit, and
    StartupError (exit 1) when AWS cannot be reached in time or refuses a call. Whatever
    was opened before a failure is closed again.
    """
    router = Router.from_config(config)  # handler import errors are config errors
    hooks = LifecycleHooks.from_config(config, worker_id=worker_id)  # and so are hook import errors
    clients = AwsClients(config.aws)
    timeout = config.worker.startup_timeout_seconds
    async with contextlib.AsyncExitStack() as opened:
        opened.push_async_callback(clients.close)
        try:
            async with asyncio.timeout(timeout):
                runtime = await _connect(config, worker_id, observers, router, hooks, clients, opened)
        except TimeoutError:
            raise StartupError(
                f"start-up did not finish within {timeout:g} s: the AWS endpoint "
                f"({clients.endpoint_url or 'the default for ' + clients.region}) is unreachable "
                "or throttling; see the 'retry aws call' warnings"
            ) from None
        except ClientError as exc:
            raise StartupError(
                f"AWS refused a start-up call: {error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"
                " (check the credentials and the IAM policy, deploy/iam/worker-policy.json)"
            ) from None
        await hooks.start()  # StartupError when it fails (exit 1); what was opened closes again
        opened.pop_all()  # built: from now on the runtime closes them
    return runtime


async def _connect(
    config: Config, worker_id: str, observers: list[ProcessingObserver], router: Router, hooks: LifecycleHooks,
    clients: AwsClients, opened: contextlib.AsyncExitStack,
) -> Runtime:
    dynamodb = await clients.client("dynamodb")
    streams_client = await clients.client("dynamodbstreams")
    if config.reader.fast_decode:
        install_fast_get_records(streams_client)
    lease_table = LeaseTable(dynamodb, await clients.dynamodb_resource(), config.leases.table)
    if config.leases.create_table:
        await lease_table.create_if_missing()
    catalog = await StreamCatalog.open(
        config, dynamodb=dynamodb, streams_client=streams_client, lease_table=lease_table,
        needs=router.tables_needing_images(),
    )
    names = {logical: table.name for logical, table in config.tables.items()}
    # One idle-poll budget for the process: the outbox publisher wakes the readers of its
    # table's stream through it when this worker consumes that stream too.
    idle_budget = IdlePollBudget(config.reader.idle_polls_per_second)
    wake = idle_budget.wake if config.publisher.table in config.consumed_tables else None
    publisher = tracing.traced_publisher(await build_publisher(config.publisher, clients, names, wake_readers=wake))
    opened.push_async_callback(publisher.close)
    dead_letters = {}
    for route in router.routes:
        destination = await build_dead_letters(route.dead_letter, clients, names)
        if destination is not None:
            opened.push_async_callback(destination.close)
        dead_letters[route.name] = destination
    services = DeliveryServices(
        publisher=publisher, tables=Tables(clients, names), config=config, worker_id=worker_id, observers=observers,
        resources=hooks.resources,
    )
    engine = ProcessingEngine(
        router=router, services=services, dead_letters=dead_letters,
        max_in_flight=config.processing.max_in_flight_records, hash_key_of=catalog.hash_key_of,
        max_concurrent_calls=config.processing.max_concurrent_handler_calls,
    )
    opened.callback(engine.stop_reporting)  # its load gauges, should start-up fail from here on
    shards = ShardSupervisor(
        config, worker_id=worker_id, lease_table=lease_table, streams_client=streams_client,
        pipelines=engine, lineage=catalog, streams=catalog.tables_by_arn, hooks=hooks, idle_budget=idle_budget,
    )
    # First heartbeat and discovery before any lease is taken.
    await shards.leases.heartbeat_once()
    await catalog.discover_for(shards.leases)
    return Runtime(
        config=config, worker_id=worker_id, clients=clients, catalog=catalog, publisher=publisher,
        engine=engine, shards=shards, hooks=hooks,
    )
