"""Operator commands that read or change the lease table: status and reset-checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from worker.aws import AwsClients
from worker.aws_errors import utc_now
from worker.checkpoint.ranges import records_in
from worker.config import Config
from worker.leases.model import Lease
from worker.leases.table import LeaseTable
from worker.records import StreamRecord
from worker.retry import call_aws
from worker.shards.discovery import StreamInfo, describe_shards, resolve_stream

RESET_TARGETS = ("TRIM_HORIZON", "LATEST")


@dataclass
class ShardStatus:
    table: str
    shard_id: str
    parent: str | None
    open: bool
    state: str  # finished | waiting on parent | processing | unowned | no lease
    owner: str | None
    checkpoint: str | None
    last_progress_seconds: float | None  # since the checkpoint last moved
    lag_seconds: float | None  # age of the oldest record after the checkpoint; 0 when caught up
    finished_ahead: int = 0  # records past the checkpoint already finished (lease finishedRanges)


def _age(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return round((utc_now() - moment).total_seconds(), 1)


def _state(lease: Lease | None, leases: dict[str, Lease], live: set[str]) -> str:
    if lease is None:
        return "no lease"
    if lease.finished:
        return "finished"
    if any(p in leases and not leases[p].finished for p in lease.parent_shard_ids):
        return "waiting on parent"
    if lease.owner is None:
        return "unowned"
    return "processing" if lease.owner in live else "owner not live"


async def _streams(config: Config, clients: AwsClients) -> list[StreamInfo]:
    ddb = await clients.client("dynamodb")
    streams_client = await clients.client("dynamodbstreams")
    infos = []
    for logical in config.consumed_tables:
        table = config.tables[logical]
        infos.append(await resolve_stream(ddb, logical, table.name, set(), streams_client=streams_client,
                                          stream_arn=table.stream.arn))
    return infos


async def _lag(streams_client: Any, stream_arn: str, shard_id: str, lease: Lease | None) -> float | None:
    """How old the first record not yet checkpointed is: one GetShardIterator + one
    GetRecords(Limit=1) per shard. 0 when nothing is waiting; None for finished shards."""
    if lease is not None and lease.finished:
        return None
    checkpoint = lease.checkpoint if lease else None
    kwargs: dict[str, Any] = {"StreamArn": stream_arn, "ShardId": shard_id}
    if checkpoint and checkpoint.isdigit():
        kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=checkpoint)
    else:
        kwargs["ShardIteratorType"] = "LATEST" if checkpoint == "LATEST" else "TRIM_HORIZON"
    iterator = (await call_aws("GetShardIterator", streams_client.get_shard_iterator, **kwargs)).get("ShardIterator")
    if not iterator:
        return 0.0
    page = await call_aws("GetRecords", streams_client.get_records, ShardIterator=iterator, Limit=1)
    records = page.get("Records") or []
    if not records:
        return 0.0
    created = StreamRecord(records[0], table="", stream_arn=stream_arn, shard_id=shard_id).approximate_creation_time
    if created is None:
        return None
    return round(max((utc_now() - created).total_seconds(), 0.0), 1)


async def collect_status(config: Config) -> dict[str, Any]:
    """Every shard of every consumed stream with its lease, from the tables themselves."""
    clients = AwsClients(config.aws)
    try:
        lease_table = LeaseTable(await clients.client("dynamodb"), await clients.dynamodb_resource(),
                                 config.leases.table)
        workers = await lease_table.list_workers()
        # A worker row updated within the lease duration counts as live for this snapshot.
        # (An age of 0.0, a heartbeat this very moment, is live: compare to None, not falsiness.)
        ages = {w.worker_id: _age(w.updated_at) for w in workers}
        live = {wid for wid, age in ages.items() if age is not None and age < config.leases.duration_seconds}
        shards: list[ShardStatus] = []
        streams_client = await clients.client("dynamodbstreams")
        for info in await _streams(config, clients):
            graph = await describe_shards(streams_client, info.stream_arn)
            leases = {lease.shard_id: lease for lease in await lease_table.list_leases(info.stream_arn)}
            for shard in graph.in_lineage_order():
                lease = leases.get(shard.shard_id)
                checkpoint = lease.checkpoint if lease else None
                progress = lease.extra.get("checkpointedAt") if lease else None
                shards.append(ShardStatus(
                    table=info.table, shard_id=shard.shard_id, parent=shard.parent_shard_id,
                    open=not shard.closed, state=_state(lease, leases, live),
                    owner=lease.owner if lease else None, checkpoint=checkpoint,
                    last_progress_seconds=_age(progress),
                    lag_seconds=await _lag(streams_client, info.stream_arn, shard.shard_id, lease),
                    finished_ahead=records_in(lease.finished_ranges) if lease else 0,
                ))
        return {
            "generated_at": utc_now().isoformat(timespec="seconds"),
            "workers": [{"id": w.worker_id, "leases": w.leases, "live": w.worker_id in live,
                         "updated_seconds_ago": _age(w.updated_at)} for w in workers],
            "shards": [asdict(s) for s in shards],
        }
    finally:
        await clients.close()


def render_status(status: dict[str, Any]) -> str:
    lines = [f"workers ({len(status['workers'])}):"]
    for worker in status["workers"]:
        lines.append(f"  {worker['id']}  leases={worker['leases']}  live={'yes' if worker['live'] else 'no'}"
                     f"  heartbeat {worker['updated_seconds_ago']} s ago")
    headers = ["table", "shard", "state", "owner", "checkpoint", "finished ahead", "lag", "last progress"]
    rows = [[s["table"], s["shard_id"], s["state"] + ("" if s["open"] else " (closed)"), s["owner"] or "-",
             (s["checkpoint"] or "-")[-24:], s["finished_ahead"],
             "-" if s["lag_seconds"] is None else f"{s['lag_seconds']} s",
             "-" if s["last_progress_seconds"] is None else f"{s['last_progress_seconds']} s ago"]
            for s in status["shards"]]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    lines.append("")
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows)
    return "\n".join(lines)


@dataclass
class ResetPlan:
    stream_arn: str
    leases: list[Lease]
    target: str


async def plan_reset(config: Config, table: str, target: str, shard: str | None) -> ResetPlan:
    if table not in config.consumed_tables:
        raise ValueError(f"table {table!r} is not consumed by any route (consumed: {', '.join(config.consumed_tables)})")
    if target not in RESET_TARGETS and not target.isdigit():
        raise ValueError(f"--to must be TRIM_HORIZON, LATEST or a sequence number, not {target!r}")
    clients = AwsClients(config.aws)
    try:
        info = next(i for i in await _streams(config, clients) if i.table == table)
        lease_table = LeaseTable(await clients.client("dynamodb"), await clients.dynamodb_resource(),
                                 config.leases.table)
        leases = [lease for lease in await lease_table.list_leases(info.stream_arn)
                  if shard is None or lease.shard_id == shard]
    finally:
        await clients.close()
    if not leases:
        raise ValueError(f"no lease rows for {table!r}{f' shard {shard}' if shard else ''}: nothing to reset")
    return ResetPlan(info.stream_arn, leases, target)


async def apply_reset(config: Config, plan: ResetPlan) -> int:
    """Write the new checkpoint on every planned lease. The counter bump fences the current
    owner: it stops the shard at its next checkpoint and a taker resumes from the new one."""
    clients = AwsClients(config.aws)
    try:
        lease_table = LeaseTable(await clients.client("dynamodb"), await clients.dynamodb_resource(),
                                 config.leases.table)
        for lease in plan.leases:
            await lease_table.reset_checkpoint(plan.stream_arn, lease.shard_id, plan.target)
        return len(plan.leases)
    finally:
        await clients.close()

