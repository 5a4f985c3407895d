"""``make_record``: a :class:`~worker.records.StreamRecord` from plain Python values.

Values are typed with the SDK's own ``TypeSerializer``, as DynamoDB Streams delivers them
(floats go through ``Decimal``, as the resource API requires). The record has the fields a
real one has: ``eventID``, ``eventSource``, ``awsRegion``, sequence numbers that increase
from one call to the next, a creation time, and for a TTL delete the ``userIdentity`` that
DynamoDB writes on deletes by Time to Live.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping

from boto3.dynamodb.types import TypeSerializer

from worker.aws_errors import utc_now
from worker.records import TTL_PRINCIPAL, EventName, StreamRecord, StreamViewType

DEFAULT_SHARD_ID = "shardId-00000001700000000000-testing"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"

_serializer = TypeSerializer()
# 21-digit sequence numbers, as AWS uses, increasing across every record built in a process.
_sequence = itertools.count(100_000_000_000_000_000_000)


def default_stream_arn(table: str, region: str = DEFAULT_REGION) -> str:
    """A well-formed stream ARN for ``table`` (the label DynamoDB uses is a timestamp)."""
    return f"arn:aws:dynamodb:{region}:{DEFAULT_ACCOUNT}:table/{table}/stream/2024-01-01T00:00:00.000"


def make_record(
    event_name: EventName | str,
    keys: Mapping[str, Any],
    new_image: Mapping[str, Any] | None = None,
    old_image: Mapping[str, Any] | None = None,
    *,
    table: str = "table",
    ttl_delete: bool = False,
    sequence_number: int | str | None = None,
    created: datetime | None = None,
    view_type: StreamViewType | str = StreamViewType.NEW_AND_OLD_IMAGES,
    shard_id: str = DEFAULT_SHARD_ID,
    stream_arn: str | None = None,
    region: str = DEFAULT_REGION,
    event_id: str | None = None,
) -> StreamRecord:
    """A stream record of logical table ``table`` as a handler receives it.

    ``keys`` is the item's primary key; the images are the item after (``new_image``) and
    before (``old_image``) the change, and include the key attributes whether or not they
    are repeated there (with the values of ``keys``). INSERT has no old image and REMOVE no new image (a ValueError says
    so). ``ttl_delete=True`` makes a REMOVE done by Time to Live. ``sequence_number``
    defaults to the next one of a process-wide counter; ``created`` to now.
    """
    name = EventName(event_name)
    view = StreamViewType(view_type)
    if name is EventName.INSERT and old_image is not None:
        raise ValueError("an INSERT record has no old image")
    if name is EventName.REMOVE and new_image is not None:
        raise ValueError("a REMOVE record has no new image")
    if ttl_delete and name is not EventName.REMOVE:
        raise ValueError("ttl_delete applies to REMOVE records only")
    if not keys:
        raise ValueError("keys must name the item's primary key attributes")
    sequence = str(next(_sequence) if sequence_number is None else sequence_number)
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": created or utc_now(),
        "Keys": _typed(keys),
        "SequenceNumber": sequence,
        "StreamViewType": view.value,
    }
    if new_image is not None and view in (StreamViewType.NEW_IMAGE, StreamViewType.NEW_AND_OLD_IMAGES):
        dynamodb["NewImage"] = _typed({**new_image, **keys})
    if old_image is not None and view in (StreamViewType.OLD_IMAGE, StreamViewType.NEW_AND_OLD_IMAGES):
        dynamodb["OldImage"] = _typed({**old_image, **keys})
    dynamodb["SizeBytes"] = len(repr(dynamodb["Keys"])) + len(repr(dynamodb.get("NewImage"))) + len(
        repr(dynamodb.get("OldImage"))
    )
    raw: dict[str, Any] = {
        "eventID": event_id or f"{sequence[-12:]}{name.value.lower()}",
        "eventName": name.value,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": region,
        "dynamodb": dynamodb,
    }
    if ttl_delete:
        raw["userIdentity"] = {"type": "Service", "principalId": TTL_PRINCIPAL}
    return StreamRecord(raw, table=table, stream_arn=stream_arn or default_stream_arn(table, region),
                        shard_id=shard_id)


def _typed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(_decimals(value)) for name, value in values.items()}


def _decimals(value: Any) -> Any:
    """Floats become Decimal (through their shortest repr, so 0.1 stays 0.1), all the way down."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {key: _decimals(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decimals(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return {_decimals(item) for item in value}
    return value
