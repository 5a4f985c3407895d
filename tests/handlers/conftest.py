from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.handlers import idem_handlers


@pytest.fixture(autouse=True)
def _reset_handlers() -> Iterator[None]:
    idem_handlers.reset()
    yield
    idem_handlers.reset()
