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
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

from boto3.dynamodb.types import DYNAMODB_CONTEXT, TypeDeserializer

from worker.errors import PermanentError

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")

# Who DynamoDB names as the actor of a delete done by Time to Live (AWS documents exactly
# this pair on TTL REMOVE records; user deletes carry no userIdentity).
TTL_PRINCIPAL = "dynamodb.amazonaws.com"

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


class ImageValidationError(PermanentError):
    """An item image does not validate against the model a handler or route asked for.

    Permanent: the same record never validates on a retry, so it is parked with the
    validation message instead of blocking its shard."""


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

    ``raw`` is the record as the SDK returns it; ``table`` is the logical table name from
    the config (not the AWS name); ``stream_arn`` and ``shard_id`` say where it was read.
    Keys and images are decoded on first access and cached. Build one in tests with
    :func:`worker.testing.make_record`.
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
        """The record's unique id within the stream (``eventID``)."""
        return str(self.raw["eventID"])

    @property
    def event_name(self) -> EventName:
        """INSERT, MODIFY or REMOVE."""
        return EventName(self.raw["eventName"])

    @property
    def sequence_number(self) -> str:
        """The record's position in its shard, as the decimal string AWS gives."""
        return str(self._ddb["SequenceNumber"])

    @property
    def sequence_int(self) -> int:
        """Sequence numbers are decimal strings of varying length: compare them as integers."""
        return int(self._ddb["SequenceNumber"])

    @property
    def approximate_creation_time(self) -> datetime | None:
        """When the change was made, as DynamoDB reports it (coarse; UTC)."""
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
        """Size of the record's keys and images in bytes, as AWS reports it (0 if absent)."""
        return int(self._ddb.get("SizeBytes", 0))

    @property
    def view_type(self) -> StreamViewType | None:
        """Which images the stream carries (KEYS_ONLY, NEW_IMAGE, OLD_IMAGE, NEW_AND_OLD_IMAGES)."""
        value = self._ddb.get("StreamViewType")
        return StreamViewType(value) if value else None

    @property
    def keys(self) -> dict[str, Any]:
        """The item's primary key as plain Python values (numbers as ``Decimal``)."""
        if self._keys is _UNSET:
            self._keys = decode_image(self._ddb.get("Keys")) or {}
        return self._keys  # type: ignore[no-any-return]

    @property
    def new_image(self) -> dict[str, Any] | None:
        """The item after the change (None for REMOVE, or when the stream does not carry it)."""
        if self._new is _UNSET:
            self._new = decode_image(self._ddb.get("NewImage"))
        return self._new  # type: ignore[no-any-return]

    @property
    def old_image(self) -> dict[str, Any] | None:
        """The item before the change (None for INSERT, or when the stream does not carry it)."""
        if self._old is _UNSET:
            self._old = decode_image(self._ddb.get("OldImage"))
        return self._old  # type: ignore[no-any-return]

    @property
    def item_key(self) -> str:
        """A stable string for the item's primary key (ordering and dedup within a shard)."""
        return json.dumps(self._ddb.get("Keys", {}), sort_keys=True, default=str)

    @property
    def event_source(self) -> str | None:
        """Where the record comes from: ``aws:dynamodb`` for DynamoDB Streams."""
        value = self.raw.get("eventSource")
        return None if value is None else str(value)

    @property
    def aws_region(self) -> str | None:
        """The AWS region of the table (``awsRegion``)."""
        value = self.raw.get("awsRegion")
        return None if value is None else str(value)

    @property
    def user_identity(self) -> dict[str, str] | None:
        """Who made the change, when DynamoDB says: only deletes by Time to Live carry it
        (``{"type": "Service", "principalId": "dynamodb.amazonaws.com"}``)."""
        value = self.raw.get("userIdentity")
        if not isinstance(value, Mapping):
            return None
        return {str(k): str(v) for k, v in value.items()}

    @property
    def is_ttl_delete(self) -> bool:
        """True for a REMOVE done by DynamoDB's Time to Live, False for a user's delete."""
        identity = self.raw.get("userIdentity")
        return (
            self.raw.get("eventName") == "REMOVE"
            and isinstance(identity, Mapping)
            and identity.get("type") == "Service"
            and identity.get("principalId") == TTL_PRINCIPAL
        )

    def new_image_as(self, model: type[M]) -> M:
        """The new image validated into the pydantic ``model``.

        Raises :class:`ImageValidationError` (a ``PermanentError``: the record is parked
        with the validation message, not retried) when the image is absent or invalid.
        """
        return _validate(model, self.new_image, "NewImage", self)

    def old_image_as(self, model: type[M]) -> M:
        """The old image validated into the pydantic ``model`` (see :meth:`new_image_as`)."""
        return _validate(model, self.old_image, "OldImage", self)

    def __repr__(self) -> str:
        return (
            f"StreamRecord(table={self.table!r}, shard={self.shard_id!r}, "
            f"seq={self.sequence_number!r}, event={self.raw.get('eventName')!r})"
        )


def _validate(model: type[M], image: dict[str, Any] | None, which: str, record: StreamRecord) -> M:
    from pydantic import ValidationError  # here: importing this module must not import pydantic

    if image is None:
        view = record.raw.get("dynamodb", {}).get("StreamViewType")
        raise ImageValidationError(f"{which} is absent from this {record.raw.get('eventName')} record "
                                   f"(stream view type {view}), cannot build {model.__name__}")
    try:
        return model.model_validate(image)
    except ValidationError as exc:
        raise ImageValidationError(f"{which} does not validate as {model.__name__}: {exc}") from exc
