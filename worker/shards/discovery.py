"""Resolves each consumed table's stream and keeps one lease row per shard.

Each pass: ``DescribeTable`` (the stream ARN changes if the stream is re-enabled),
``DescribeStream`` following ``LastEvaluatedShardId`` pages, then lease rows for new
shards (with their parents) and deletion of finished leases whose shard has aged out
of the stream, so the lease table does not grow forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import ClientError

from worker.aws_errors import error_code
from worker.errors import SetupError
from worker.leases.model import Lease
from worker.leases.table import LeaseTable
from worker.retry import call_aws
from worker.shards.lineage import Shard, ShardGraph

log = structlog.get_logger(__name__)

_VIEWS_WITH = {
    "new": {"NEW_IMAGE", "NEW_AND_OLD_IMAGES"},
    "old": {"OLD_IMAGE", "NEW_AND_OLD_IMAGES"},
}


@dataclass(frozen=True)
class StreamInfo:
    table: str  # logical name
    table_name: str  # physical name
    stream_arn: str
    view_type: str
    hash_key: str | None = None  # the partition key attribute: its records stay in order


def _hash_key(key_schema: list[dict[str, str]] | None) -> str | None:
    for element in key_schema or []:
        if element.get("KeyType") == "HASH":
            return element.get("AttributeName")
    return None


async def resolve_stream(
    client: Any, logical: str, table_name: str, needs: set[str], *, streams_client: Any = None,
    stream_arn: str | None = None,
) -> StreamInfo:
    """The table's current stream (or the configured ``stream_arn``), checked against what
    the routes need to read."""
    if stream_arn is not None:
        try:
            description = (await call_aws("DescribeStream", streams_client.describe_stream, StreamArn=stream_arn,
                                          Limit=1))["StreamDescription"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise SetupError(f"tables.{logical}.stream.arn: stream {stream_arn!r} does not exist") from None
            raise
        view = str(description.get("StreamViewType", ""))
        _check_view(logical, table_name, view, needs)
        return StreamInfo(table=logical, table_name=table_name, stream_arn=stream_arn, view_type=view,
                          hash_key=_hash_key(description.get("KeySchema")))
    try:
        description = (await call_aws("DescribeTable", client.describe_table, TableName=table_name))["Table"]
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise SetupError(f"tables.{logical}: table {table_name!r} does not exist") from None
        raise
    spec = description.get("StreamSpecification") or {}
    arn = description.get("LatestStreamArn")
    if not spec.get("StreamEnabled") or not arn:
        raise SetupError(
            f"tables.{logical}: table {table_name!r} has no stream enabled "
            "(enable one with view type NEW_AND_OLD_IMAGES)"
        )
    view = str(spec.get("StreamViewType", ""))
    _check_view(logical, table_name, view, needs)
    return StreamInfo(table=logical, table_name=table_name, stream_arn=str(arn), view_type=view,
                      hash_key=_hash_key(description.get("KeySchema")))


def _check_view(logical: str, table_name: str, view: str, needs: set[str]) -> None:
    for image in sorted(needs):
        if view not in _VIEWS_WITH[image]:
            raise SetupError(
                f"tables.{logical}: the stream of {table_name!r} has view type {view}, "
                f"but its routes read the {image} image (need one of {sorted(_VIEWS_WITH[image])})"
            )


def _shard(raw: dict[str, Any]) -> Shard:
    sequence_range = raw.get("SequenceNumberRange", {})
    return Shard(
        shard_id=raw["ShardId"],
        parent_shard_id=raw.get("ParentShardId"),
        starting_sequence_number=sequence_range.get("StartingSequenceNumber"),
        ending_sequence_number=sequence_range.get("EndingSequenceNumber"),
    )


async def _describe_pages(client: Any, kwargs: dict[str, Any]) -> list[Shard]:
    """Every shard ``DescribeStream`` lists with ``kwargs``, following ``LastEvaluatedShardId``."""
    shards: list[Shard] = []
    while True:
        page = (await call_aws("DescribeStream", client.describe_stream, **kwargs))["StreamDescription"]
        shards.extend(_shard(raw) for raw in page.get("Shards", []))
        last = page.get("LastEvaluatedShardId")
        if not last:
            return shards
        kwargs = {**kwargs, "ExclusiveStartShardId": last}


async def describe_shards(client: Any, stream_arn: str) -> ShardGraph:
    graph = ShardGraph(stream_arn)
    for shard in await _describe_pages(client, {"StreamArn": stream_arn}):
        graph.add(shard)
    return graph


async def describe_children(client: Any, stream_arn: str, parent_id: str) -> list[Shard]:
    """The child shards of ``parent_id``, for a consumer that just reached its end.

    ``DescribeStream`` with ``ShardFilter={"Type": "CHILD_SHARDS", "ShardId": parent}``
    answers them in one small call where the endpoint supports the filter (AWS). An
    endpoint that ignores it (moto, DynamoDB Local) answers every shard in pages: those
    are followed and filtered here, so the answer is the same either way. An endpoint
    that refuses it (ValidationException) gets the plain paged read.
    """
    kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardFilter": {"Type": "CHILD_SHARDS", "ShardId": parent_id}}
    try:
        shards = await _describe_pages(client, kwargs)
    except ClientError as exc:
        if error_code(exc) not in ("ValidationException", "InvalidParameterException", "UnknownParameterException"):
            raise
        shards = await _describe_pages(client, {"StreamArn": stream_arn})
    return sorted((s for s in shards if s.parent_shard_id == parent_id), key=lambda s: s.shard_id)


def _ancestors(graph: ShardGraph, shard_id: str) -> list[str]:
    """The parent, grandparent ... of ``shard_id`` that are still in the stream."""
    found: list[str] = []
    shard = graph.shards.get(shard_id)
    while shard is not None and shard.parent_shard_id in graph and shard.parent_shard_id not in found:
        found.append(shard.parent_shard_id)  # type: ignore[arg-type]
        shard = graph.shards[shard.parent_shard_id]  # type: ignore[index]
    return found


async def sync_leases(
    lease_table: LeaseTable, stream: StreamInfo, graph: ShardGraph, starting_position: str
) -> int:
    """Create lease rows for shards that have none; delete finished leases of shards that
    left the stream. Returns the number of leases created."""
    # Retried like every other call here: at start-up an escaping throttle or connection
    # reset would end the process.
    leases = {lease.shard_id: lease for lease in await call_aws("Query", lease_table.list_leases,
                                                                stream.stream_arn)}
    created = await create_missing_leases(lease_table, stream, graph, starting_position, leases)
    await _clean_finished(lease_table, stream, graph, leases)
    return len(created)


async def create_missing_leases(
    lease_table: LeaseTable, stream: StreamInfo, graph: ShardGraph, starting_position: str,
    leases: dict[str, Lease],
) -> list[Lease]:
    """Create a lease row (parents first) for each shard of ``graph`` that should have one
    and has none in ``leases`` (shard id -> the stream's lease rows); the rows created.
    ``graph`` may be part of the stream (a finished shard and its children): nothing is
    deleted here."""
    first_time = not leases
    candidates = graph.in_lineage_order()
    if first_time and starting_position == "LATEST":
        # Like KCL: starting at LATEST means the open shards only, each from its tip;
        # reading closed ancestors (hours old) would contradict LATEST.
        candidates = graph.open_shards()
    # A shard named as parent by a lease that has progressed was finished and cleaned up:
    # never create it again.
    done_parents = {p for lease in leases.values() if lease.checkpoint for p in lease.parent_shard_ids}
    # Ancestors of leased shards that have no lease were skipped on purpose (a LATEST
    # start) or finished and cleaned up: never go back behind existing leases.
    behind = {a for shard_id in leases for a in _ancestors(graph, shard_id)}
    created: list[Lease] = []
    for shard in candidates:
        if shard.shard_id in leases or shard.shard_id in done_parents or shard.shard_id in behind:
            continue
        parents = [] if (first_time and starting_position == "LATEST") else graph.parents_of(shard.shard_id)
        parents = [p for p in parents if p in graph or p in leases]
        lease = Lease(stream_arn=stream.stream_arn, shard_id=shard.shard_id, table=stream.table,
                      parent_shard_ids=tuple(parents))
        if await call_aws("PutItem", lease_table.create_lease, lease):
            created.append(lease)
            log.info("create lease", stream=stream.table, shard=shard.shard_id, parents=parents)
    return created


async def _clean_finished(
    lease_table: LeaseTable, stream: StreamInfo, graph: ShardGraph, leases: dict[str, Lease]
) -> None:
    """Delete a finished lease once every child has a lease with a checkpoint (they no
    longer wait on it), or once its shard aged out of the stream."""
    children: dict[str, list[Lease]] = {}
    for lease in leases.values():
        for parent in lease.parent_shard_ids:
            children.setdefault(parent, []).append(lease)
    for lease in leases.values():
        if not lease.finished:
            continue
        kids = children.get(lease.shard_id, [])
        expected = set(graph.children_of(lease.shard_id)) | set(lease.child_shard_ids)
        progressed = bool(kids) and all(kid.checkpoint for kid in kids) and expected <= {k.shard_id for k in kids}
        if progressed or lease.shard_id not in graph:
            await call_aws("DeleteItem", lease_table.delete_lease, lease)
            log.info("delete finished lease", stream=stream.table, shard=lease.shard_id,
                     reason="children progressed" if progressed else "aged out")
