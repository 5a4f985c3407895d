"""One import place for handler authors, cheap to import, and typed."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

import worker

PUBLIC = ["BatchHandler", "BatchResult", "Event", "Handler", "HandlerContext", "PermanentError",
          "RetryableError", "StreamRecord"]


def test_the_handler_api_is_importable_from_the_top_level() -> None:
    from worker import (BatchHandler, BatchResult, Event, Handler, HandlerContext,  # noqa: F401
                        PermanentError, RetryableError, StreamRecord)
    from worker.errors import PermanentError as Defined

    assert PermanentError is Defined and issubclass(RetryableError, Exception)
    assert set(PUBLIC) <= set(worker.__all__) and set(PUBLIC) <= set(dir(worker))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        worker.Nope  # noqa: B018


def test_import_worker_alone_does_not_import_the_sdk() -> None:
    # The console script installs signal handlers right after ``import worker``: that
    # import must stay cheap, so the SDK and pydantic load only when a name is used.
    probe = ("import sys, worker; heavy = [m for m in ('aioboto3', 'botocore', 'pydantic', 'structlog') "
             "if m in sys.modules]; print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
    used = subprocess.run([sys.executable, "-c", "import sys, worker; worker.StreamRecord; print('botocore' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert used.stdout.strip() == "True"  # the probe above can see an import when there is one


def test_handler_context_is_typed_without_any() -> None:
    from structlog.typing import FilteringBoundLogger

    from worker import HandlerContext
    from worker.config import Config
    from worker.processing.context import Table
    from worker.publishing.base import Publisher

    # The names the module imports for type checkers only.
    names = {"FilteringBoundLogger": FilteringBoundLogger, "Config": Config, "Publisher": Publisher}
    hints = typing.get_type_hints(HandlerContext, localns=names)
    assert hints["log"] is FilteringBoundLogger and hints["config"] is Config
    assert typing.get_type_hints(HandlerContext.table, localns=names)["return"] is Table
    assert {"route", "shard_id", "attempt", "deadline", "options"} <= set(hints)
    assert not any(name.startswith("_") for name in hints)  # no private constructor argument


def test_make_record_alone_does_not_import_moto() -> None:
    probe = "import sys; from worker.testing import make_record; make_record('INSERT', {'k': 1}); print('moto' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    harness = "import sys; from worker.testing import route_harness; print('moto' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", harness], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"
