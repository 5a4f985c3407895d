"""Finished ranges end to end on each real endpoint (moto, DynamoDB Local): the lease row
records the records finished past a stuck one, and the next owner redoes none of them.

A poison record (max_attempts -1, no dead-letter destination) holds the checkpoint while
later records finish. Worker 1 is stopped (hand-off); worker 2 takes the shard. Every
assertion is exact: which records each worker's handler was called with, the checkpoint,
and the ranges in the lease row, compared with the stream as read by the test itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import pytest

from tests.delivery import handlers
from tests.integration.helpers import (
    checkpoint,
    lease_rows,
    seed_document,
    seq,
    setup_tables,
    stream_records,
    wait_checkpoint,
    wait_until,
)
from worker import operations
from worker.app import App
from worker.aws import AwsClients
from worker.checkpoint.ranges import SeqRange, decode
from worker.config import AwsConfig, Config, parse_config
from worker.errors import LeaseLostError
from worker.leases.model import FINISHED_RANGES, Lease
from worker.leases.table import LeaseTable

pytestmark = pytest.mark.integration

RECORD_HANDLER = "tests.delivery.handlers:record_handler"
POISON = "poison"
LATER = 1_000  # records finished past the stuck one


@pytest.fixture(autouse=True)
def _fresh_handler_state() -> None:
    handlers.reset()


def make_config(endpoint_url: str, prefix: str, max_ranges: int) -> Config:
    doc = seed_document(endpoint_url, prefix)
    doc["processing"]["checkpoint_interval_seconds"] = 0.2
    doc["processing"].pop("dead_letter", None)  # the poison is retried for ever
    doc["processing"]["max_finished_ranges"] = max_ranges
    doc["worker"]["shutdown_timeout_seconds"] = 3
    # Several records of other keys run at once; what may run past the poison depends on
    # the scheduler (lanes: other lanes; per-key: other keys): the test reads what did.
    doc["routes"] = [{"name": "endless", "table": "orders", "handler": RECORD_HANDLER,
                      "parallelization_factor": 4}]
    return parse_config(doc, env={})


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[App]:
    app = App(config)
    try:
        await app.start()
        yield app
    finally:
        await app.stop()


async def write_orders(ddb: Any, config: Config, keys: list[str]) -> None:
    """One write per entry (the same key again: the next counter), in batches of 25 with
    distinct keys each; stream order is read back from the stream."""
    table = config.tables["orders"].name
    counters: dict[str, int] = {}
    requests = []
    for key in keys:
        counter = counters.get(key, 0)
        counters[key] = counter + 1
        requests.append({"PutRequest": {"Item": {
            "orderId": {"S": key}, "counter": {"N": str(counter)}, "status": {"S": "NEW"}, "amount": {"N": "1"},
        }}})
    for start in range(0, len(requests), 25):
        await ddb.batch_write_item(RequestItems={table: requests[start:start + 25]})


def layout() -> list[str]:
    """Five records, the poison, then LATER records of 200 keys with three more poison
    records among them (so that per-key scheduling also leaves gaps: several ranges)."""
    keys = [f"early-{i}" for i in range(5)] + [POISON]
    for i in range(LATER):
        keys.append(POISON if i in (250, 500, 750) else f"k-{i % 200}")
    return keys


def is_poison(record: dict[str, Any]) -> bool:
    return str(record["dynamodb"]["Keys"]["orderId"]["S"]) == POISON


def runs_of(stream: list[str], finished: set[str], after: str | None) -> list[list[str]]:
    """The runs of consecutive finished records of ``stream`` past ``after``."""
    runs: list[list[str]] = []
    current: list[str] = []
    for s in stream:
        if after is not None and int(s) <= int(after):
            continue
        if s in finished:
            current.append(s)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


async def ranges_row(ddb: Any, config: Config) -> tuple[SeqRange, ...]:
    [row] = await lease_rows(ddb, config)
    return decode(str(row.get(FINISHED_RANGES, "")))


def claimed(ranges: tuple[SeqRange, ...], stream: list[str]) -> set[str]:
    return {s for s in stream if any(r.first <= int(s) <= r.last for r in ranges)}


async def settle(timeout: float = 30, at_least: int = 1) -> None:
    """Until the worker has handled everything it can: no new successful call for 1 s."""
    seen = -1
    async def still() -> bool:
        nonlocal seen
        now = len(handlers.succeeded)
        done = now == seen
        seen = now
        return done and now >= at_least

    await wait_until(still, timeout=timeout, interval=1.0)


async def take_over(endpoint_url: str, prefix: str, aws: dict[str, Any], max_ranges: int
                    ) -> tuple[list[str], set[str], tuple[SeqRange, ...], str]:
    """Worker 1 runs until stuck on the poison, and stops; returns the stream, what worker 1
    finished, the ranges in the row and the checkpoint. Checks the row while worker 1 runs."""
    ddb = aws["dynamodb"]
    config = make_config(endpoint_url, prefix, max_ranges)
    await setup_tables(config)
    handlers.fail_keys.add(POISON)
    await write_orders(ddb, config, layout())
    records = await stream_records(aws, config, "orders")
    stream = [seq(r) for r in records]
    assert len(stream) == 6 + LATER
    first_poison = next(i for i, r in enumerate(records) if is_poison(r))
    stuck_at = stream[first_poison - 1]
    async with running(config):
        await settle()
        finished = {c.seq for c in handlers.succeeded}
        assert len(finished) == len(handlers.succeeded)  # each finished record handled once
        runs = runs_of(stream, finished, stuck_at)
        expected = {s for run in runs[:max_ranges] for s in run}
        assert len(finished - set(stream[:first_poison])) >= 500  # most of the later records
        # Written while worker 1 is still running (so a crash now would lose none of it).
        async def written() -> bool:
            return claimed(await ranges_row(ddb, config), stream) == expected

        await wait_until(written, timeout=10, interval=0.1)
        assert await checkpoint(ddb, config, "orders") == stuck_at
    ranges = await ranges_row(ddb, config)
    assert claimed(ranges, stream) == expected
    assert [r.count for r in ranges] == [len(run) for run in runs[:max_ranges]]
    # stream-worker status shows how many records past the checkpoint are finished.
    status = await operations.collect_status(config)
    [orders] = [s for s in status["shards"] if s["table"] == "orders"]
    assert (orders["checkpoint"], orders["finished_ahead"]) == (stuck_at, len(expected))
    header, row = [line for line in operations.render_status(status).splitlines() if "orders" in line or "finished" in line]
    assert "finished ahead" in header and f" {len(expected)} " in row
    return stream, finished, ranges, stuck_at


async def second_worker(endpoint_url: str, prefix: str, aws: dict[str, Any], max_ranges: int,
                        stream: list[str], stuck_at: str, poison_seqs: set[str], redo: set[str]) -> None:
    """Worker 2 takes the shard. While the poison is stuck it redoes none of the finished
    records and the checkpoint stays; once the poison heals, it has called the handler with
    exactly the records nobody finished plus ``redo``, each once."""
    ddb = aws["dynamodb"]
    config = make_config(endpoint_url, prefix, max_ranges)
    first_calls = len(handlers.calls)
    first_succeeded = {c.seq for c in handlers.succeeded}
    handlers.succeeded.clear()
    past = [s for s in stream if int(s) > int(stuck_at)]
    expected = {s for s in past if s not in poison_seqs and (s not in first_succeeded or s in redo)}

    def calls() -> list[str]:
        return [c.seq for c in handlers.calls[first_calls:] if c.seq not in poison_seqs]

    async with running(config):
        # Stuck again on the poison: what it could handle is handled (with per-key
        # scheduling, all but the poison's key; with lanes, all but the poison's lane).
        await wait_until(lambda: _true_if(len(handlers.calls) > first_calls), timeout=30, interval=0.1)
        await settle(at_least=0)
        assert set(calls()) & (first_succeeded - redo) == set()
        assert set(calls()) <= expected
        assert await checkpoint(ddb, config, "orders") == stuck_at

        handlers.allow.set()  # the poison heals: the checkpoint goes to the end, the ranges go
        await wait_checkpoint(ddb, config, "orders", stream[-1], timeout=30)
        assert await ranges_row(ddb, config) == ()
    assert sorted(calls()) == sorted(expected)  # none twice, none of the finished ones


async def _true_if(condition: bool) -> bool:
    return condition


async def test_takeover_redoes_no_record_finished_past_the_stuck_one(
    endpoint_url: str, prefix: str, aws: dict[str, Any]
) -> None:
    stream, finished, ranges, stuck_at = await take_over(endpoint_url, prefix, aws, max_ranges=1_000)
    records = await stream_records(aws, make_config(endpoint_url, prefix, 1_000), "orders")
    poison_seqs = {seq(r) for r in records if is_poison(r)}
    assert claimed(ranges, stream) == {s for s in finished if int(s) > int(stuck_at)}
    await second_worker(endpoint_url, prefix, aws, 1_000, stream, stuck_at, poison_seqs, redo=set())


async def test_with_ranges_capped_the_next_owner_redoes_exactly_what_the_cap_dropped(
    endpoint_url: str, prefix: str, aws: dict[str, Any]
) -> None:
    cap = 2
    stream, finished, ranges, stuck_at = await take_over(endpoint_url, prefix, aws, max_ranges=cap)
    records = await stream_records(aws, make_config(endpoint_url, prefix, cap), "orders")
    poison_seqs = {seq(r) for r in records if is_poison(r)}
    assert len(ranges) == cap
    dropped = {s for s in finished if int(s) > int(stuck_at)} - claimed(ranges, stream)
    assert dropped  # the layout leaves more than two runs: the cap dropped some
    assert all(int(s) > ranges[-1].last for s in dropped)  # the later runs, not the oldest
    await second_worker(endpoint_url, prefix, aws, cap, stream, stuck_at, poison_seqs, redo=dropped)


# -- the lease row, written directly -------------------------------------------------------

STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"


@pytest.fixture
async def lease_tables(endpoint_url: str, prefix: str) -> AsyncIterator[tuple[LeaseTable, LeaseTable]]:
    """Two LeaseTable objects (own clients each, as two workers) on one table."""
    clients = [AwsClients(AwsConfig(region="us-east-1", endpoint_url=endpoint_url)) for _ in range(2)]
    tables = []
    for aws in clients:
        table = LeaseTable(await aws.client("dynamodb"), await aws.dynamodb_resource(), f"{prefix}leases")
        await table.create_if_missing()
        tables.append(table)
    yield tables[0], tables[1]
    for aws in clients:
        await aws.close()


async def test_ranges_ride_the_fenced_checkpoint_write(lease_tables: tuple[LeaseTable, LeaseTable]) -> None:
    a, b = lease_tables
    assert await a.create_lease(Lease(stream_arn=STREAM, shard_id="s-1", table="orders"))
    free = await a.get_lease(STREAM, "s-1")
    assert free is not None and free.finished_ranges == ()  # a row without the attribute: none
    mine = await a.take(free, "worker-a")
    assert mine is not None
    ranges = (SeqRange(120, 130, 4), SeqRange(10**21, 10**21 + 5, 2))
    await a.checkpoint(mine, "100", ranges)
    row = await b.get_lease(STREAM, "s-1")
    assert row is not None and (row.checkpoint, row.finished_ranges) == ("100", ranges)
    await a.checkpoint(mine, None, ranges[1:])  # the ranges alone: the checkpoint stays
    row = await b.get_lease(STREAM, "s-1")
    assert row is not None and (row.checkpoint, row.finished_ranges) == ("100", ranges[1:])

    # Worker b takes the lease over: it starts with the ranges; a's writes are fenced.
    theirs = await b.take(row, "worker-b")
    assert theirs is not None and theirs.finished_ranges == ranges[1:]
    with pytest.raises(LeaseLostError):
        await a.checkpoint(mine, None, (SeqRange(200, 300, 9),))
    row = await b.get_lease(STREAM, "s-1")
    assert row is not None and row.finished_ranges == ranges[1:]

    # A checkpoint past part of a range: that part is no longer read as a range.
    await b.checkpoint(theirs, str(10**21 + 2), ranges[1:])
    row = await b.get_lease(STREAM, "s-1")
    assert row is not None and row.finished_ranges == (SeqRange(10**21 + 3, 10**21 + 5, 1),)
    await b.checkpoint(theirs, str(10**21 + 9), ())  # no ranges: the attribute goes
    row = await b.get_lease(STREAM, "s-1")
    assert row is not None and row.finished_ranges == () and row.checkpoint == str(10**21 + 9)

    # Operator reset and shard end both clear them.
    await b.checkpoint(theirs, None, ranges[1:])
    await b.reset_checkpoint(STREAM, "s-1", "TRIM_HORIZON")
    row = await b.get_lease(STREAM, "s-1")
    assert row is not None and row.finished_ranges == () and row.owner is None
    again = await b.take(row, "worker-b")
    assert again is not None
    await b.checkpoint(again, "5", ranges)
    await b.finish(again, [])
    items = await (await b._t()).get_item(Key={"pk": f"lease#{STREAM}", "sk": "s-1"}, ConsistentRead=True)
    assert FINISHED_RANGES not in items["Item"]


async def test_unreadable_ranges_are_ignored_not_trusted(lease_tables: tuple[LeaseTable, LeaseTable]) -> None:
    a, _ = lease_tables
    assert await a.create_lease(Lease(stream_arn=STREAM, shard_id="s-2", table="orders"))
    table = await a._t()
    await table.update_item(Key={"pk": f"lease#{STREAM}", "sk": "s-2"},
                            UpdateExpression="SET #r = :r", ExpressionAttributeNames={"#r": FINISHED_RANGES},
                            ExpressionAttributeValues={":r": "12-oops"})
    row = await a.get_lease(STREAM, "s-2")
    assert row is not None and row.finished_ranges == ()  # its records are redone, none skipped
