"""The in-memory DynamoDB Streams model behind the simulator (no networking here).

``StreamModel`` holds streams, shards, records and the switchable behaviour, and
answers protocol operations (``handle(service, operation, body)``) with either a
dict or a ready-made JSON string. Every public method takes one re-entrant lock,
so tests may call the control API from any thread while the server thread runs.

Layout chosen so thousands of shards stay cheap:

* each shard keeps three parallel lists (sequence numbers as ints, write times,
  pre-serialized record JSON); reads are a ``bisect`` plus a slice and a join;
* retention trimming is lazy and per shard (``bisect`` on the write times);
* routing keeps the open shards sorted by the low end of their hash range, so a
  key's shard is one ``bisect`` away; the routing table is rebuilt only when the
  shard topology changes (split / rotate / disable).
"""

from __future__ import annotations

import base64
import bisect
import collections
import hashlib
import json
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeSerializer

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
HASH_SPACE = 1 << 64
MAX_RESPONSE_BYTES = 1024 * 1024

STREAMS_SERVICE = "DynamoDBStreams_20120810"
DYNAMODB_SERVICE = "DynamoDB_20120810"
STREAMS_OPERATIONS = ("ListStreams", "DescribeStream", "GetShardIterator", "GetRecords")

DDB_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
CORAL_VALIDATE_PREFIX = "com.amazon.coral.validate#"
CORAL_SERVICE_PREFIX = "com.amazon.coral.service#"

VIEW_TYPES = ("KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES")
ITERATOR_TYPES = ("TRIM_HORIZON", "LATEST", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER")
_TYPE_TAGS = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})
_ITERATOR_MAGIC = "simv1"
ITERATOR_PREFIX = base64.urlsafe_b64encode(f"{_ITERATOR_MAGIC}|".encode()).decode()  # "c2ltdjF8"

# Codes answered with HTTP 500 (everything else is a 400, as DynamoDB does).
SERVER_ERROR_CODES = frozenset({"InternalServerError", "InternalFailure", "ServiceUnavailable"})
# Pseudo error code for fail_next(): drop the connection without any response.
DISCONNECT = "DISCONNECT"

_serializer = TypeSerializer()


class SimError(Exception):
    """An error the wire layer turns into ``{"__type": ..., "message": ...}``."""

    def __init__(self, code: str, message: str = "", *, status: int | None = None, prefix: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message or code
        self.status = status if status is not None else (500 if code in SERVER_ERROR_CODES else 400)
        if prefix is None:
            if code == "ValidationException":
                prefix = CORAL_VALIDATE_PREFIX
            elif code in ("UnknownOperationException", "SerializationException", "MissingAuthenticationTokenException"):
                prefix = CORAL_SERVICE_PREFIX
            else:
                prefix = DDB_ERROR_PREFIX
        self.type = prefix + code

    def body(self) -> dict[str, str]:
        return {"__type": self.type, "message": self.message}


def _validation(message: str) -> SimError:
    return SimError("ValidationException", message)


def _not_found(message: str) -> SimError:
    return SimError("ResourceNotFoundException", "Requested resource not found: " + message)


# --------------------------------------------------------------------------- typing values


def _json_default(value: Any) -> Any:
    if isinstance(value, Binary):
        value = value.value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _floats_to_decimal(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _floats_to_decimal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats_to_decimal(v) for v in value]
    if isinstance(value, tuple):
        return [_floats_to_decimal(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {_floats_to_decimal(v) for v in value}
    return value


def is_typed(image: Mapping[str, Any]) -> bool:
    """True if every value already is a DynamoDB attribute value like ``{"S": "x"}``."""
    return all(isinstance(v, dict) and len(v) == 1 and next(iter(v)) in _TYPE_TAGS for v in image.values())


def to_typed(image: Mapping[str, Any] | None, typed: bool | None = None) -> dict[str, Any] | None:
    """Plain Python values -> DynamoDB JSON (floats become Decimal first); typed maps pass through."""
    if image is None:
        return None
    if typed is None:
        typed = is_typed(image)
    if typed:
        return dict(image)
    return {name: _serializer.serialize(_floats_to_decimal(value)) for name, value in image.items()}


def key_hash(typed_value: Any) -> int:
    """A stable 64-bit hash of one typed partition key value (the same across processes)."""
    digest = hashlib.md5(json.dumps(typed_value, sort_keys=True, default=_json_default).encode()).digest()
    return int.from_bytes(digest[:8], "big")


# --------------------------------------------------------------------------- model objects


class Shard:
    __slots__ = (
        "shard_id",
        "parent_id",
        "lo",
        "hi",
        "start_seq",
        "end_seq",
        "created_at",
        "closed_at",
        "seqs",
        "times",
        "blobs",
        "last_seq",
        "last_time",
        "trimmed_upto",
        "written",
        "read_calls",
    )

    def __init__(self, shard_id: str, parent_id: str | None, lo: int, hi: int, start_seq: int, created_at: float):
        self.shard_id = shard_id
        self.parent_id = parent_id
        self.lo = lo  # hash range [lo, hi) this shard receives while open
        self.hi = hi
        self.start_seq = start_seq
        self.end_seq: int | None = None  # set when the shard is closed
        self.created_at = created_at
        self.closed_at: float | None = None
        self.seqs: list[int] = []  # retained records, parallel lists
        self.times: list[float] = []
        self.blobs: list[str] = []
        self.last_seq: int | None = None  # survives trimming
        self.last_time: float | None = None
        self.trimmed_upto = 0  # highest sequence number trimmed away (0: none)
        self.written = 0
        self.read_calls: collections.deque[float] = collections.deque()

    @property
    def is_open(self) -> bool:
        return self.end_seq is None

    def expired(self, cutoff: float) -> bool:
        """Closed, closed before the retention cutoff and holding no retained record."""
        return (
            self.end_seq is not None
            and self.closed_at is not None
            and self.closed_at <= cutoff
            and (self.last_time is None or self.last_time <= cutoff)
        )

    def trim(self, cutoff: float) -> int:
        if not self.times or self.times[0] > cutoff:
            return 0
        k = bisect.bisect_right(self.times, cutoff)
        self.trimmed_upto = self.seqs[k - 1]
        del self.seqs[:k], self.times[:k], self.blobs[:k]
        return k

    def describe(self) -> dict[str, Any]:
        rng: dict[str, str] = {"StartingSequenceNumber": str(self.start_seq)}
        if self.end_seq is not None:
            rng["EndingSequenceNumber"] = str(self.end_seq)
        out: dict[str, Any] = {"ShardId": self.shard_id, "SequenceNumberRange": rng}
        if self.parent_id is not None:
            out["ParentShardId"] = self.parent_id
        return out


class Stream:
    def __init__(
        self,
        arn: str,
        label: str,
        table_name: str,
        key_schema: list[dict[str, str]],
        attribute_types: dict[str, str],
        view_type: str,
        created_at: float,
    ) -> None:
        self.arn = arn
        self.label = label
        self.table_name = table_name
        self.key_schema = key_schema
        self.attribute_types = attribute_types
        self.hash_key = next(k["AttributeName"] for k in key_schema if k["KeyType"] == "HASH")
        self.view_type = view_type
        self.created_at = created_at
        self.status = "ENABLED"
        self.shards: dict[str, Shard] = {}
        self.order: list[Shard] = []  # creation order: parents always before children
        self.position: dict[str, int] = {}
        self.open_los: list[int] = []  # routing table: open shards sorted by hash-range start
        self.open_shards: list[Shard] = []
        self.shard_counter = 0
        self.salt = zlib.crc32(arn.encode())

    def add_shard(self, shard: Shard) -> None:
        self.position[shard.shard_id] = len(self.order)
        self.order.append(shard)
        self.shards[shard.shard_id] = shard

    def rebuild_routing(self) -> None:
        opened = sorted((s for s in self.order if s.is_open), key=lambda s: s.lo)
        self.open_shards = opened
        self.open_los = [s.lo for s in opened]

    def route(self, h: int) -> Shard:
        if not self.open_shards:
            raise ValueError(f"stream {self.arn} has no open shard (disabled?)")
        i = bisect.bisect_right(self.open_los, h) - 1
        return self.open_shards[max(i, 0)]


# --------------------------------------------------------------------------- the model


_KNOBS = (
    "retention_seconds",
    "iterator_ttl_seconds",
    "throttle_enabled",
    "max_get_records_per_shard_per_second",
    "latency_seconds",
    "latency_jitter_seconds",
    "error_rate",
    "empty_read_rate",
    "auto_rotate_seconds",
    "eager_shard_end",
    "max_response_bytes",
)


class StreamModel:
    """All simulator state and the protocol operations; see the package docstring for the knobs."""

    def __init__(
        self,
        *,
        streams: Mapping[str, int] | Iterable[tuple[str, int]] | None = None,
        retention_seconds: float = 24 * 3600.0,
        iterator_ttl_seconds: float = 900.0,
        throttle_enabled: bool = True,
        max_get_records_per_shard_per_second: int = 5,
        latency_seconds: float = 0.0,
        latency_jitter_seconds: float = 0.0,
        error_rate: float = 0.0,
        empty_read_rate: float = 0.0,
        auto_rotate_seconds: float | None = None,
        eager_shard_end: bool = True,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        start_time: float | None = None,
        seq_start: int = 10**20,
        seq_jitter: int = 100,
        seed: int | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self.retention_seconds = float(retention_seconds)
        self.iterator_ttl_seconds = float(iterator_ttl_seconds)
        self.throttle_enabled = bool(throttle_enabled)
        self.max_get_records_per_shard_per_second = int(max_get_records_per_shard_per_second)
        self.latency_seconds = float(latency_seconds)
        self.latency_jitter_seconds = float(latency_jitter_seconds)
        self.error_rate = float(error_rate)
        self.empty_read_rate = float(empty_read_rate)
        self.auto_rotate_seconds = auto_rotate_seconds
        self.eager_shard_end = bool(eager_shard_end)
        self.max_response_bytes = int(max_response_bytes)
        # Clock: real time plus an offset, or a manual clock when start_time is given.
        self._manual_time: float | None = start_time
        self._offset = 0.0
        if seq_start < 10**20:
            # botocore validates SequenceNumber with a minimum length of 21 characters.
            raise ValueError("seq_start must have at least 21 digits (botocore rejects shorter SequenceNumbers)")
        self._seq = int(seq_start)
        self._seq_jitter = max(1, int(seq_jitter))
        self._rng = random.Random(seed)
        self._streams: dict[str, Stream] = {}  # arn -> stream, creation order
        self._tables: dict[str, Stream] = {}  # table name -> latest stream
        self._failures: collections.deque[list[Any]] = collections.deque()
        self._stats: dict[str, dict[str, Any]] = {}
        self._counters = {"records_written": 0, "records_returned": 0, "forwarded": 0}
        if streams:
            items = streams.items() if isinstance(streams, Mapping) else streams
            for table, count in items:
                self.create_stream(table, shards=int(count))

    # ----------------------------------------------------------------- clock

    def now(self) -> float:
        """The simulated clock (epoch seconds): real time + advance() offsets, or manual."""
        if self._manual_time is not None:
            return self._manual_time
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the simulated clock forward; returns the new now()."""
        if seconds < 0:
            raise ValueError("the simulated clock only moves forward")
        with self._lock:
            if self._manual_time is not None:
                self._manual_time += seconds
            else:
                self._offset += seconds
            return self.now()

    # ----------------------------------------------------------------- knobs

    def configure(self, **knobs: Any) -> None:
        """Set any knob by name (the constructor's keyword names); unknown names raise."""
        unknown = set(knobs) - set(_KNOBS)
        if unknown:
            raise ValueError(f"unknown simulator knob(s): {sorted(unknown)}; known: {list(_KNOBS)}")
        with self._lock:
            for name, value in knobs.items():
                setattr(self, name, value)

    def knobs(self) -> dict[str, Any]:
        with self._lock:
            return {name: getattr(self, name) for name in _KNOBS}

    def set_throttle(self, enabled: bool | None = None, per_shard_per_second: int | None = None) -> None:
        """Switch the GetRecords per-shard rate limit on/off and/or change the limit."""
        with self._lock:
            if enabled is not None:
                self.throttle_enabled = bool(enabled)
            if per_shard_per_second is not None:
                self.max_get_records_per_shard_per_second = int(per_shard_per_second)
            for stream in self._streams.values():
                for shard in stream.order:
                    shard.read_calls.clear()

    def set_faults(
        self,
        *,
        latency_seconds: float | None = None,
        latency_jitter_seconds: float | None = None,
        error_rate: float | None = None,
        empty_read_rate: float | None = None,
    ) -> None:
        with self._lock:
            if latency_seconds is not None:
                self.latency_seconds = float(latency_seconds)
            if latency_jitter_seconds is not None:
                self.latency_jitter_seconds = float(latency_jitter_seconds)
            if error_rate is not None:
                self.error_rate = float(error_rate)
            if empty_read_rate is not None:
                self.empty_read_rate = float(empty_read_rate)

    def fail_next(
        self, n: int = 1, code: str = "InternalServerError", *, operation: str | None = None, message: str | None = None
    ) -> None:
        """Fail the next ``n`` simulated calls (of ``operation`` only, if given) with ``code``.

        ``code="DISCONNECT"`` drops the connection without a response instead.
        Entries queue up; a call consumes the first entry that matches it.
        """
        if n <= 0:
            return
        with self._lock:
            self._failures.append([int(n), code, operation, message])

    def clear_faults(self) -> None:
        with self._lock:
            self._failures.clear()
            self.error_rate = 0.0
            self.latency_seconds = 0.0
            self.latency_jitter_seconds = 0.0
            self.empty_read_rate = 0.0

    def pick_fault(self, operation: str) -> tuple[str, str] | None:
        """The wire layer asks this once per simulated call: (code, message) to fail with, or None."""
        with self._lock:
            for entry in self._failures:
                if entry[2] is None or entry[2] == operation:
                    entry[0] -= 1
                    if entry[0] <= 0:
                        self._failures.remove(entry)
                    return entry[1], entry[3] or f"injected {entry[1]}"
            if self.error_rate > 0 and self._rng.random() < self.error_rate:
                return "InternalServerError", "Internal server error (injected)"
            return None

    def pick_latency(self) -> float:
        with self._lock:
            latency = self.latency_seconds
            if self.latency_jitter_seconds > 0:
                latency += self._rng.uniform(0, self.latency_jitter_seconds)
            return latency

    # ----------------------------------------------------------------- stats

    def _op_stats(self, operation: str) -> dict[str, Any]:
        stats = self._stats.get(operation)
        if stats is None:
            stats = self._stats[operation] = {"calls": 0, "errors": 0, "error_codes": {}}
        return stats

    def count_call(self, operation: str) -> None:
        with self._lock:
            self._op_stats(operation)["calls"] += 1

    def count_error(self, operation: str, code: str) -> None:
        with self._lock:
            stats = self._op_stats(operation)
            stats["errors"] += 1
            stats["error_codes"][code] = stats["error_codes"].get(code, 0) + 1

    def count_forwarded(self) -> None:
        with self._lock:
            self._counters["forwarded"] += 1

    def stats(self) -> dict[str, Any]:
        """{"operations": {op: {"calls", "errors", "error_codes": {code: n}}}, "records_written",
        "records_returned", "forwarded"} — a deep copy."""
        with self._lock:
            return {
                "operations": {
                    op: {"calls": s["calls"], "errors": s["errors"], "error_codes": dict(s["error_codes"])}
                    for op, s in self._stats.items()
                },
                **self._counters,
            }

    def calls(self, operation: str) -> int:
        with self._lock:
            return int(self._stats.get(operation, {}).get("calls", 0))

    def errors(self, operation: str, code: str | None = None) -> int:
        with self._lock:
            stats = self._stats.get(operation)
            if not stats:
                return 0
            return int(stats["errors"] if code is None else stats["error_codes"].get(code, 0))

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()
            for name in self._counters:
                self._counters[name] = 0

    # ----------------------------------------------------------------- topology control

    def _next_seq(self) -> int:
        self._seq += 1 + (self._rng.randrange(self._seq_jitter) if self._seq_jitter > 1 else 0)
        return self._seq

    def _new_shard(self, stream: Stream, parent: Shard | None, lo: int, hi: int, now: float) -> Shard:
        # shardId-<creation ms, 20 digits>-<8 hex>, unique across streams (the suffix is salted by the ARN).
        while True:
            stream.shard_counter += 1
            suffix = (stream.shard_counter * 2654435761 + stream.salt) & 0xFFFFFFFF
            shard_id = "shardId-%020d-%08x" % (int(now * 1000), suffix)
            if shard_id not in stream.shards:
                break
        shard = Shard(shard_id, parent.shard_id if parent else None, lo, hi, self._next_seq(), now)
        stream.add_shard(shard)
        return shard

    def _close(self, shard: Shard, now: float) -> None:
        if shard.end_seq is None:
            shard.end_seq = shard.last_seq if shard.last_seq is not None else shard.start_seq
            shard.closed_at = now

    def _stream(self, stream: str) -> Stream:
        """A stream by ARN, or the latest stream of a table by table name (control API)."""
        found = self._streams.get(stream) or self._tables.get(stream)
        if found is None:
            raise KeyError(f"unknown stream or table {stream!r}")
        return found

    def create_stream(
        self,
        table_name: str,
        shards: int = 1,
        *,
        key_schema: Sequence[str] | Sequence[Mapping[str, str]] = ("pk",),
        attribute_types: Mapping[str, str] | None = None,
        view_type: str = "NEW_AND_OLD_IMAGES",
    ) -> str:
        """Create (or re-enable with a new ARN) the stream of a simulated table; returns the ARN.

        ``key_schema``: attribute names (first HASH, second RANGE) or the AWS KeySchema list.
        A table's previous stream, if any, is disabled first (all its shards closed).
        """
        if shards < 1:
            raise ValueError("a stream needs at least one shard")
        if view_type not in VIEW_TYPES:
            raise ValueError(f"view_type must be one of {VIEW_TYPES}")
        schema: list[dict[str, str]] = []
        entries: Sequence[str | Mapping[str, str]] = key_schema
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                schema.append({"AttributeName": entry, "KeyType": "HASH" if i == 0 else "RANGE"})
            else:
                schema.append({"AttributeName": entry["AttributeName"], "KeyType": entry["KeyType"]})
        if not schema or sum(1 for k in schema if k["KeyType"] == "HASH") != 1:
            raise ValueError("key_schema needs exactly one HASH key")
        types = {k["AttributeName"]: (attribute_types or {}).get(k["AttributeName"], "S") for k in schema}
        with self._lock:
            old = self._tables.get(table_name)
            if old is not None and old.status == "ENABLED":
                self._disable(old)
            now = self.now()
            # A label that is unique even for streams created within the same millisecond.
            label_time = now
            label = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(label_time)) + ".%03d" % (int(label_time * 1000) % 1000)
            arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table_name}/stream/{label}"
            while arn in self._streams:
                label_time += 0.001
                label = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(label_time)) + ".%03d" % (
                    int(label_time * 1000) % 1000
                )
                arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table_name}/stream/{label}"
            stream = Stream(arn, label, table_name, schema, types, view_type, now)
            width = HASH_SPACE // shards
            for i in range(shards):
                lo = i * width
                hi = HASH_SPACE if i == shards - 1 else (i + 1) * width
                self._new_shard(stream, None, lo, hi, now)
            stream.rebuild_routing()
            self._streams[arn] = stream
            self._tables[table_name] = stream
            return arn

    def _disable(self, stream: Stream) -> None:
        now = self.now()
        for shard in stream.order:
            self._close(shard, now)
        stream.status = "DISABLED"
        stream.rebuild_routing()

    def disable_stream(self, table_name: str) -> str:
        """Disable a table's stream: status DISABLED, every shard closed (still readable)."""
        with self._lock:
            stream = self._stream(table_name)
            self._disable(stream)
            return stream.arn

    def stream_arn(self, table_name: str) -> str:
        with self._lock:
            return self._stream(table_name).arn

    def _split(self, stream: Stream, shard: Shard, now: float) -> tuple[Shard, Shard]:
        if not shard.is_open:
            raise ValueError(f"shard {shard.shard_id} is closed")
        if shard.hi - shard.lo < 2:
            raise ValueError(f"shard {shard.shard_id} hash range too small to split")
        self._close(shard, now)
        mid = shard.lo + (shard.hi - shard.lo) // 2
        a = self._new_shard(stream, shard, shard.lo, mid, now)
        b = self._new_shard(stream, shard, mid, shard.hi, now)
        stream.rebuild_routing()
        return a, b

    def _rotate(self, stream: Stream, shard: Shard, now: float, rebuild: bool = True) -> Shard:
        if not shard.is_open:
            raise ValueError(f"shard {shard.shard_id} is closed")
        self._close(shard, now)
        child = self._new_shard(stream, shard, shard.lo, shard.hi, now)
        if rebuild:
            stream.rebuild_routing()
        return child

    def _shard(self, stream: Stream, shard_id: str) -> Shard:
        shard = stream.shards.get(shard_id)
        if shard is None:
            raise KeyError(f"unknown shard {shard_id!r} in {stream.arn}")
        return shard

    def split_shard(self, stream: str, shard_id: str) -> tuple[str, str]:
        """Close an open shard and create two children splitting its hash range; returns their ids."""
        with self._lock:
            s = self._stream(stream)
            a, b = self._split(s, self._shard(s, shard_id), self.now())
            return a.shard_id, b.shard_id

    def rotate_shard(self, stream: str, shard_id: str) -> str:
        """Close an open shard and create one child with the same hash range; returns its id."""
        with self._lock:
            s = self._stream(stream)
            return self._rotate(s, self._shard(s, shard_id), self.now()).shard_id

    def rotate_all(self, stream: str) -> list[str]:
        """Rotate every open shard of a stream (as DynamoDB does every few hours); returns the new ids."""
        with self._lock:
            s = self._stream(stream)
            now = self.now()
            children = [self._rotate(s, shard, now, rebuild=False).shard_id for shard in list(s.open_shards)]
            s.rebuild_routing()
            return children

    def _maintain_shard(self, stream: Stream, shard: Shard, now: float) -> None:
        shard.trim(now - self.retention_seconds)
        if self.auto_rotate_seconds is not None and shard.is_open and stream.status == "ENABLED":
            if now - shard.created_at >= self.auto_rotate_seconds:
                self._rotate(stream, shard, now)

    def _maintain_stream(self, stream: Stream, now: float) -> None:
        if self.auto_rotate_seconds is not None and stream.status == "ENABLED":
            due = [s for s in stream.open_shards if now - s.created_at >= self.auto_rotate_seconds]
            for shard in due:
                self._rotate(stream, shard, now, rebuild=False)
            if due:
                stream.rebuild_routing()

    # ----------------------------------------------------------------- writing records

    def shard_for_key(self, stream: str, keys: Mapping[str, Any]) -> str:
        """The open shard a key routes to right now."""
        with self._lock:
            s = self._stream(stream)
            typed = to_typed(keys) or {}
            return s.route(self._key_hash(s, typed)).shard_id

    @staticmethod
    def _key_hash(stream: Stream, typed_keys: Mapping[str, Any]) -> int:
        if stream.hash_key not in typed_keys:
            raise ValueError(f"keys {list(typed_keys)} lack the partition key {stream.hash_key!r}")
        return key_hash(typed_keys[stream.hash_key])

    def put_record(
        self,
        table_name: str,
        keys: Mapping[str, Any],
        new_image: Mapping[str, Any] | None = None,
        old_image: Mapping[str, Any] | None = None,
        event_name: str | None = None,
        shard_id: str | None = None,
        *,
        typed: bool | None = None,
    ) -> tuple[str, str]:
        """Append one change record; returns (shard_id, sequence_number).

        Values are plain Python (typed with boto3's TypeSerializer, floats via Decimal) or
        already DynamoDB-typed (auto-detected, or force with ``typed``). Key attributes are
        merged into the images. ``event_name`` defaults to INSERT (new only), MODIFY (both)
        or REMOVE (old only). The record goes to the open shard its partition key hashes
        to, or to ``shard_id`` (which must be open).
        """
        with self._lock:
            return self._put(table_name, keys, new_image, old_image, event_name, shard_id, typed)

    def put_records(self, table_name: str, entries: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
        """Bulk ``put_record``: each entry holds put_record's keyword arguments (keys, new_image, ...)."""
        with self._lock:
            return [
                self._put(
                    table_name,
                    e["keys"],
                    e.get("new_image"),
                    e.get("old_image"),
                    e.get("event_name"),
                    e.get("shard_id"),
                    e.get("typed"),
                )
                for e in entries
            ]

    def _put(
        self,
        table_name: str,
        keys: Mapping[str, Any],
        new_image: Mapping[str, Any] | None,
        old_image: Mapping[str, Any] | None,
        event_name: str | None,
        shard_id: str | None,
        typed: bool | None,
    ) -> tuple[str, str]:
        stream = self._tables.get(table_name)
        if stream is None:
            raise KeyError(f"unknown simulated table {table_name!r}")
        if stream.status != "ENABLED":
            raise ValueError(f"the stream of {table_name!r} is disabled")
        keys_t = to_typed(keys, typed) or {}
        new_t = to_typed(new_image, typed)
        old_t = to_typed(old_image, typed)
        if new_t is not None:
            new_t = {**keys_t, **new_t}
        if old_t is not None:
            old_t = {**keys_t, **old_t}
        if event_name is None:
            event_name = "MODIFY" if (new_t is not None and old_t is not None) else ("REMOVE" if new_t is None else "INSERT")
        if event_name not in ("INSERT", "MODIFY", "REMOVE"):
            raise ValueError(f"bad event_name {event_name!r}")
        now = self.now()
        if shard_id is not None:
            shard = self._shard(stream, shard_id)
            self._maintain_shard(stream, shard, now)
            if not shard.is_open:
                raise ValueError(f"shard {shard_id} is closed")
        else:
            shard = stream.route(self._key_hash(stream, keys_t))
            self._maintain_shard(stream, shard, now)
            if not shard.is_open:  # auto-rotated just now
                shard = stream.route(self._key_hash(stream, keys_t))
        seq = self._next_seq()
        t = now if shard.last_time is None or now >= shard.last_time else shard.last_time
        keys_json = _dumps(keys_t)
        ddb: dict[str, Any] = {"ApproximateCreationDateTime": int(t), "Keys": keys_t}
        view = stream.view_type
        size = len(keys_json)
        if new_t is not None and view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"):
            ddb["NewImage"] = new_t
            size += len(_dumps(new_t))
        if old_t is not None and view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"):
            ddb["OldImage"] = old_t
            size += len(_dumps(old_t))
        ddb["SequenceNumber"] = str(seq)
        ddb["SizeBytes"] = size
        ddb["StreamViewType"] = view
        record = {
            "eventID": uuid.UUID(int=self._rng.getrandbits(128)).hex,
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": REGION,
            "dynamodb": ddb,
        }
        shard.seqs.append(seq)
        shard.times.append(t)
        shard.blobs.append(_dumps(record))
        shard.last_seq = seq
        shard.last_time = t
        shard.written += 1
        self._counters["records_written"] += 1
        return shard.shard_id, str(seq)

    # ----------------------------------------------------------------- inspection

    def shards(self, stream: str, *, include_expired: bool = False) -> list[dict[str, Any]]:
        """DescribeStream-shaped shard dicts (plus "Open", "Records" retained, "Written" total)."""
        with self._lock:
            s = self._stream(stream)
            now = self.now()
            self._maintain_stream(s, now)
            cutoff = now - self.retention_seconds
            out = []
            for shard in s.order:
                if not include_expired and shard.expired(cutoff):
                    continue
                shard.trim(cutoff)
                d = shard.describe()
                d.update(Open=shard.is_open, Records=len(shard.seqs), Written=shard.written)
                out.append(d)
            return out

    def records(self, stream: str, shard_id: str) -> list[dict[str, Any]]:
        """The retained records of one shard, as GetRecords would return them (wire JSON)."""
        with self._lock:
            s = self._stream(stream)
            shard = self._shard(s, shard_id)
            shard.trim(self.now() - self.retention_seconds)
            return [json.loads(blob) for blob in shard.blobs]

    def tables(self) -> list[str]:
        with self._lock:
            return list(self._tables)

    # ----------------------------------------------------------------- protocol

    def owns(self, service: str, operation: str, body: Mapping[str, Any]) -> bool:
        """Whether a request is about simulated resources (else it can go upstream)."""
        with self._lock:
            if service == STREAMS_SERVICE:
                if operation == "ListStreams":
                    return body.get("TableName") is None or body.get("TableName") in self._tables
                if operation in ("DescribeStream", "GetShardIterator"):
                    return body.get("StreamArn") in self._streams
                if operation == "GetRecords":
                    try:
                        self._parse_iterator(body.get("ShardIterator"))
                    except SimError:
                        return False
                    return True
                return False
            if service == DYNAMODB_SERVICE and operation == "DescribeTable":
                return body.get("TableName") in self._tables
            return False

    def handle(self, service: str, operation: str, body: Mapping[str, Any]) -> dict[str, Any] | str:
        """Answer one simulated call: a response dict, or a JSON string; raises SimError."""
        handler: Callable[[Mapping[str, Any]], dict[str, Any] | str] | None
        if service == STREAMS_SERVICE:
            operations: dict[str, Callable[[Mapping[str, Any]], dict[str, Any] | str]] = {
                "ListStreams": self._list_streams,
                "DescribeStream": self._describe_stream,
                "GetShardIterator": self._get_shard_iterator,
                "GetRecords": self._get_records,
            }
            handler = operations.get(operation)
        elif service == DYNAMODB_SERVICE:
            handler = self._describe_table if operation == "DescribeTable" else None
            if handler is None:
                raise SimError(
                    "UnknownOperationException",
                    f"the stream simulator answers only DescribeTable of simulated tables, not {operation} "
                    "(start it with upstream_url to forward everything else)",
                )
        else:
            handler = None
        if handler is None:
            raise SimError("UnknownOperationException", f"unknown operation {service}.{operation}")
        with self._lock:
            return handler(body)

    @staticmethod
    def _limit(body: Mapping[str, Any], default: int, maximum: int) -> int:
        limit = body.get("Limit", default)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= maximum:
            raise _validation(
                f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: "
                f"Member must have value less than or equal to {maximum} and greater than or equal to 1"
            )
        return limit

    def _stream_by_arn(self, body: Mapping[str, Any]) -> Stream:
        arn = body.get("StreamArn")
        if not isinstance(arn, str) or not arn:
            raise _validation("StreamArn is required")
        stream = self._streams.get(arn)
        if stream is None:
            raise _not_found(f"Stream: {arn} not found")
        return stream

    def _describe_table(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body.get("TableName")
        stream = self._tables.get(name) if isinstance(name, str) else None
        if stream is None:
            raise _not_found(f"Table: {name} not found")
        enabled = stream.status == "ENABLED"
        table: dict[str, Any] = {
            "TableName": name,
            "TableStatus": "ACTIVE",
            "TableArn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}",
            "TableId": str(uuid.uuid5(uuid.NAMESPACE_URL, stream.arn)),
            "KeySchema": [dict(k) for k in stream.key_schema],
            "AttributeDefinitions": [
                {"AttributeName": n, "AttributeType": t} for n, t in stream.attribute_types.items()
            ],
            "CreationDateTime": stream.created_at,
            "ItemCount": 0,
            "TableSizeBytes": 0,
            "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
            "ProvisionedThroughput": {"NumberOfDecreasesToday": 0, "ReadCapacityUnits": 0, "WriteCapacityUnits": 0},
            "StreamSpecification": (
                {"StreamEnabled": True, "StreamViewType": stream.view_type} if enabled else {"StreamEnabled": False}
            ),
            "LatestStreamArn": stream.arn,
            "LatestStreamLabel": stream.label,
        }
        return {"Table": table}

    def _list_streams(self, body: Mapping[str, Any]) -> dict[str, Any]:
        limit = self._limit(body, 100, 100)
        table = body.get("TableName")
        if table is not None and table not in self._tables:
            raise _not_found(f"Table: {table} not found")
        candidates = [s for s in self._streams.values() if table is None or s.table_name == table]
        start = 0
        esa = body.get("ExclusiveStartStreamArn")
        if esa is not None:
            arns = [s.arn for s in candidates]
            if esa not in arns:
                raise _validation(f"ExclusiveStartStreamArn {esa} not found")
            start = arns.index(esa) + 1
        page = candidates[start : start + limit]
        out: dict[str, Any] = {
            "Streams": [{"StreamArn": s.arn, "TableName": s.table_name, "StreamLabel": s.label} for s in page]
        }
        if start + limit < len(candidates) and page:
            out["LastEvaluatedStreamArn"] = page[-1].arn
        return out

    def _describe_stream(self, body: Mapping[str, Any]) -> dict[str, Any]:
        stream = self._stream_by_arn(body)
        limit = self._limit(body, 100, 100)
        now = self.now()
        self._maintain_stream(stream, now)
        cutoff = now - self.retention_seconds
        start = 0
        esid = body.get("ExclusiveStartShardId")
        if esid is not None:
            pos = stream.position.get(esid)
            if pos is None:
                raise _validation(f"ExclusiveStartShardId {esid} is not a shard of {stream.arn}")
            start = pos + 1
        shards: list[dict[str, Any]] = []
        order = stream.order
        shard_filter = body.get("ShardFilter")
        if shard_filter is not None:
            # As AWS: CHILD_SHARDS of one shard (a closed shard has at most two).
            if shard_filter.get("Type") != "CHILD_SHARDS" or not shard_filter.get("ShardId"):
                raise _validation("ShardFilter needs Type CHILD_SHARDS and a ShardId")
            order = [shard for shard in order if shard.parent_id == shard_filter["ShardId"]]
            start = 0
        i = start
        last: Shard | None = None
        while i < len(order) and len(shards) < limit:
            shard = order[i]
            i += 1
            if shard.expired(cutoff):
                continue
            shards.append(shard.describe())
            last = shard
        description: dict[str, Any] = {
            "StreamArn": stream.arn,
            "StreamLabel": stream.label,
            "StreamStatus": stream.status,
            "StreamViewType": stream.view_type,
            "CreationRequestDateTime": stream.created_at,
            "TableName": stream.table_name,
            "KeySchema": [dict(k) for k in stream.key_schema],
            "Shards": shards,
        }
        if last is not None and any(not s.expired(cutoff) for s in order[i:]):
            description["LastEvaluatedShardId"] = last.shard_id
        return {"StreamDescription": description}

    def _make_iterator(self, stream: Stream, shard: Shard, position: int, issued: float) -> str:
        nonce = self._rng.getrandbits(32)
        raw = f"{_ITERATOR_MAGIC}|{stream.arn}|{shard.shard_id}|{position}|{issued!r}|{nonce:08x}"
        return base64.urlsafe_b64encode(raw.encode()).decode()

    def _parse_iterator(self, iterator: Any) -> tuple[Stream, Shard, int, float]:
        try:
            if not isinstance(iterator, str):
                raise ValueError
            magic, arn, shard_id, position, issued, _nonce = (
                base64.urlsafe_b64decode(iterator.encode()).decode().split("|")
            )
            if magic != _ITERATOR_MAGIC:
                raise ValueError
            stream = self._streams[arn]
            shard = stream.shards[shard_id]
            return stream, shard, int(position), float(issued)
        except (ValueError, KeyError, UnicodeDecodeError, TypeError):
            raise _validation("Invalid ShardIterator") from None

    def _get_shard_iterator(self, body: Mapping[str, Any]) -> dict[str, Any]:
        stream = self._stream_by_arn(body)
        shard_id = body.get("ShardId")
        kind = body.get("ShardIteratorType")
        if kind not in ITERATOR_TYPES:
            raise _validation(f"Invalid ShardIteratorType {kind!r}")
        now = self.now()
        shard = stream.shards.get(shard_id) if isinstance(shard_id, str) else None
        if shard is None or shard.expired(now - self.retention_seconds):
            raise _not_found(f"Shard: {shard_id} in Stream: {stream.arn} not found")
        self._maintain_shard(stream, shard, now)
        if kind == "TRIM_HORIZON":
            position = max(shard.start_seq, shard.trimmed_upto + 1)
        elif kind == "LATEST":
            position = (shard.end_seq + 1) if shard.end_seq is not None else self._seq + 1
        else:
            raw = body.get("SequenceNumber")
            if not isinstance(raw, str) or not raw.isdigit():
                raise _validation(f"SequenceNumber is required for {kind} (got {raw!r})")
            seq = int(raw)
            if seq <= shard.trimmed_upto:
                raise SimError(
                    "TrimmedDataAccessException",
                    f"The operation attempted to read past the oldest stream record in a shard: "
                    f"sequence number {raw} of {shard_id} has been trimmed",
                )
            upper = shard.end_seq if shard.end_seq is not None else self._seq
            if seq < shard.start_seq or seq > upper:
                raise _validation(f"Invalid SequenceNumber {raw} for shard {shard_id}")
            position = seq if kind == "AT_SEQUENCE_NUMBER" else seq + 1
        return {"ShardIterator": self._make_iterator(stream, shard, position, now)}

    def _get_records(self, body: Mapping[str, Any]) -> str:
        if "ShardIterator" not in body:
            raise _validation("ShardIterator is required")
        limit = self._limit(body, 1000, 1000)
        stream, shard, position, issued = self._parse_iterator(body["ShardIterator"])
        now = self.now()
        if now - issued > self.iterator_ttl_seconds:
            raise SimError(
                "ExpiredIteratorException",
                f"Iterator expired. The iterator was created at time {issued:.3f} while right now it is {now:.3f} "
                f"which is further in the future than the tolerated delay of {self.iterator_ttl_seconds:.0f} seconds.",
            )
        if self.throttle_enabled:
            mono = time.monotonic()
            calls = shard.read_calls
            while calls and calls[0] <= mono - 1.0:
                calls.popleft()
            if len(calls) >= self.max_get_records_per_shard_per_second:
                raise SimError("LimitExceededException", f"Rate exceeded for shard {shard.shard_id} in stream {stream.arn}")
            calls.append(mono)
        self._maintain_shard(stream, shard, now)
        if position <= shard.trimmed_upto:
            raise SimError(
                "TrimmedDataAccessException",
                "The operation attempted to read past the oldest stream record in a shard.",
            )
        seqs = shard.seqs
        i = bisect.bisect_left(seqs, position)
        if self.empty_read_rate > 0 and self._rng.random() < self.empty_read_rate:
            j = i
        else:
            j = min(i + limit, len(seqs))
            budget = self.max_response_bytes
            used = 0
            for k in range(i, j):
                used += len(shard.blobs[k]) + 1
                if used > budget and k > i:
                    j = k
                    break
        out = shard.blobs[i:j]
        next_position = seqs[j - 1] + 1 if j > i else position
        self._counters["records_returned"] += len(out)
        at_end = shard.end_seq is not None and j == len(seqs) and (self.eager_shard_end or not out)
        head = '{"Records":[' + ",".join(out) + "]"
        if at_end:
            return head + "}"
        iterator = self._make_iterator(stream, shard, next_position, now)
        return head + ',"NextShardIterator":"' + iterator + '"}'
