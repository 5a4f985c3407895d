"""The lease protocol (docs/leases.md) against a real moto server, several coordinators in one loop.

Passes are driven explicitly (``heartbeat_once`` / ``poll_workers`` / ``take_pass``); real time
only passes where an expiry or the self-fencing window must elapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from prometheus_client import REGISTRY

from worker.aws import AwsClients
from worker.checkpoint.checkpointer import Checkpointer
from worker.config import AwsConfig, LeaseConfig
from worker.errors import LeaseLostError
from worker.leases.coordinator import LeaseCoordinator
from worker.leases.model import SHARD_END, Lease
from worker.leases.table import LeaseTable

pytestmark = pytest.mark.integration

STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000"
DURATION = 1.5
HEARTBEAT = 0.3

TableFactory = Callable[..., Awaitable[LeaseTable]]


def lease_cfg(**overrides: Any) -> LeaseConfig:
    values: dict[str, Any] = {
        "duration_seconds": DURATION,
        "heartbeat_interval_seconds": HEARTBEAT,
        "poll_interval_seconds": 0.1,
        "scan_interval_seconds": 5,
    }
    values.update(overrides)
    return LeaseConfig(**values)


def shard(i: int) -> str:
    return f"shardId-{i:05d}"


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def events(event: str) -> float:
    return metric("stream_worker_lease_events_total", {"event": event})


class Recorder:
    """Callbacks of one coordinator: which leases it was told it acquired and lost."""

    def __init__(self) -> None:
        self.acquired: list[Lease] = []
        self.lost: list[Lease] = []

    def on_acquired(self, lease: Lease) -> None:
        self.acquired.append(lease)

    def on_lost(self, lease: Lease) -> None:
        self.lost.append(lease)

    @property
    def acquired_shards(self) -> list[str]:
        return [lease.shard_id for lease in self.acquired]

    @property
    def lost_shards(self) -> list[str]:
        return [lease.shard_id for lease in self.lost]


def coordinator(table: LeaseTable, worker_id: str, config: LeaseConfig | None = None
                ) -> tuple[LeaseCoordinator, Recorder]:
    rec = Recorder()
    coord = LeaseCoordinator(
        table,
        worker_id,
        config or lease_cfg(),
        streams=lambda: {STREAM: "orders"},
        on_acquired=rec.on_acquired,
        on_lost=rec.on_lost,
    )
    return coord, rec


@pytest.fixture
async def make_table(moto_url: str, prefix: str) -> AsyncIterator[TableFactory]:
    """Builds LeaseTable objects (own clients each) on one table ``<prefix>leases``."""
    clients: list[AwsClients] = []

    async def make(cls: type[LeaseTable] = LeaseTable) -> LeaseTable:
        aws = AwsClients(AwsConfig(region="us-east-1", endpoint_url=moto_url))
        clients.append(aws)
        table = cls(await aws.client("dynamodb"), await aws.dynamodb_resource(), f"{prefix}leases")
        await table.create_if_missing()
        return table

    yield make
    for aws in clients:
        await aws.close()


@pytest.fixture
async def table(make_table: TableFactory) -> LeaseTable:
    return await make_table()


async def create_leases(table: LeaseTable, n: int) -> list[str]:
    shards = [shard(i) for i in range(n)]
    for shard_id in shards:
        assert await table.create_lease(Lease(stream_arn=STREAM, shard_id=shard_id, table="orders"))
    return shards


async def owners(table: LeaseTable) -> dict[str, str | None]:
    return {lease.shard_id: lease.owner for lease in await table.list_leases(STREAM)}


async def rows(table: LeaseTable) -> dict[str, Lease]:
    return {lease.shard_id: lease for lease in await table.list_leases(STREAM)}


async def beat_and_poll(*coords: LeaseCoordinator) -> None:
    for coord in coords:
        assert await coord.heartbeat_once()
    for coord in coords:
        await coord.poll_workers()


async def full_round(*coords: LeaseCoordinator) -> dict[str, list[str]]:
    """Every coordinator heartbeats and polls, then each runs one lease pass in turn."""
    await beat_and_poll(*coords)
    taken: dict[str, list[str]] = {}
    for coord in coords:
        taken[coord.worker_id] = sorted(lease.shard_id for lease in await coord.take_pass())
    return taken


def held(coord: LeaseCoordinator) -> set[str]:
    return {shard_id for (_, shard_id) in coord.held}


def count_by_owner(owned: dict[str, str | None]) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for owner in owned.values():
        counts[owner] = counts.get(owner, 0) + 1
    return counts


# 1 ------------------------------------------------------------------------------------------


async def test_fencing_previous_owner_cannot_write(make_table: TableFactory) -> None:
    table_a, table_b = await make_table(), await make_table()
    [shard_id] = await create_leases(table_a, 1)
    a, rec_a = coordinator(table_a, "worker-a")
    await beat_and_poll(a)

    [lease_a] = await a.take_pass()
    assert (lease_a.owner, lease_a.counter) == ("worker-a", 1)
    assert rec_a.acquired_shards == [shard_id]

    # B takes the lease as it sees the row (an expiry or a steal): one counter bump.
    seen = await table_b.get_lease(STREAM, shard_id)
    assert seen is not None and (seen.owner, seen.counter) == ("worker-a", 1)
    lease_b = await table_b.take(seen, "worker-b")
    assert lease_b is not None and (lease_b.owner, lease_b.counter) == ("worker-b", 2)
    # A take with the same (now stale) view fails: the counter and owner moved on.
    assert await table_a.take(seen, "worker-c") is None

    cp_a = Checkpointer(table_a, lease_a, "orders")
    with pytest.raises(LeaseLostError):
        await cp_a.checkpoint("100")
    assert cp_a.checkpointed is None
    with pytest.raises(LeaseLostError):
        await table_a.checkpoint(lease_a, "101")
    row = await table_b.get_lease(STREAM, shard_id)
    assert row is not None and row.checkpoint is None

    cp_b = Checkpointer(table_b, lease_b, "orders")
    assert await cp_b.checkpoint("200") is True
    row = await table_b.get_lease(STREAM, shard_id)
    assert row is not None and (row.owner, row.counter, row.checkpoint) == ("worker-b", 2, "200")

    with pytest.raises(LeaseLostError):
        await table_a.release(lease_a)
    with pytest.raises(LeaseLostError):
        await table_a.finish(lease_a, [])
    assert await a.release(lease_a) is False  # the coordinator swallows it and forgets the lease
    assert a.held == {}
    row = await table_b.get_lease(STREAM, shard_id)
    assert row is not None and (row.owner, row.counter, row.checkpoint) == ("worker-b", 2, "200")

    # B gives it up properly: a third ownership change, a third bump.
    await table_b.release(lease_b)
    row = await table_b.get_lease(STREAM, shard_id)
    assert row is not None and (row.owner, row.counter, row.checkpoint) == (None, 3, "200")
    with pytest.raises(LeaseLostError):
        await cp_b.checkpoint("300")


async def test_coordinator_notices_fenced_lease_on_its_pass(make_table: TableFactory) -> None:
    table_a, table_b = await make_table(), await make_table()
    [shard_id] = await create_leases(table_a, 1)
    a, rec_a = coordinator(table_a, "worker-a")
    await beat_and_poll(a)
    [lease_a] = await a.take_pass()
    lost_before = events("lost")

    await table_b.heartbeat("worker-b", 0)  # B is live: its lease is not expired
    seen = await table_b.get_lease(STREAM, shard_id)
    assert seen is not None
    assert await table_b.take(seen, "worker-b") is not None

    await beat_and_poll(a)
    assert a.live == {"worker-a", "worker-b"}
    # A notices the loss; its fair share is ceil(1 / 2) = 1 but B holds only one: no steal back.
    assert await a.take_pass() == []
    assert a.held == {}
    assert (await owners(table_a)) == {shard_id: "worker-b"}
    assert rec_a.lost_shards == [shard_id]
    assert rec_a.lost[0].counter == lease_a.counter
    assert events("lost") - lost_before == 1


# 2 ------------------------------------------------------------------------------------------

SEQ_21 = "9" * 21  # lexically above SEQ_22, numerically below it
SEQ_22 = "1" + "0" * 21


def lease_table_writes() -> float:
    """Every write issued to a lease table by this process (LeaseTable counts them in this metric)."""
    return sum(sample.value for metric in REGISTRY.collect() if metric.name == "stream_worker_lease_table_writes"
               for sample in metric.samples if sample.name.endswith("_total"))


async def test_checkpointer_only_moves_forwards(table: LeaseTable) -> None:
    [shard_id] = await create_leases(table, 1)
    free = await table.get_lease(STREAM, shard_id)
    assert free is not None
    lease = await table.take(free, "worker-a")
    assert lease is not None
    cp = Checkpointer(table, lease, "orders")

    assert await cp.checkpoint(None) is False
    assert await cp.checkpoint(SEQ_21) is True
    assert await cp.checkpoint(SEQ_22) is True  # 22 digits > 21 digits, whatever the string order
    assert cp.checkpointed == SEQ_22
    writes = lease_table_writes()
    assert await cp.checkpoint(SEQ_21) is False  # lower: no-op, no write issued
    assert await cp.checkpoint(SEQ_22) is False  # equal: no-op
    assert await cp.checkpoint("5") is False
    assert lease_table_writes() == writes
    assert cp.checkpointed == SEQ_22
    row = await table.get_lease(STREAM, shard_id)
    assert row is not None and row.checkpoint == SEQ_22

    # A new owner's checkpointer starts from the row's checkpoint and also refuses to go back.
    await table.release(lease)
    row = await table.get_lease(STREAM, shard_id)
    assert row is not None
    again = await table.take(row, "worker-b")
    assert again is not None and again.checkpoint == SEQ_22
    cp_b = Checkpointer(table, again, "orders")
    assert cp_b.is_ahead(SEQ_21) is False
    assert await cp_b.checkpoint(SEQ_21) is False
    assert await cp_b.checkpoint("1" + "0" * 20 + "1") is True
    row = await table.get_lease(STREAM, shard_id)
    assert row is not None and row.checkpoint == "1" + "0" * 20 + "1"


# 3 ------------------------------------------------------------------------------------------


async def test_fair_share_three_workers_ten_leases(make_table: TableFactory) -> None:
    shared = await make_table()
    shards = await create_leases(shared, 10)
    workers = [coordinator(shared, "worker-a"), coordinator(await make_table(), "worker-b"),
               coordinator(await make_table(), "worker-c")]
    coords = [c for c, _ in workers]
    taken: dict[str, list[str]] = {c.worker_id: [] for c in coords}
    for _ in range(3):
        for worker_id, got in (await full_round(*coords)).items():
            taken[worker_id].extend(got)

    owned = await owners(shared)
    assert set(owned) == set(shards)
    assert None not in owned.values()
    counts = count_by_owner(owned)
    assert sorted(counts.values()) == [3, 3, 4]
    for coord, rec in workers:
        assert held(coord) == {s for s, o in owned.items() if o == coord.worker_id}
        assert 3 <= len(coord.held) <= 4
        # on_acquired once per lease taken (including steals), no more, and nothing lost that
        # was not stolen by someone else.
        assert sorted(rec.acquired_shards) == sorted(taken[coord.worker_id])
        assert len(set(rec.acquired_shards)) == len(rec.acquired_shards)
        assert set(rec.acquired_shards) - set(rec.lost_shards) == held(coord)
    assert sum(len(rec.acquired) for _, rec in workers) == 10 + sum(len(rec.lost) for _, rec in workers)

    # Stable: more rounds change nothing.
    before = await rows(shared)
    for _ in range(2):
        assert await full_round(*coords) == {c.worker_id: [] for c in coords}
    after = await rows(shared)
    assert {k: (v.owner, v.counter) for k, v in after.items()} == {
        k: (v.owner, v.counter) for k, v in before.items()
    }


# 4 ------------------------------------------------------------------------------------------


async def test_expiry_only_after_duration_without_heartbeat_change(make_table: TableFactory) -> None:
    shared = await make_table()
    shards = await create_leases(shared, 3)
    config = lease_cfg(max_steals_per_pass=0)  # only expiry may move leases here
    a, _ = coordinator(shared, "worker-a", config)
    b, rec_b = coordinator(await make_table(), "worker-b", config)

    await beat_and_poll(a)
    assert sorted(lease.shard_id for lease in await a.take_pass()) == shards
    assert await b.heartbeat_once()
    await b.poll_workers()
    assert await a.heartbeat_once()  # A's last heartbeat: B must see it change
    seen_from = time.monotonic()
    await b.poll_workers()
    seen_until = time.monotonic()
    assert "worker-a" in b.live
    expired_before = events("expired_taken")

    # A stops heartbeating. Until `duration` after B saw the last change, B takes nothing.
    inside = 0
    while time.monotonic() < seen_from + DURATION - 0.4:
        assert await b.heartbeat_once()
        taken_early = await b.take_pass()
        if time.monotonic() < seen_from + DURATION:  # the whole pass ran inside the window
            assert taken_early == []
            assert "worker-a" in b.live
            inside += 1
        await asyncio.sleep(0.2)
    assert inside >= 3
    assert (await owners(shared)) == {s: "worker-a" for s in shards}
    assert rec_b.acquired == []

    await asyncio.sleep(max(0.0, seen_until + DURATION + 0.05 - time.monotonic()))
    assert await b.heartbeat_once()
    taken = await b.take_pass()
    assert b.live == {"worker-b"}
    assert sorted(lease.shard_id for lease in taken) == shards
    assert all(lease.counter == 2 for lease in taken)
    assert (await owners(shared)) == {s: "worker-b" for s in shards}
    assert events("expired_taken") - expired_before == 3


# 5 ------------------------------------------------------------------------------------------


async def test_release_and_leave_hand_over_at_once(make_table: TableFactory) -> None:
    shared = await make_table()
    shards = await create_leases(shared, 6)
    a, _ = coordinator(shared, "worker-a")
    b, rec_b = coordinator(await make_table(), "worker-b", lease_cfg(max_steals_per_pass=0))

    await beat_and_poll(a)
    assert len(await a.take_pass()) == 6
    await beat_and_poll(a, b)
    assert await b.take_pass() == []  # A is live and holds everything; B may not steal here
    assert b.live == {"worker-a", "worker-b"}

    released_before = events("released")
    taken_before, expired_before = events("taken"), events("expired_taken")
    for lease in list(a.held.values()):
        assert await a.release(lease) is True
    await a.leave()
    assert a.held == {}
    assert events("released") - released_before == 6
    assert [w.worker_id for w in await shared.list_workers()] == ["worker-b"]
    after_release = await rows(shared)
    assert {k: (v.owner, v.counter) for k, v in after_release.items()} == {s: (None, 2) for s in shards}

    await b.poll_workers()
    assert b.live == {"worker-b"}
    taken = await b.take_pass()
    assert sorted(lease.shard_id for lease in taken) == shards
    # Taken as free leases in one pass: nothing waited for an expiry.
    assert events("taken") - taken_before == 6
    assert events("expired_taken") - expired_before == 0
    assert sorted(rec_b.acquired_shards) == shards
    assert {k: (v.owner, v.counter) for k, v in (await rows(shared)).items()} == {
        s: ("worker-b", 3) for s in shards
    }


# 6 ------------------------------------------------------------------------------------------


async def test_stealing_is_bounded_converges_and_does_not_thrash(make_table: TableFactory) -> None:
    shared = await make_table()
    shards = await create_leases(shared, 8)
    config = lease_cfg(max_steals_per_pass=2)
    a, rec_a = coordinator(shared, "worker-a", config)
    b, rec_b = coordinator(await make_table(), "worker-b", config)

    await beat_and_poll(a)
    assert len(await a.take_pass()) == 8
    stolen_before = events("stolen")

    await beat_and_poll(a, b)
    first = await b.take_pass()
    assert len(first) == 2
    assert all(lease.owner == "worker-b" and lease.counter == 2 for lease in first)
    assert count_by_owner(await owners(shared)) == {"worker-a": 6, "worker-b": 2}

    await beat_and_poll(a, b)
    second = await b.take_pass()
    assert len(second) == 2
    stolen = sorted(lease.shard_id for lease in first + second)
    assert len(set(stolen)) == 4
    owned = await owners(shared)
    assert count_by_owner(owned) == {"worker-a": 4, "worker-b": 4}
    assert events("stolen") - stolen_before == 4

    # A notices exactly the stolen leases at its own pass.
    assert rec_a.lost == []
    await beat_and_poll(a, b)
    assert await a.take_pass() == []
    assert sorted(rec_a.lost_shards) == stolen
    assert held(a) == {s for s, o in owned.items() if o == "worker-a"}
    assert held(b) == set(stolen)
    assert sorted(rec_b.acquired_shards) == stolen

    # The thief bumped the victim's leaseChanges once per pass that stole.
    workers = {w.worker_id: w for w in await shared.list_workers()}
    assert workers["worker-a"].lease_changes == 2
    assert workers["worker-b"].lease_changes == 0

    # No thrash: several more passes of both move nothing.
    before = {k: (v.owner, v.counter) for k, v in (await rows(shared)).items()}
    for _ in range(3):
        assert await full_round(a, b) == {"worker-a": [], "worker-b": []}
        assert await full_round(b, a) == {"worker-b": [], "worker-a": []}
    assert {k: (v.owner, v.counter) for k, v in (await rows(shared)).items()} == before
    assert sorted(rec_a.lost_shards) == stolen
    assert rec_b.lost == []
    assert events("stolen") - stolen_before == 4


# 7 ------------------------------------------------------------------------------------------


async def test_cap_limits_each_worker_and_reports_over_cap(make_table: TableFactory) -> None:
    shared = await make_table()
    shards = await create_leases(shared, 10)
    config = lease_cfg(max_leases_per_worker=2)
    coords = [coordinator(shared, "worker-a", config)[0],
              coordinator(await make_table(), "worker-b", config)[0],
              coordinator(await make_table(), "worker-c", config)[0]]
    for _ in range(3):
        await full_round(*coords)

    owned = await owners(shared)
    assert set(owned) == set(shards)
    counts = count_by_owner(owned)
    assert counts == {"worker-a": 2, "worker-b": 2, "worker-c": 2, None: 4}
    assert [len(c.held) for c in coords] == [2, 2, 2]
    assert metric("stream_worker_shards_over_cap") == 4


# 8 ------------------------------------------------------------------------------------------


class FlakyHeartbeatTable(LeaseTable):
    """A lease table whose heartbeats fail while ``down`` is set (DynamoDB unreachable)."""

    down = False

    async def heartbeat(self, worker_id: str, leases: int, stopping: bool = False) -> None:
        if self.down:
            raise EndpointConnectionError(endpoint_url="http://dynamodb.invalid")
        await super().heartbeat(worker_id, leases, stopping=stopping)


async def test_self_fencing_when_heartbeats_fail(make_table: TableFactory) -> None:
    flaky = await make_table(FlakyHeartbeatTable)
    assert isinstance(flaky, FlakyHeartbeatTable)
    shards = await create_leases(flaky, 4)
    a, rec = coordinator(flaky, "worker-a")
    safe_window = DURATION - HEARTBEAT
    assert a.safe_window == pytest.approx(safe_window)

    assert not a.renewing  # never heartbeated: not renewing, takes nothing
    assert await a.take_pass() == []
    before_good = time.monotonic()
    assert await a.heartbeat_once()
    after_good = time.monotonic()
    assert a.renewing
    assert sorted(lease.shard_id for lease in await a.take_pass()) == shards
    lost_before = events("lost")

    flaky.down = True
    # Inside the window: failed heartbeats leave every lease in place.
    while time.monotonic() < before_good + safe_window - 0.2:
        assert await a.heartbeat_once() is False
        assert a.renewing
        assert held(a) == set(shards)
        await asyncio.sleep(0.15)
    assert time.monotonic() - before_good < safe_window
    assert a.renewing
    assert await a.heartbeat_once() is False
    assert held(a) == set(shards)
    assert rec.lost == []

    await asyncio.sleep(max(0.0, after_good + safe_window + 0.02 - time.monotonic()))
    assert not a.renewing
    assert await a.heartbeat_once() is False
    assert a.held == {}
    assert sorted(rec.lost_shards) == shards
    assert events("lost") - lost_before == 4
    # It must stop before anyone else may take: strictly less than `duration` after the send.
    assert time.monotonic() - before_good < DURATION

    # Not renewing: a pass takes nothing, even though the rows still name this worker.
    assert await a.take_pass() == []
    assert a.held == {}
    assert len(rec.acquired) == 4
    assert (await owners(flaky)) == {s: "worker-a" for s in shards}

    # Once a heartbeat goes through again it renews and takes its leases back.
    flaky.down = False
    assert await a.heartbeat_once()
    assert a.renewing
    assert sorted(lease.shard_id for lease in await a.take_pass()) == shards


class HangingHeartbeatTable(LeaseTable):
    """A lease table whose heartbeats never answer while ``hang`` is set (a black-holed
    network: the SDK's own timeouts are longer than the lease duration)."""

    hang = False

    async def heartbeat(self, worker_id: str, leases: int, stopping: bool = False) -> None:
        if self.hang:
            await asyncio.sleep(60)
        await super().heartbeat(worker_id, leases, stopping=stopping)


async def test_self_fencing_when_heartbeat_hangs(make_table: TableFactory) -> None:
    hanging = await make_table(HangingHeartbeatTable)
    assert isinstance(hanging, HangingHeartbeatTable)
    shards = await create_leases(hanging, 3)
    a, rec = coordinator(hanging, "worker-a")
    stop = asyncio.Event()
    before_good = time.monotonic()
    assert await a.heartbeat_once()
    after_good = time.monotonic()
    assert sorted(lease.shard_id for lease in await a.take_pass()) == shards

    hanging.hang = True
    loop = asyncio.create_task(a.run_heartbeats(stop))
    try:
        await asyncio.sleep(max(0.0, before_good + a.safe_window - 0.15 - time.monotonic()))
        assert held(a) == set(shards)
        assert rec.lost == []
        # The hung call must not delay the fence past the safe window.
        await asyncio.sleep(max(0.0, after_good + a.safe_window + 0.1 - time.monotonic()))
        assert not a.renewing
        assert a.held == {}
        assert sorted(rec.lost_shards) == shards
        assert time.monotonic() - before_good < DURATION
    finally:
        stop.set()
        hanging.hang = False
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


class SlowFailingHeartbeatTable(LeaseTable):
    """Heartbeats fail only after ``delay`` seconds while ``down`` is set (connect timeouts)."""

    down = False
    delay = 0.0

    async def heartbeat(self, worker_id: str, leases: int, stopping: bool = False) -> None:
        if self.down:
            await asyncio.sleep(self.delay)
            raise EndpointConnectionError(endpoint_url="http://dynamodb.invalid")
        await super().heartbeat(worker_id, leases, stopping=stopping)


async def test_self_fencing_on_time_when_heartbeats_fail_slowly(make_table: TableFactory) -> None:
    # duration 2, heartbeat 0.9: the fence is due 1.1 s after the last good heartbeat was
    # sent. Failures that each take 0.5 s must not push it to the next attempt (1.9 s).
    slow = await make_table(SlowFailingHeartbeatTable)
    assert isinstance(slow, SlowFailingHeartbeatTable)
    shards = await create_leases(slow, 2)
    a, rec = coordinator(slow, "worker-a", lease_cfg(duration_seconds=2.0, heartbeat_interval_seconds=0.9))
    assert a.safe_window == pytest.approx(1.1)
    before_good = time.monotonic()
    assert await a.heartbeat_once()
    after_good = time.monotonic()
    assert len(await a.take_pass()) == 2

    slow.down, slow.delay = True, 0.5
    stop = asyncio.Event()
    loop = asyncio.create_task(a.run_heartbeats(stop))
    try:
        await asyncio.sleep(max(0.0, before_good + a.safe_window - 0.15 - time.monotonic()))
        assert held(a) == set(shards)
        await asyncio.sleep(max(0.0, after_good + a.safe_window + 0.25 - time.monotonic()))
        assert a.held == {}
        assert sorted(rec.lost_shards) == shards
    finally:
        stop.set()
        slow.down = False
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


# 9 ------------------------------------------------------------------------------------------


async def test_leader_is_smallest_live_worker(make_table: TableFactory) -> None:
    shared = await make_table()
    a, _ = coordinator(shared, "worker-a")
    b, _ = coordinator(await make_table(), "worker-b")
    c, _ = coordinator(await make_table(), "worker-c")
    await beat_and_poll(c, b, a)
    assert (a.is_leader, b.is_leader, c.is_leader) == (True, False, False)
    assert a.live == b.live == c.live == {"worker-a", "worker-b", "worker-c"}

    await a.leave()
    assert not b.is_leader  # not until its next poll
    await b.poll_workers()
    assert b.is_leader
    assert not c.is_leader
    await c.poll_workers()
    assert (b.is_leader, c.is_leader) == (True, False)
    assert b.live == c.live == {"worker-b", "worker-c"}

    # A stopping worker is not live either, so it is not leader.
    assert await b.heartbeat_once(stopping=True)
    await c.poll_workers()
    assert c.is_leader
    assert c.live == {"worker-c"}


# 10 -----------------------------------------------------------------------------------------


async def test_finished_lease_is_never_taken(make_table: TableFactory) -> None:
    shared = await make_table()
    shards = await create_leases(shared, 3)
    done = shards[0]
    row = await shared.get_lease(STREAM, done)
    assert row is not None
    lease = await shared.take(row, "worker-z")
    assert lease is not None
    await Checkpointer(shared, lease, "orders").finish([shard(7)])
    finished = await shared.get_lease(STREAM, done)
    assert finished is not None and finished.finished and finished.owner is None
    assert finished.checkpoint == SHARD_END and finished.child_shard_ids == (shard(7),)

    a, rec_a = coordinator(shared, "worker-a")
    b, rec_b = coordinator(await make_table(), "worker-b")
    for _ in range(3):
        await full_round(a, b)
    await beat_and_poll(b)
    await b.take_pass()

    assert done not in rec_a.acquired_shards + rec_b.acquired_shards
    assert done not in held(a) | held(b)
    owned = await owners(shared)
    assert owned[done] is None
    assert sorted([owned[s] for s in shards[1:]]) == ["worker-a", "worker-b"]
    row = await shared.get_lease(STREAM, done)
    assert row is not None and (row.owner, row.counter, row.checkpoint) == (None, 2, SHARD_END)

    # Alone, a worker takes every unfinished lease and still leaves the finished one.
    await a.leave()
    await b.poll_workers()
    for lease in list(b.held.values()):
        await b.release(lease)
    await beat_and_poll(b)
    taken = await b.take_pass()
    assert sorted(lease.shard_id for lease in taken) == sorted(shards[1:])
    assert (await owners(shared))[done] is None


# 11 -----------------------------------------------------------------------------------------


class FlakyTakeTable(LeaseTable):
    """Takes that fail transiently: ``throttle`` the next takes before they write, or
    ``reset_after_write`` the next ones after the write applied (the response is lost).
    ``race`` takes the lease for another worker just before this table's own write."""

    throttle = 0
    reset_after_write = 0
    race: tuple[LeaseTable, str] | None = None
    takes = 0

    async def take(self, lease: Lease, worker_id: str) -> Lease | None:
        self.takes += 1
        if self.throttle:
            self.throttle -= 1
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}},
                "UpdateItem",
            )
        if self.race is not None:
            other, other_id = self.race
            self.race = None
            assert await other.take(lease, other_id) is not None
        result = await super().take(lease, worker_id)
        if self.reset_after_write:
            self.reset_after_write -= 1
            raise ConnectionClosedError(endpoint_url="http://dynamodb.invalid")
        return result


def take_retries() -> float:
    return sum(
        metric("stream_worker_aws_retries_total", {"operation": "UpdateItem", "code": code})
        for code in ("ProvisionedThroughputExceededException", "ConnectionClosedError")
    )


async def run_taker_until(coord: LeaseCoordinator, done: Callable[[], bool]) -> None:
    """Run the taker loop until ``done()``; fail if the loop ends (a crash) first."""
    stop = asyncio.Event()
    loop = asyncio.create_task(coord.run_taker(stop))
    try:
        async with asyncio.timeout(5):
            while not done():
                assert not loop.done(), f"the taker loop ended: {loop.exception()!r}"
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(loop, timeout=2)  # a crash shows up here as its error


async def test_throttled_take_is_retried_in_place(make_table: TableFactory) -> None:
    flaky = await make_table(FlakyTakeTable)
    assert isinstance(flaky, FlakyTakeTable)
    [shard_id] = await create_leases(flaky, 1)
    a, rec = coordinator(flaky, "worker-a", lease_cfg(duration_seconds=10, heartbeat_interval_seconds=3))
    assert await a.heartbeat_once()
    retries_before = take_retries()

    flaky.throttle = 1
    await run_taker_until(a, lambda: bool(rec.acquired))

    assert flaky.takes == 2  # the throttled call, then its retry
    assert take_retries() - retries_before == 1
    assert rec.acquired_shards == [shard_id] and held(a) == {shard_id}
    row = (await rows(flaky))[shard_id]
    assert (row.owner, row.counter) == ("worker-a", 1)


async def test_take_whose_response_was_lost_is_taken_back(make_table: TableFactory) -> None:
    # The write applied but its response was lost: the retry finds its own counter bump and
    # fails the condition. The row names this worker, so its next pass takes it again.
    flaky = await make_table(FlakyTakeTable)
    assert isinstance(flaky, FlakyTakeTable)
    [shard_id] = await create_leases(flaky, 1)
    a, rec = coordinator(flaky, "worker-a", lease_cfg(duration_seconds=10, heartbeat_interval_seconds=3))
    assert await a.heartbeat_once()

    flaky.reset_after_write = 1
    await run_taker_until(a, lambda: bool(rec.acquired))

    assert flaky.takes == 3  # applied (response lost), retried (condition failed), taken back
    assert rec.acquired_shards == [shard_id] and held(a) == {shard_id}
    row = (await rows(flaky))[shard_id]
    assert (row.owner, row.counter) == ("worker-a", 2)
    assert a.held[row.key].counter == 2  # fenced writes use the counter in the table


async def test_take_lost_to_another_worker_is_not_retried(make_table: TableFactory) -> None:
    flaky = await make_table(FlakyTakeTable)
    assert isinstance(flaky, FlakyTakeTable)
    [shard_id] = await create_leases(flaky, 1)
    other = await make_table()
    await other.heartbeat("worker-b", 1)
    a, rec = coordinator(flaky, "worker-a")
    await beat_and_poll(a)
    retries_before = take_retries()

    flaky.race = (other, "worker-b")
    assert await a.take_pass() == []

    assert flaky.takes == 1  # ConditionalCheckFailedException: someone else got it
    assert take_retries() == retries_before
    assert rec.acquired == [] and a.held == {}
    row = (await rows(flaky))[shard_id]
    assert (row.owner, row.counter) == ("worker-b", 1)


class FailingNoticeTable(LeaseTable):
    """The stolen-lease notice to the victim fails (throttled, say)."""

    async def notify_worker(self, worker_id: str) -> None:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "UpdateItem")


async def test_a_failed_stolen_lease_notice_does_not_undo_the_steal(make_table: TableFactory) -> None:
    """The notice is best effort (the victim's fenced writes fail anyway): the thief keeps what
    it stole and its pass completes, instead of the taker loop crashing."""
    shared = await make_table()
    await create_leases(shared, 4)
    config = lease_cfg(max_steals_per_pass=2)
    a, rec_a = coordinator(shared, "worker-a", config)
    b, rec_b = coordinator(await make_table(FailingNoticeTable), "worker-b", config)
    await beat_and_poll(a)
    assert len(await a.take_pass()) == 4

    await beat_and_poll(a, b)
    stolen = await b.take_pass()
    assert len(stolen) == 2 and held(b) == {lease.shard_id for lease in stolen}
    assert count_by_owner(await owners(shared)) == {"worker-a": 2, "worker-b": 2}
    workers = {w.worker_id: w for w in await shared.list_workers()}
    assert workers["worker-a"].lease_changes == 0  # the notice never landed
    # The victim still finds out at its own pass (the rows say so).
    await beat_and_poll(a, b)
    await a.take_pass()
    assert sorted(rec_a.lost_shards) == sorted(lease.shard_id for lease in stolen)


async def test_take_children_takes_a_finished_parents_free_children_at_once(make_table: TableFactory) -> None:
    """At shard end the worker takes the children itself (no lease pass), but not a child a
    live worker already took, nor a merge's child whose other parent is still being read."""
    shared = await make_table()
    for shard_id in ("parent", "other-parent"):
        assert await shared.create_lease(Lease(stream_arn=STREAM, shard_id=shard_id, table="orders"))
    children = {"left": ("parent",), "right": ("parent",), "merged": ("parent", "other-parent"),
                "taken": ("parent",)}
    for shard_id, parents in children.items():
        assert await shared.create_lease(Lease(stream_arn=STREAM, shard_id=shard_id, table="orders",
                                               parent_shard_ids=parents))
    a, rec_a = coordinator(shared, "worker-a")
    b, _ = coordinator(await make_table(), "worker-b")
    await beat_and_poll(a, b)
    parent = await shared.take(await shared.get_lease(STREAM, "parent"), "worker-a")  # type: ignore[arg-type]
    assert parent is not None
    assert await shared.take(await shared.get_lease(STREAM, "taken"), "worker-b") is not None  # type: ignore[arg-type]
    await Checkpointer(shared, parent, "orders").finish(sorted(children))

    taken = await a.take_children(STREAM, "parent", sorted(children))

    assert sorted(lease.shard_id for lease in taken) == ["left", "right"]
    assert sorted(rec_a.acquired_shards) == ["left", "right"] and held(a) == {"left", "right"}
    owned = await owners(shared)
    assert (owned["left"], owned["right"], owned["taken"], owned["merged"]) == ("worker-a", "worker-a", "worker-b", None)

    # The merge's other parent ends: its finisher takes the merged child.
    other = await shared.take(await shared.get_lease(STREAM, "other-parent"), "worker-a")  # type: ignore[arg-type]
    assert other is not None
    await Checkpointer(shared, other, "orders").finish(["merged"])
    assert [lease.shard_id for lease in await a.take_children(STREAM, "other-parent", ["merged"])] == ["merged"]
    assert (await owners(shared))["merged"] == "worker-a"


async def test_take_children_takes_rows_it_just_created_without_reading_them(make_table: TableFactory) -> None:
    shared = await make_table()
    child = Lease(stream_arn=STREAM, shard_id="child", table="orders", parent_shard_ids=("parent",))
    assert await shared.create_lease(child)
    a, _ = coordinator(shared, "worker-a")
    b, _ = coordinator(await make_table(), "worker-b")
    await beat_and_poll(a, b)

    assert [lease.shard_id for lease in await a.take_children(STREAM, "parent", ["child"], [child])] == ["child"]
    # The same row as created, once more: the conditional take fails, nothing is taken twice.
    assert await b.take_children(STREAM, "parent", ["child"], [child]) == []
    assert (await owners(shared))["child"] == "worker-a" and held(b) == set()


async def test_take_children_leaves_them_to_the_pass_when_not_taking_or_at_the_cap(make_table: TableFactory) -> None:
    shared = await make_table()
    for shard_id in ("left", "right"):
        assert await shared.create_lease(Lease(stream_arn=STREAM, shard_id=shard_id, table="orders",
                                               parent_shard_ids=("parent",)))
    capped, _ = coordinator(shared, "worker-a", lease_cfg(max_leases_per_worker=1))
    assert await capped.heartbeat_once()
    assert [lease.shard_id for lease in await capped.take_children(STREAM, "parent", ["left", "right"])] == ["left"]

    stopping, rec = coordinator(await make_table(), "worker-b")
    assert await stopping.heartbeat_once()
    stopping.taking = False
    assert await stopping.take_children(STREAM, "parent", ["right"]) == [] and rec.acquired == []
    assert (await owners(shared))["right"] is None
