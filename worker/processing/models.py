"""A route's ``model``: the pydantic model every record's image must validate against.

The route's handler is wrapped once, at load time: a record whose image (the new image, the
old one for REMOVE) does not validate fails with :class:`~worker.records.ImageValidationError`
before the handler runs. That error is permanent, so the record is parked with pydantic's
message instead of being retried; in a batch, bisection isolates it first.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from pydantic import BaseModel

from worker.records import StreamRecord


class ModelImportError(ValueError):
    """The import string does not lead to a pydantic model (message says why)."""


def load_model(import_string: str) -> type[BaseModel]:
    module_name, _, attribute_path = import_string.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute_path.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise ModelImportError(f"cannot import module {module_name!r}: {exc}") from None
    except AttributeError:
        raise ModelImportError(f"module {module_name!r} has no attribute {attribute_path!r}") from None
    except Exception as exc:  # noqa: BLE001 - a module failing at import is a config error too
        raise ModelImportError(f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise ModelImportError(f"{import_string!r} is not a pydantic model (a subclass of pydantic.BaseModel)")
    return obj


def validate_image(record: StreamRecord, model: type[BaseModel]) -> None:
    """Raise ImageValidationError unless the record's image validates as ``model``."""
    if record.raw.get("eventName") == "REMOVE":
        record.old_image_as(model)
    else:
        record.new_image_as(model)


def validating(handler: Any, model: type[BaseModel], is_batch: bool) -> Any:
    """``handler``, validating each record against ``model`` before it is called."""
    if is_batch:
        @functools.wraps(handler)
        async def batch(records: list[StreamRecord], ctx: Any) -> Any:
            for record in records:
                validate_image(record, model)
            return await handler(records, ctx)

        return batch

    @functools.wraps(handler)
    async def per_record(record: StreamRecord, ctx: Any) -> Any:
        validate_image(record, model)
        return await handler(record, ctx)

    return per_record
