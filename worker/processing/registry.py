"""Resolves handler import strings (``package.module:function``) at load time.

Anything that is not an async callable is rejected before the worker starts, so a typo
in the config is an exit code 2, not a shard stuck at 3 a.m.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from worker.processing.context import Handler


class HandlerImportError(ValueError):
    """The import string does not lead to an async callable (message says why)."""


def _is_async_callable(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)
    return not inspect.isclass(obj) and call is not None and inspect.iscoroutinefunction(call)


def load_handler(import_string: str) -> Handler:
    module_name, _, attribute_path = import_string.partition(":")
    if not module_name or not attribute_path:
        raise HandlerImportError(f"expected 'package.module:function', got {import_string!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerImportError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a module that fails while importing is a config error too
        raise HandlerImportError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attribute_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerImportError(f"module {module_name!r} has no attribute {attribute_path!r}") from None
    if not _is_async_callable(obj):
        raise HandlerImportError(f"{import_string!r} is not an async callable (define it with 'async def')")
    return obj  # type: ignore[no-any-return]
