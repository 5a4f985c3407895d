"""stream-worker: a self-hosted DynamoDB Streams consumer daemon.

The public handler API is importable from here and only from here::

    from worker import StreamRecord, HandlerContext, BatchResult, Event, PermanentError

Everything else in the package is internal and may change. The names are resolved on
first use (PEP 562): the console script installs its signal handlers before the heavy
imports (the SDK, pydantic), and ``import worker`` must not pull them in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from worker.version import __version__ as __version__

if TYPE_CHECKING:  # ``X as X``: re-exported for type checkers (mypy --strict)
    from worker.errors import PermanentError as PermanentError
    from worker.errors import RetryableError as RetryableError
    from worker.idempotency import IdempotencyStore as IdempotencyStore
    from worker.idempotency import idempotent as idempotent
    from worker.lifecycle.hooks import ShardInfo as ShardInfo
    from worker.lifecycle.hooks import WorkerInfo as WorkerInfo
    from worker.processing.context import BatchHandler as BatchHandler
    from worker.processing.context import BatchResult as BatchResult
    from worker.processing.context import Handler as Handler
    from worker.processing.context import HandlerContext as HandlerContext
    from worker.processing.context import Resources as Resources
    from worker.processing.context import Table as Table
    from worker.publishing.events import Event as Event
    from worker.records import EventName as EventName
    from worker.records import ImageValidationError as ImageValidationError
    from worker.records import StreamRecord as StreamRecord
    from worker.records import StreamViewType as StreamViewType

# public name -> the module that defines it
_EXPORTS = {
    "StreamRecord": "worker.records",
    "EventName": "worker.records",
    "StreamViewType": "worker.records",
    "ImageValidationError": "worker.records",
    "HandlerContext": "worker.processing.context",
    "BatchResult": "worker.processing.context",
    "Handler": "worker.processing.context",
    "BatchHandler": "worker.processing.context",
    "Table": "worker.processing.context",
    "Event": "worker.publishing.events",
    "PermanentError": "worker.errors",
    "RetryableError": "worker.errors",
    "idempotent": "worker.idempotency",
    "IdempotencyStore": "worker.idempotency",
    "Resources": "worker.processing.context",
    "WorkerInfo": "worker.lifecycle.hooks",
    "ShardInfo": "worker.lifecycle.hooks",
}

__all__ = [
    "BatchHandler", "BatchResult", "Event", "EventName", "Handler", "HandlerContext", "IdempotencyStore",
    "ImageValidationError", "PermanentError", "Resources", "RetryableError", "ShardInfo", "StreamRecord",
    "StreamViewType", "Table", "WorkerInfo", "idempotent",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once; later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
