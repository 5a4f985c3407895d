"""In-memory fakes for unit tests: a dynamodbstreams client and a lease table.

``FakeStreamsClient`` models what the reader depends on:

* shard iterators are opaque tokens pointing at an index in a shard; ``expire_iterators()``
  invalidates every token handed out so far (GetRecords then raises
  ``ExpiredIteratorException`` for them, as AWS does after 15 minutes);
* ``trim(shard, n)`` drops the ``n`` oldest records (past the 24 h retention): asking for
  a position before the new horizon raises ``TrimmedDataAccessException``;
* ``fail_next(operation, code, status, times)`` scripts errors for the next calls of one
  operation (``GetShardIterator``, ``GetRecords``, ``DescribeStream``);
* every call is logged in ``calls`` as ``(operation, kwargs)``.

Errors are real ``botocore.exceptions.ClientError`` instances with the real codes.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from worker.leases.model import Lease
from worker.testing import make_record as make_kit_record


def client_error(code: str, operation: str, status: int = 400, message: str = "fake") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def make_record(
    sequence: int | str,
    *,
    event_name: str = "INSERT",
    keys: dict[str, Any] | None = None,
    new_image: dict[str, Any] | None = None,
    old_image: dict[str, Any] | None = None,
    view_type: str = "NEW_AND_OLD_IMAGES",
) -> dict[str, Any]:
    """A raw stream record as the SDK returns it, from plain values (``worker.testing``)."""
    record = make_kit_record(event_name, keys or {"id": f"item-{sequence}"}, new_image, old_image,
                             sequence_number=sequence, view_type=view_type, event_id=f"ev-{sequence}")
    return dict(record.raw)


@dataclass
class FakeShard:
    shard_id: str
    parent_shard_id: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    trimmed: int = 0  # number of records dropped from the front (absolute offset of records[0])
    trimmed_max: int | None = None  # largest sequence number dropped
    starting_sequence: str = "1"

    def sequences(self) -> list[int]:
        return [int(r["dynamodb"]["SequenceNumber"]) for r in self.records]


@dataclass
class _Iterator:
    shard_id: str
    offset: int  # absolute offset (including trimmed records)
    generation: int


class FakeStreamsClient:
    def __init__(self, stream_arn: str = "arn:aws:dynamodb:us-east-1:1:table/t/stream/1", *, page_size: int = 1000,
                 describe_page_size: int = 100) -> None:
        self.stream_arn = stream_arn
        self.shards: dict[str, FakeShard] = {}
        self.page_size = page_size
        self.describe_page_size = describe_page_size
        # DescribeStream's ShardFilter: "ignore" (moto, DynamoDB Local), "honor" (AWS), "refuse".
        self.shard_filter = "ignore"
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._iterators: dict[str, _Iterator] = {}
        self._generation = 0
        self._tokens = itertools.count(1)
        self._failures: dict[str, list[ClientError]] = {}

    # ---- test controls -------------------------------------------------------------
    def add_shard(self, shard_id: str, *, parent: str | None = None, records: list[dict[str, Any]] | None = None,
                  closed: bool = False) -> FakeShard:
        shard = FakeShard(shard_id, parent, list(records or []), closed)
        self.shards[shard_id] = shard
        return shard

    def append(self, shard_id: str, *records: dict[str, Any]) -> None:
        self.shards[shard_id].records.extend(records)

    def close(self, shard_id: str) -> None:
        self.shards[shard_id].closed = True

    def trim(self, shard_id: str, count: int) -> None:
        shard = self.shards[shard_id]
        dropped = shard.sequences()[:count]
        if dropped:
            shard.trimmed_max = max(dropped)
        del shard.records[:count]
        shard.trimmed += count

    def expire_iterators(self) -> None:
        self._generation += 1

    def fail_next(self, operation: str, code: str, *, status: int = 400, times: int = 1) -> None:
        self._failures.setdefault(operation, []).extend(
            client_error(code, operation, status) for _ in range(times)
        )

    def calls_of(self, operation: str) -> list[dict[str, Any]]:
        return [kwargs for op, kwargs in self.calls if op == operation]

    # ---- helpers -------------------------------------------------------------------
    def _record(self, operation: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((operation, dict(kwargs)))
        queued = self._failures.get(operation)
        if queued:
            raise queued.pop(0)

    def _shard(self, operation: str, stream_arn: str, shard_id: str) -> FakeShard:
        if stream_arn != self.stream_arn or shard_id not in self.shards:
            raise client_error("ResourceNotFoundException", operation, message=f"no shard {shard_id}")
        return self.shards[shard_id]

    def _token(self, shard: FakeShard, offset: int) -> str:
        token = f"it-{shard.shard_id}-{next(self._tokens)}"
        self._iterators[token] = _Iterator(shard.shard_id, offset, self._generation)
        return token

    # ---- the dynamodbstreams API ---------------------------------------------------
    async def get_shard_iterator(self, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        self._record("GetShardIterator", kwargs)
        shard = self._shard("GetShardIterator", kwargs["StreamArn"], kwargs["ShardId"])
        kind = kwargs["ShardIteratorType"]
        if kind == "TRIM_HORIZON":
            offset = shard.trimmed
        elif kind == "LATEST":
            offset = shard.trimmed + len(shard.records)
        elif kind in ("AFTER_SEQUENCE_NUMBER", "AT_SEQUENCE_NUMBER"):
            wanted = int(kwargs["SequenceNumber"])
            sequences = shard.sequences()
            # The record right after (or at) the position was dropped: the data is trimmed.
            if shard.trimmed_max is not None and (
                wanted < shard.trimmed_max or (kind == "AT_SEQUENCE_NUMBER" and wanted == shard.trimmed_max)
            ):
                raise client_error("TrimmedDataAccessException", "GetShardIterator")
            if kind == "AFTER_SEQUENCE_NUMBER":
                index = next((i for i, s in enumerate(sequences) if s > wanted), len(sequences))
            else:
                index = next((i for i, s in enumerate(sequences) if s >= wanted), len(sequences))
            offset = shard.trimmed + index
        else:
            raise client_error("ValidationException", "GetShardIterator")
        return {"ShardIterator": self._token(shard, offset)}

    async def get_records(self, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        self._record("GetRecords", kwargs)
        token = kwargs["ShardIterator"]
        iterator = self._iterators.get(token)
        if iterator is None:
            raise client_error("ValidationException", "GetRecords", message=f"unknown iterator {token}")
        if iterator.generation != self._generation:
            raise client_error("ExpiredIteratorException", "GetRecords", message="Iterator expired")
        shard = self._shard("GetRecords", self.stream_arn, iterator.shard_id)
        if iterator.offset < shard.trimmed:
            raise client_error("TrimmedDataAccessException", "GetRecords")
        start = iterator.offset - shard.trimmed
        limit = min(int(kwargs.get("Limit", 1000)), self.page_size)
        records = shard.records[start : start + limit]
        end = start + len(records)
        response: dict[str, Any] = {"Records": [dict(r) for r in records]}
        if not (shard.closed and end >= len(shard.records)):
            response["NextShardIterator"] = self._token(shard, shard.trimmed + end)
        return response

    async def describe_stream(self, **kwargs: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        self._record("DescribeStream", kwargs)
        if kwargs["StreamArn"] != self.stream_arn:
            raise client_error("ResourceNotFoundException", "DescribeStream")
        ids = list(self.shards)
        shard_filter = kwargs.get("ShardFilter")
        if shard_filter is not None and self.shard_filter == "refuse":
            raise client_error("ValidationException", "DescribeStream", message="unknown parameter ShardFilter")
        if shard_filter is not None and self.shard_filter == "honor":  # AWS: only that shard's children
            ids = [i for i in ids if self.shards[i].parent_shard_id == shard_filter["ShardId"]]
        start = 0
        if "ExclusiveStartShardId" in kwargs:
            start = ids.index(kwargs["ExclusiveStartShardId"]) + 1
        chunk = ids[start : start + self.describe_page_size]
        shards = []
        for shard_id in chunk:
            shard = self.shards[shard_id]
            sequence_range: dict[str, str] = {"StartingSequenceNumber": shard.starting_sequence}
            if shard.closed:
                sequence_range["EndingSequenceNumber"] = str(max(shard.sequences(), default=1))
            raw: dict[str, Any] = {"ShardId": shard_id, "SequenceNumberRange": sequence_range}
            if shard.parent_shard_id:
                raw["ParentShardId"] = shard.parent_shard_id
            shards.append(raw)
        description: dict[str, Any] = {
            "StreamArn": self.stream_arn,
            "StreamStatus": "ENABLED",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "Shards": shards,
        }
        if start + len(chunk) < len(ids):
            description["LastEvaluatedShardId"] = chunk[-1]
        return {"StreamDescription": description}


class FakeLeaseTable:
    """Just enough of LeaseTable for the consumer's parent wait and for discovery:
    ``get_lease`` returns what the test put in ``leases``; ``polled`` is set once
    ``get_lease`` ran ``notify_after`` times; ``created``/``deleted`` log shard ids."""

    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], Lease] = {}
        self.get_calls: list[tuple[str, str]] = []
        self.notify_after = 1
        self.polled = asyncio.Event()
        self.created: list[str] = []
        self.deleted: list[str] = []

    def put(self, lease: Lease) -> None:
        self.leases[lease.key] = lease

    async def get_lease(self, stream_arn: str, shard_id: str) -> Lease | None:
        await asyncio.sleep(0)
        self.get_calls.append((stream_arn, shard_id))
        if len(self.get_calls) >= self.notify_after:
            self.polled.set()
        return self.leases.get((stream_arn, shard_id))

    # ---- what discovery uses ---------------------------------------------------------
    async def list_leases(self, stream_arn: str) -> list[Lease]:
        await asyncio.sleep(0)
        return [lease for (arn, _), lease in self.leases.items() if arn == stream_arn]

    async def create_lease(self, lease: Lease) -> bool:
        await asyncio.sleep(0)
        if lease.key in self.leases:
            return False  # conditional put: attribute_not_exists(pk)
        self.leases[lease.key] = lease
        self.created.append(lease.shard_id)
        return True

    async def delete_lease(self, lease: Lease) -> None:
        await asyncio.sleep(0)
        self.leases.pop(lease.key, None)
        self.deleted.append(lease.shard_id)
