"""Resolves handler (and lifecycle hook) import strings (``package.module:function``) at load time.

Anything that is not an async callable taking ``(record, ctx)`` (per-record handler) or
``(records, ctx)`` (batch handler) is rejected before the worker starts, so a typo in the
config is an exit code 2, not a shard stuck at 3 a.m.

Modules are looked up on ``sys.path`` (which the CLI extends with the working directory)
and then in the config file's folder, so a handler module may sit next to the config.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, get_origin

from worker.processing.context import Handler
from worker.records import StreamRecord


class HandlerImportError(ValueError):
    """The import string does not lead to a fitting async callable (message says why)."""


def _is_async_callable(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)
    return not inspect.isclass(obj) and call is not None and inspect.iscoroutinefunction(call)


def _import(module_name: str, config_dir: Path | None) -> Any:
    """Import from ``sys.path``; if the module is not there, from the config's folder too."""
    searched_config_dir = config_dir is None or str(config_dir) in sys.path
    while True:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not _is_the_module(module_name, exc.name):
                # The module exists but imports something missing: report that as it is.
                raise HandlerImportError(f"importing module {module_name!r} failed: {exc}") from None
            if searched_config_dir:
                raise HandlerImportError(_not_found(module_name, config_dir)) from None
        except Exception as exc:  # noqa: BLE001 - a module that fails while importing is a config error too
            raise HandlerImportError(
                f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from None
        # Appended, not prepended: a file next to the config never shadows an installed package.
        sys.path.append(str(config_dir))
        importlib.invalidate_caches()
        searched_config_dir = True


def _is_the_module(module_name: str, missing: str | None) -> bool:
    """Whether the missing module is ``module_name`` itself or one of its parent packages."""
    return missing is not None and (module_name == missing or module_name.startswith(missing + "."))


def _not_found(module_name: str, config_dir: Path | None) -> str:
    where = "on sys.path (the working directory included)"
    if config_dir is not None:
        where += f" nor next to the config ({config_dir})"
    return f"cannot import module {module_name!r}: not found {where}; check the spelling, or install the package"


def _check_signature(obj: Any, import_string: str, batch: bool) -> None:
    """Two positional arguments: the record (or the batch's records) and the context."""
    shape = "(records, ctx)" if batch else "(record, ctx)"
    kind = "a batch handler" if batch else "a per-record handler"
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to read, the call decides
    try:
        signature.bind(None, None)
    except TypeError:
        raise HandlerImportError(
            f"{import_string!r} takes {_describe(signature)}, but {kind} is called with two arguments "
            f"{shape}: define it as 'async def {getattr(obj, '__name__', 'handle')}{shape}'"
        ) from None
    first = _first_annotation(obj)
    takes_many = get_origin(first) in _COLLECTIONS
    if takes_many and not batch:
        raise HandlerImportError(f"{import_string!r} takes a list of records: name it under 'batch_handler', "
                                 "not 'handler'")
    if batch and first is StreamRecord:
        raise HandlerImportError(f"{import_string!r} takes one StreamRecord: name it under 'handler', "
                                 "not 'batch_handler'")


_COLLECTIONS = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)


def _first_annotation(obj: Any) -> Any:
    """The resolved annotation of the first parameter, or ``None`` when there is none or it
    cannot be resolved (names only imported under TYPE_CHECKING, for instance)."""
    try:
        signature = inspect.signature(obj, eval_str=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check
        return None
    for parameter in signature.parameters.values():
        return None if parameter.annotation is inspect.Parameter.empty else parameter.annotation
    return None


def _describe(signature: inspect.Signature) -> str:
    names = [p.name for p in signature.parameters.values()]
    return f"({', '.join(names)})" if names else "no arguments"


def load_handler(import_string: str, *, batch: bool = False, config_dir: Path | None = None) -> Handler:
    """The async callable ``import_string`` names, checked against the handler shape.

    ``batch`` says whether it is a batch handler (``(records, ctx)``); ``config_dir`` is
    the config file's folder, searched after ``sys.path``.
    """
    obj = _resolve_async_callable(import_string, config_dir)
    _check_signature(obj, import_string, batch)
    return obj  # type: ignore[no-any-return]


def load_hook(import_string: str, *, config_dir: Path | None = None) -> Any:
    """The async callable ``import_string`` names, checked to take one argument (the
    hook's info object: see worker/lifecycle/hooks.py)."""
    obj = _resolve_async_callable(import_string, config_dir)
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return obj  # a builtin or C callable: nothing to read, the call decides
    try:
        signature.bind(None)
    except TypeError:
        raise HandlerImportError(
            f"{import_string!r} takes {_describe(signature)}, but a hook is called with one argument "
            f"(info): define it as 'async def {getattr(obj, '__name__', 'hook')}(info)'"
        ) from None
    return obj


def _resolve_async_callable(import_string: str, config_dir: Path | None) -> Any:
    module_name, _, attribute_path = import_string.partition(":")
    if not module_name or not attribute_path:
        raise HandlerImportError(f"expected 'package.module:function', got {import_string!r}")
    obj: Any = _import(module_name, config_dir)
    for part in attribute_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerImportError(f"module {module_name!r} has no attribute {attribute_path!r}") from None
    if not _is_async_callable(obj):
        raise HandlerImportError(f"{import_string!r} is not an async callable (define it with 'async def')")
    return obj
