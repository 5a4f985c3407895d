"""Lossless JSON for raw stream records: what goes in comes back with the same types.

A parked record is replayed by building a :class:`~worker.records.StreamRecord` over
the decoded dict, so the decoded dict must be the one the SDK returned: ``bytes`` for
``B``/``BS`` values, a ``datetime`` for ``ApproximateCreationDateTime``. Plain JSON
would turn both into strings and the replayed handler would see different values.

Values JSON cannot hold are written as tagged objects ``{"$dl": <tag>, "v": <value>}``:

* ``bytes``/``bytearray``: base64 (``bytes``/``bytearray``)
* ``datetime``: ISO 8601, with its UTC offset when it has one (``datetime``)
* ``set``/``frozenset``/``tuple``: a list (botocore returns lists for SS/NS/BS, but a
  hand-built record may use sets); set members are sorted by their JSON text so that
  the output is deterministic
* ``Decimal``: its string (``decimal``)

A real dict that happens to have a ``"$dl"`` key (an attribute may be named anything) is
itself wrapped (``dict``), so decoding is never ambiguous. The decoder therefore walks the
parsed tree itself instead of using ``object_hook``, which would see inner dicts first.

A datetime comes back with a fixed-offset ``timezone`` instead of, say, botocore's
``tzlocal()``: it is the same instant and compares equal.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

TAG = "$dl"


def encode(value: Any) -> Any:
    """The JSON-ready form of ``value`` (only dicts with str keys, lists, str, numbers, bools, None)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        encoded = {_key(key): encode(item) for key, item in value.items()}
        return {TAG: "dict", "v": encoded} if TAG in encoded else encoded
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        tag = "bytes" if isinstance(value, bytes) else "bytearray"
        return {TAG: tag, "v": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return {TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, (set, frozenset)):
        members = sorted((encode(item) for item in value), key=_sort_key)
        return {TAG: "frozenset" if isinstance(value, frozenset) else "set", "v": members}
    if isinstance(value, tuple):
        return {TAG: "tuple", "v": [encode(item) for item in value]}
    if isinstance(value, Decimal):
        return {TAG: "decimal", "v": str(value)}
    raise TypeError(f"cannot encode a {type(value).__name__} in a dead letter")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if TAG not in value:
        return {key: decode(item) for key, item in value.items()}
    tag, inner = value[TAG], value.get("v")
    if inner is None:
        raise ValueError(f"dead-letter value tag {tag!r} without a value")
    if tag == "dict":
        return {key: decode(item) for key, item in inner.items()}
    if tag == "bytes":
        return base64.b64decode(inner, validate=True)
    if tag == "bytearray":
        return bytearray(base64.b64decode(inner, validate=True))
    if tag == "datetime":
        return datetime.fromisoformat(inner)
    if tag == "set":
        return {decode(item) for item in inner}
    if tag == "frozenset":
        return frozenset(decode(item) for item in inner)
    if tag == "tuple":
        return tuple(decode(item) for item in inner)
    if tag == "decimal":
        return Decimal(inner)
    raise ValueError(f"unknown dead-letter value tag {tag!r}")


def dumps(value: Any) -> str:
    """Compact, key-sorted, ASCII-only JSON.

    ASCII-only because every destination accepts it unchanged: SQS rejects some
    characters (U+FFFE, U+FFFF) that JSON would otherwise write raw. It also makes the
    byte size equal to ``len()``, which the size checks rely on.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"dead-letter dict keys must be str, not {type(key).__name__}")
    return key


def _sort_key(encoded: Any) -> str:
    return dumps(encoded)
