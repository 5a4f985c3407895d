"""Lease-table access. Every owner-side write is conditional (fencing).

A failed condition on an owner-side write means another worker changed the lease:
it surfaces as :class:`LeaseLostError` and the caller stops that shard.
"""

from __future__ import annotations

from typing import Any

import structlog
from botocore.exceptions import ClientError

from worker.aws_errors import error_code, is_conditional_check_failed, utc_now
from worker.errors import LeaseLostError
from worker.checkpoint.ranges import SeqRange, encode
from worker.leases.model import FINISHED_RANGES, SHARD_END, WORKER_PK, Lease, WorkerBeat, lease_pk
from worker.observability import metrics
from worker.retry import call_aws

log = structlog.get_logger(__name__)


def _now() -> str:
    return utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LeaseTable:
    """Data access for lease and worker rows; knows nothing of scheduling."""

    def __init__(self, client: Any, resource: Any, table_name: str) -> None:
        self._client = client
        self._resource = resource
        self.name = table_name
        self._table: Any = None

    def _count_write(self, operation: str) -> None:
        metrics.lease_table_writes.labels(operation).inc()

    async def _t(self) -> Any:
        if self._table is None:
            self._table = await self._resource.Table(self.name)
        return self._table

    # -- table lifecycle -------------------------------------------------------------

    async def exists(self) -> bool:
        try:
            await call_aws("DescribeTable", self._client.describe_table, TableName=self.name)
            return True
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return False
            raise

    async def create_if_missing(self) -> bool:
        """Create the table (on-demand billing). Returns True if this call created it."""
        if await self.exists():
            return False
        try:
            await self._client.create_table(
                TableName=self.name,
                KeySchema=[
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":  # another worker won the race
                raise
            return False
        waiter = self._client.get_waiter("table_exists")
        await waiter.wait(TableName=self.name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        log.info("create lease table", table=self.name)
        return True

    # -- reads -----------------------------------------------------------------------

    async def _query_all(self, pk: str) -> list[dict[str, Any]]:
        table = await self._t()
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": pk},
            "ConsistentRead": True,
        }
        while True:
            page = await table.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def list_leases(self, stream_arn: str) -> list[Lease]:
        return [Lease.from_item(item) for item in await self._query_all(lease_pk(stream_arn))]

    async def get_lease(self, stream_arn: str, shard_id: str) -> Lease | None:
        table = await self._t()
        page = await table.get_item(Key={"pk": lease_pk(stream_arn), "sk": shard_id}, ConsistentRead=True)
        item = page.get("Item")
        return Lease.from_item(item) if item else None

    async def list_workers(self) -> list[WorkerBeat]:
        return [WorkerBeat.from_item(item) for item in await self._query_all(WORKER_PK)]

    # -- lease writes ----------------------------------------------------------------

    async def create_lease(self, lease: Lease) -> bool:
        """Insert a lease row for a newly discovered shard; False if it already exists."""
        table = await self._t()
        item: dict[str, Any] = {
            "pk": lease_pk(lease.stream_arn),
            "sk": lease.shard_id,
            "streamArn": lease.stream_arn,
            "table": lease.table,
            "leaseCounter": 0,
            "createdAt": _now(),
            "updatedAt": _now(),
        }
        if lease.parent_shard_ids:
            item["parentShardIds"] = list(lease.parent_shard_ids)
        self._count_write("create_lease")
        try:
            await table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
            return True
        except ClientError as exc:
            if is_conditional_check_failed(exc):
                return False
            raise

    async def take(self, lease: Lease, worker_id: str) -> Lease | None:
        """Take a lease as seen in ``lease`` (free, expired or stolen). None if someone
        else changed it first. The counter bump fences the previous owner."""
        table = await self._t()
        self._count_write("take")
        condition = "leaseCounter = :seen AND "
        condition += "attribute_not_exists(#owner)" if lease.owner is None else "#owner = :prev"
        values: dict[str, Any] = {":me": worker_id, ":seen": lease.counter, ":one": 1, ":now": _now()}
        if lease.owner is not None:
            values[":prev"] = lease.owner
        try:
            response = await table.update_item(
                Key={"pk": lease_pk(lease.stream_arn), "sk": lease.shard_id},
                UpdateExpression="SET #owner = :me, leaseCounter = leaseCounter + :one, updatedAt = :now",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues=values,
                # The row as of the take: the previous owner may have checkpointed after
                # ``lease`` was read (the counter does not change on checkpoints). Starting
                # from the read copy would redo those records and write the checkpoint
                # backwards; after the take, the previous owner's writes are fenced.
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if is_conditional_check_failed(exc):
                return None
            raise
        attributes = (response or {}).get("Attributes")
        if attributes and "streamArn" in attributes:
            return Lease.from_item(attributes)
        return lease.owned_by(worker_id, lease.counter + 1)

    async def _owner_write(
        self, operation: str, lease: Lease, update: str, values: dict[str, Any], names: dict[str, str]
    ) -> None:
        table = await self._t()
        self._count_write(operation)
        try:
            await table.update_item(
                Key={"pk": lease_pk(lease.stream_arn), "sk": lease.shard_id},
                UpdateExpression=update,
                ConditionExpression="#owner = :me AND leaseCounter = :counter",
                ExpressionAttributeNames={"#owner": "owner", **names},
                ExpressionAttributeValues={":me": lease.owner, ":counter": lease.counter, ":now": _now(), **values},
            )
        except ClientError as exc:
            if is_conditional_check_failed(exc):
                raise LeaseLostError(f"lease {lease.shard_id} of {lease.stream_arn} is no longer ours") from None
            raise

    async def checkpoint(
        self, lease: Lease, sequence_number: str | None, finished_ranges: tuple[SeqRange, ...] = ()
    ) -> None:
        """Record that every record up to and including ``sequence_number`` is done (None:
        the checkpoint stays), and which records past it are done too, in one fenced write."""
        sets = ["checkpointedAt = :now", "updatedAt = :now"]
        values: dict[str, Any] = {}
        if sequence_number is not None:
            sets.insert(0, "checkpoint = :seq")
            values[":seq"] = sequence_number
        if finished_ranges:
            sets.append("#ranges = :ranges")
            values[":ranges"] = encode(finished_ranges)
        update = "SET " + ", ".join(sets) + ("" if finished_ranges else " REMOVE #ranges")
        await self._owner_write("checkpoint", lease, update, values, {"#ranges": FINISHED_RANGES})

    async def finish(self, lease: Lease, child_shard_ids: list[str]) -> None:
        """Mark the shard read to its end, name its children, and give the lease up."""
        update = "SET checkpoint = :end, finishedAt = :now, updatedAt = :now, leaseCounter = leaseCounter + :one"
        values: dict[str, Any] = {":end": SHARD_END, ":one": 1}
        if child_shard_ids:
            update += ", childShardIds = :children"
            values[":children"] = child_shard_ids
        await self._owner_write(
            "finish", lease, update + " REMOVE #owner, #ranges", values, {"#ranges": FINISHED_RANGES}
        )

    async def release(self, lease: Lease) -> None:
        """Give a lease up so that another worker takes it at its next pass."""
        await self._owner_write(
            "release",
            lease,
            "SET leaseCounter = leaseCounter + :one, updatedAt = :now REMOVE #owner",
            {":one": 1},
            {},
        )

    async def reset_checkpoint(self, stream_arn: str, shard_id: str, checkpoint: str | None) -> None:
        """Operator action: set (or clear) a checkpoint regardless of owner, fencing the owner."""
        table = await self._t()
        self._count_write("reset_checkpoint")
        if checkpoint is None:
            update = "SET leaseCounter = leaseCounter + :one, updatedAt = :now REMOVE checkpoint, #owner"
            values: dict[str, Any] = {":one": 1, ":now": _now()}
        else:
            update = "SET checkpoint = :cp, leaseCounter = leaseCounter + :one, updatedAt = :now REMOVE #owner"
            values = {":one": 1, ":now": _now(), ":cp": checkpoint}
        # The finished ranges belonged to the old position: a re-read must handle everything.
        await table.update_item(
            Key={"pk": lease_pk(stream_arn), "sk": shard_id},
            UpdateExpression=update + ", #ranges",
            ExpressionAttributeNames={"#owner": "owner", "#ranges": FINISHED_RANGES},
            ExpressionAttributeValues=values,
        )

    async def delete_lease(self, lease: Lease) -> None:
        table = await self._t()
        self._count_write("delete_lease")
        await table.delete_item(Key={"pk": lease_pk(lease.stream_arn), "sk": lease.shard_id})

    # -- worker rows -----------------------------------------------------------------

    async def heartbeat(self, worker_id: str, leases: int, stopping: bool = False) -> None:
        table = await self._t()
        self._count_write("heartbeat")
        await table.update_item(
            Key={"pk": WORKER_PK, "sk": worker_id},
            UpdateExpression=(
                "SET heartbeat = if_not_exists(heartbeat, :zero) + :one, leases = :leases, "
                "updatedAt = :now, stopping = :stopping"
            ),
            ExpressionAttributeValues={
                ":zero": 0,
                ":one": 1,
                ":leases": leases,
                ":now": _now(),
                ":stopping": stopping,
            },
        )

    async def notify_worker(self, worker_id: str) -> None:
        """Tell a worker that one of its leases was stolen, so it stops that shard at its
        next poll instead of at its next checkpoint. Best effort: fencing does not rely on it."""
        table = await self._t()
        self._count_write("notify_worker")
        try:
            await table.update_item(
                Key={"pk": WORKER_PK, "sk": worker_id},
                UpdateExpression="SET leaseChanges = if_not_exists(leaseChanges, :zero) + :one",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":zero": 0, ":one": 1},
            )
        except ClientError as exc:
            if not is_conditional_check_failed(exc):
                raise

    async def remove_worker(self, worker_id: str) -> None:
        table = await self._t()
        self._count_write("remove_worker")
        await table.delete_item(Key={"pk": WORKER_PK, "sk": worker_id})
