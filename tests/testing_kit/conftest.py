from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from tests.testing_kit import kit_handlers

HANDLERS = "tests.testing_kit.kit_handlers"


@pytest.fixture(autouse=True)
def _reset_handlers() -> Iterator[None]:
    kit_handlers.reset()
    yield
    kit_handlers.reset()


def kit_config(*routes: dict[str, Any]) -> dict[str, Any]:
    """A config with an ``items`` table (key ``id``), a ``mirror`` table and the given routes."""
    return {
        "aws": {"region": "eu-west-1"},
        "tables": {"items": {"name": "kit-items", "key": "id"}, "mirror": {"name": "kit-mirror", "key": "id"},
                   "events": {"name": "kit-events", "key": "eventId"}},
        "routes": list(routes),
    }


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    def write(*routes: dict[str, Any]) -> Path:
        path = tmp_path / "worker.yaml"
        path.write_text(yaml.safe_dump(kit_config(*routes)))
        return path

    return write
