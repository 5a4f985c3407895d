"""StreamCatalog: the streams of the configured tables and their shard graphs.

* Opening it resolves every consumed table's stream (``DescribeTable``, or the configured
  stream ARN) and checks its view type against what the routes read; every table that does
  not fit is reported at once (:class:`SetupError`), not one per restart.
* :meth:`discover` describes each stream and keeps one lease row per shard (see
  shards/discovery.py); when a table's stream was re-enabled, it follows the new ARN.
* :meth:`run_discovery` repeats that on the leader only, so N workers cost what one does.
* :meth:`children_of` answers a finished shard's children for its lease row, and
  :meth:`lease_children` creates their lease rows at once (at shard end, on whichever worker
  finished the parent), so children do not wait for the next discovery pass.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import structlog

from worker.config import Config
from worker.errors import SetupError
from worker.leases.coordinator import LeaseCoordinator
from worker.leases.model import Lease
from worker.leases.table import LeaseTable
from worker.retry import call_aws
from worker.shards.discovery import (
    StreamInfo, create_missing_leases, describe_children, describe_shards, resolve_stream, sync_leases,
)
from worker.shards.lineage import Shard, ShardGraph
from worker.supervision import sleep_until_stopped

log = structlog.get_logger(__name__)


class StreamCatalog:
    def __init__(
        self,
        config: Config,
        *,
        dynamodb: Any,
        streams_client: Any,
        lease_table: LeaseTable,
        needs: dict[str, set[str]],
        streams: dict[str, StreamInfo],
    ) -> None:
        """Use :meth:`open`, which resolves ``streams`` (stream ARN -> info) first."""
        self._config = config
        self._dynamodb = dynamodb
        self._streams_client = streams_client
        self._lease_table = lease_table
        self._needs = needs  # logical table -> images the routes read ("new", "old")
        self._streams = streams
        self._graphs: dict[str, ShardGraph] = {}

    @classmethod
    async def open(
        cls, config: Config, *, dynamodb: Any, streams_client: Any, lease_table: LeaseTable,
        needs: dict[str, set[str]],
    ) -> StreamCatalog:
        catalog = cls(config, dynamodb=dynamodb, streams_client=streams_client, lease_table=lease_table,
                      needs=needs, streams={})
        problems: list[str] = []
        for logical in config.consumed_tables:
            try:
                info = await catalog._resolve(logical)
            except SetupError as exc:
                problems.append(str(exc))
                continue
            catalog._streams[info.stream_arn] = info
        if problems:  # report every table at once, not one per restart
            raise SetupError("; ".join(problems))
        return catalog

    # -- what is known ------------------------------------------------------------------

    @property
    def streams(self) -> list[StreamInfo]:
        return list(self._streams.values())

    def tables_by_arn(self) -> dict[str, str]:
        """Stream ARN -> logical table, for the lease taker."""
        return {arn: info.table for arn, info in self._streams.items()}

    def hash_key_of(self, stream_arn: str) -> str | None:
        """The partition key attribute of a stream's table (None: not known)."""
        info = self._streams.get(stream_arn)
        return info.hash_key if info else None

    async def children_of(self, stream_arn: str, shard_id: str) -> list[str]:
        """A shard's children: from the last discovery, else ``DescribeStream`` filtered on
        the parent (a closed shard's children exist before the next discovery pass has seen
        them; one small call on AWS), else the lease rows (children of a shard that aged
        out of the stream, as discovery recorded them)."""
        graph = self._graphs.get(stream_arn)
        found = set(graph.children_of(shard_id)) if graph is not None else set()
        if not found:
            found.update(s.shard_id for s in await describe_children(self._streams_client, stream_arn, shard_id))
        if not found:
            leases = await call_aws("Query", self._lease_table.list_leases, stream_arn)
            found.update(lease.shard_id for lease in leases if shard_id in lease.parent_shard_ids)
        return sorted(found)

    async def lease_children(self, parent: Lease, children: list[str]) -> list[Lease]:
        """Create the lease rows of a finished shard's children now; the rows created.

        The same rules as discovery (:func:`create_missing_leases`) on a graph of the parent
        and its children, without reading the stream's other lease rows: none of them can
        stop a child of a shard that finished just now (a child is never created twice:
        the creates are conditional, so a discovery pass or another worker doing the same at
        once is harmless). Nothing is deleted (the graph is partial). A DynamoDB Streams
        shard has one parent, so each child's lineage is this parent."""
        info = self._streams.get(parent.stream_arn)
        if info is None or not children:
            return []  # a stream this worker no longer follows (re-enabled): discovery decides
        graph = ShardGraph(parent.stream_arn)
        graph.add(Shard(parent.shard_id, None, None, "closed"))  # closed: its end was just read
        for child in children:
            graph.add(Shard(child, parent.shard_id, None, None))
        position = self._config.tables[info.table].stream.starting_position
        return await create_missing_leases(self._lease_table, info, graph, position, {parent.shard_id: parent})

    # -- discovery ----------------------------------------------------------------------

    async def _resolve(self, logical: str) -> StreamInfo:
        table = self._config.tables[logical]
        return await resolve_stream(
            self._dynamodb, logical, table.name, self._needs.get(logical, set()),
            streams_client=self._streams_client, stream_arn=table.stream.arn,
        )

    async def discover(self) -> int:
        """Describe every stream and keep one lease row per shard; the count of rows created."""
        created = 0
        for arn, info in list(self._streams.items()):
            current = await self._resolve(info.table)
            if current.stream_arn != arn:
                log.warning("follow new stream of table", stream=info.table, arn=current.stream_arn)
                del self._streams[arn]
                self._streams[current.stream_arn] = current
            graph = await describe_shards(self._streams_client, current.stream_arn)
            self._graphs[current.stream_arn] = graph
            position = self._config.tables[info.table].stream.starting_position
            created += await sync_leases(self._lease_table, current, graph, position)
        return created

    async def discover_for(self, leases: LeaseCoordinator) -> None:
        """One discovery pass; new lease rows are looked at by the taker's next poll."""
        if await self.discover():
            leases.request_scan()

    async def run_discovery(self, stop: asyncio.Event, leases: LeaseCoordinator) -> None:
        """Every ``reader.discovery_interval_seconds`` (jittered), on the leader only."""
        interval = self._config.reader.discovery_interval_seconds
        while not await sleep_until_stopped(stop, interval * random.uniform(0.9, 1.1)):
            if leases.is_leader:
                await self.discover_for(leases)
