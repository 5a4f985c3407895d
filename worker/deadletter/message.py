"""The dead letter: one record a route could not process, with everything to replay it.

The id is a UUIDv5 of the record's stream position and the route, so parking the same
record for the same route again (after a crash before the checkpoint moved) produces the
same id: destinations that can deduplicate (FIFO queues, the DynamoDB table, the
replayer) do so on it. Parking the same record for two routes gives two letters, since
each route is replayed on its own.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import worker.deadletter.codec as codec
from worker.aws_errors import utc_now
from worker.deadletter.errors import DeadLetterDecodeError
from worker.records import StreamRecord
from worker.tracebacks import format_traceback

ErrorClass = Literal["permanent", "retryable", "exhausted", "record_too_old"]
ERROR_CLASSES: frozenset[str] = frozenset(get_args(ErrorClass))

# Fixed namespace: ids stay stable across versions, processes and hosts.
DEAD_LETTER_NAMESPACE = uuid.UUID("8d3b6f0e-2c4a-5e7b-9f1d-6a0c4e2b8d17")

# Bumped on any incompatible change of the JSON layout; from_json refuses other versions.
FORMAT_VERSION = 1

# An exception text can be arbitrarily long (a repr of a whole payload); the record
# itself is what replay needs, so the text is capped to keep messages under size limits.
MAX_ERROR_MESSAGE_CHARS = 8_192

_FIELDS = {
    "id": "id",
    "route": "route",
    "table": "table",
    "stream_arn": "streamArn",
    "shard_id": "shardId",
    "sequence_number": "sequenceNumber",
    "error_type": "errorType",
    "error_message": "errorMessage",
    "error_class": "errorClass",
    "attempts": "attempts",
    "first_failure_at": "firstFailureAt",
    "last_failure_at": "lastFailureAt",
    "dead_lettered_at": "deadLetteredAt",
    "worker_id": "workerId",
}
# Added after version 1 shipped: optional when reading, so older letters still decode.
_OPTIONAL_FIELDS = {"traceback": "traceback"}


def dead_letter_id(stream_arn: str, shard_id: str, sequence_number: str, route: str) -> str:
    """The deterministic id of the letter for this record position and route."""
    return str(uuid.uuid5(DEAD_LETTER_NAMESPACE, f"{stream_arn}|{shard_id}|{sequence_number}|{route}"))


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z`` (a naive datetime is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cap(text: str) -> str:
    if len(text) <= MAX_ERROR_MESSAGE_CHARS:
        return text
    return text[:MAX_ERROR_MESSAGE_CHARS] + f"... [{len(text) - MAX_ERROR_MESSAGE_CHARS} more characters]"


@dataclass(frozen=True)
class DeadLetter:
    """One parked record. ``record`` is the raw SDK record dict (not hashed: it is a dict)."""

    id: str
    route: str
    table: str
    stream_arn: str
    shard_id: str
    sequence_number: str
    record: dict[str, Any] = field(hash=False)
    error_type: str
    error_message: str
    error_class: ErrorClass
    attempts: int
    first_failure_at: str
    last_failure_at: str
    dead_lettered_at: str
    worker_id: str
    traceback: str = ""
    """The bounded traceback of the last failure (file and line of the handler's code)."""

    def __post_init__(self) -> None:
        for name in (*_FIELDS, *_OPTIONAL_FIELDS):
            if name != "attempts" and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a str, not {type(getattr(self, name)).__name__}")
        if self.error_class not in ERROR_CLASSES:
            raise ValueError(f"error_class must be one of {sorted(ERROR_CLASSES)}, not {self.error_class!r}")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 0:
            raise ValueError(f"attempts must be an int >= 0, not {self.attempts!r}")

    @classmethod
    def from_failure(
        cls,
        record: StreamRecord,
        route: str,
        error: BaseException,
        error_class: str,
        attempts: int,
        first_failure_at: datetime,
        worker_id: str,
        *,
        now: datetime | None = None,
    ) -> DeadLetter:
        """The letter for ``record`` that failed on ``route`` with ``error`` (the last failure).

        ``now`` (default: the current time) stamps both the last failure and the parking.
        The raw record is deep-copied: the letter is a snapshot, whatever happens to the
        record afterwards.
        """
        moment = utc_iso(now or utc_now())
        sequence_number = record.sequence_number
        return cls(
            id=dead_letter_id(record.stream_arn, record.shard_id, sequence_number, route),
            route=route,
            table=record.table,
            stream_arn=record.stream_arn,
            shard_id=record.shard_id,
            sequence_number=sequence_number,
            record=copy.deepcopy(dict(record.raw)),
            error_type=type(error).__name__,
            error_message=_cap(str(error)),
            error_class=error_class,  # type: ignore[arg-type]  # checked in __post_init__
            attempts=attempts,
            first_failure_at=utc_iso(first_failure_at),
            last_failure_at=moment,
            dead_lettered_at=moment,
            worker_id=worker_id,
            traceback=format_traceback(error) if error.__traceback__ is not None else "",
        )

    def to_stream_record(self) -> StreamRecord:
        """The record as the route saw it, for replay."""
        return StreamRecord(self.record, table=self.table, stream_arn=self.stream_arn, shard_id=self.shard_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (camelCase keys, the record encoded losslessly)."""
        data: dict[str, Any] = {"version": FORMAT_VERSION, "record": codec.encode(self.record)}
        for name, key in (*_FIELDS.items(), *_OPTIONAL_FIELDS.items()):
            data[key] = getattr(self, name)
        return data

    def to_json(self) -> str:
        """Deterministic: the same letter always gives the same text."""
        return codec.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> DeadLetter:
        if not isinstance(data, dict):
            raise DeadLetterDecodeError(f"a dead letter is a JSON object, not {type(data).__name__}")
        if data.get("version") != FORMAT_VERSION:
            raise DeadLetterDecodeError(f"unsupported dead-letter version {data.get('version')!r}")
        missing = [key for key in (*_FIELDS.values(), "record") if key not in data]
        if missing:
            raise DeadLetterDecodeError(f"dead letter lacks {', '.join(missing)}")
        try:
            record = codec.decode(data["record"])
            if not isinstance(record, dict):
                raise DeadLetterDecodeError("the dead letter's record is not an object")
            optional = {name: data[key] for name, key in _OPTIONAL_FIELDS.items() if key in data}
            return cls(record=record, **{name: data[key] for name, key in _FIELDS.items()}, **optional)
        except (ValueError, TypeError, AttributeError) as exc:
            if isinstance(exc, DeadLetterDecodeError):
                raise
            raise DeadLetterDecodeError(f"invalid dead letter: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetter:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DeadLetterDecodeError(f"a dead letter is JSON: {exc}") from exc
        return cls.from_dict(data)
