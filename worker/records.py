"""StreamRecord: a read-only typed view over one DynamoDB Streams record.

The raw dict (as the SDK returns it) is kept; keys and images are decoded with
the SDK's own ``TypeDeserializer`` on first access and cached, so a record that no
route looks at costs no decoding.
"""

from __future__ import annotations

import base64
import enum
import json
from datetime import datetime, timezone
from typing import Any, Mapping

from boto3.dynamodb.types import DYNAMODB_CONTEXT, TypeDeserializer

_create_decimal = DYNAMODB_CONTEXT.create_decimal
# The coarsest ApproximateCreationDateTime seen: whole minutes (see latest_creation_epoch).
COARSE_TIMESTAMP_SECONDS = 60


class _Deserializer(TypeDeserializer):  # type: ignore[misc]  # boto3 ships no type hints
    """The SDK's deserializer, also taking binary values as base64 text, as they arrive on
    the wire (the fast GetRecords path and dead letters keep them that way).

    The scalar types most items are made of (S, N, BOOL, NULL) are decoded here directly,
    with the SDK's own rules (first key of the map; numbers through the SDK's decimal
    context): its per-value ``getattr`` dispatch was most of an image's decode time.
    Everything else, and every malformed value, goes to the SDK as before.
    """

    def deserialize(self, value: Any) -> Any:
        if type(value) is dict and value:
            tag = next(iter(value))
            if tag == "S" or tag == "BOOL":
                return value[tag]
            if tag == "N":
                return _create_decimal(value["N"])
            if tag == "NULL":
                return None
        return super().deserialize(value)

    def _deserialize_b(self, value: Any) -> Any:
        if isinstance(value, str):
            value = base64.b64decode(value)
        return super()._deserialize_b(value)


_deserializer = _Deserializer()


class EventName(str, enum.Enum):
    INSERT = "INSERT"
    MODIFY = "MODIFY"
    REMOVE = "REMOVE"


class StreamViewType(str, enum.Enum):
    KEYS_ONLY = "KEYS_ONLY"
    NEW_IMAGE = "NEW_IMAGE"
    OLD_IMAGE = "OLD_IMAGE"
    NEW_AND_OLD_IMAGES = "NEW_AND_OLD_IMAGES"


def decode_image(image: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Turn a DynamoDB-typed attribute map into plain Python values (Decimal for numbers)."""
    if image is None:
        return None
    return {name: _deserializer.deserialize(value) for name, value in image.items()}


_UNSET: Any = object()


class StreamRecord:
    """One change record of one shard, with where it came from.

    ``table`` is the logical table name from the config, not the physical one.
    """

    __slots__ = ("raw", "table", "stream_arn", "shard_id", "_keys", "_new", "_old")

    def __init__(self, raw: Mapping[str, Any], *, table: str, stream_arn: str, shard_id: str) -> None:
        self.raw = raw
        self.table = table
        self.stream_arn = stream_arn
        self.shard_id = shard_id
        self._keys: Any = _UNSET
        self._new: Any = _UNSET
        self._old: Any = _UNSET

    @property
    def _ddb(self) -> Mapping[str, Any]:
        return self.raw["dynamodb"]  # type: ignore[no-any-return]

    @property
    def event_id(self) -> str:
        return str(self.raw["eventID"])

    @property
    def event_name(self) -> EventName:
        return EventName(self.raw["eventName"])

    @property
    def sequence_number(self) -> str:
        return str(self._ddb["SequenceNumber"])

    @property
    def sequence_int(self) -> int:
        """Sequence numbers are decimal strings of varying length: compare them as integers."""
        return int(self._ddb["SequenceNumber"])

    @property
    def approximate_creation_time(self) -> datetime | None:
        value = self._ddb.get("ApproximateCreationDateTime")
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromtimestamp(float(value), tz=timezone.utc)

    @property
    def approximate_creation_epoch(self) -> float | None:
        """``approximate_creation_time`` as seconds since the epoch (cheaper on hot paths)."""
        value = self._ddb.get("ApproximateCreationDateTime")
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None:  # naive means UTC here, as everywhere in the worker
                value = value.replace(tzinfo=timezone.utc)
            return value.timestamp()
        return float(value)

    @property
    def latest_creation_epoch(self) -> float | None:
        """The latest moment the record can have been created, as seconds since the epoch.

        ``ApproximateCreationDateTime`` may be truncated to the minute (DynamoDB Local does
        it; real streams have been reported to): a value on a whole minute is read as "some
        time in that minute", so age limits and AT_TIMESTAMP never drop a record early. A
        precise value that happens to fall on a whole minute only gains that leeway."""
        created = self.approximate_creation_epoch
        if created is not None and created % COARSE_TIMESTAMP_SECONDS == 0:
            return created + COARSE_TIMESTAMP_SECONDS
        return created

    @property
    def size_bytes(self) -> int:
        return int(self._ddb.get("SizeBytes", 0))

    @property
    def view_type(self) -> StreamViewType | None:
        value = self._ddb.get("StreamViewType")
        return StreamViewType(value) if value else None

    @property
    def keys(self) -> dict[str, Any]:
        if self._keys is _UNSET:
            self._keys = decode_image(self._ddb.get("Keys")) or {}
        return self._keys  # type: ignore[no-any-return]

    @property
    def new_image(self) -> dict[str, Any] | None:
        if self._new is _UNSET:
            self._new = decode_image(self._ddb.get("NewImage"))
        return self._new  # type: ignore[no-any-return]

    @property
    def old_image(self) -> dict[str, Any] | None:
        if self._old is _UNSET:
            self._old = decode_image(self._ddb.get("OldImage"))
        return self._old  # type: ignore[no-any-return]

    @property
    def item_key(self) -> str:
        """A stable string for the item's primary key (ordering and dedup within a shard)."""
        return json.dumps(self._ddb.get("Keys", {}), sort_keys=True, default=str)

    def __repr__(self) -> str:
        return (
            f"StreamRecord(table={self.table!r}, shard={self.shard_id!r}, "
            f"seq={self.sequence_number!r}, event={self.raw.get('eventName')!r})"
        )
