"""Handler targets for the import-string tests (Router.from_config)."""

from __future__ import annotations

from typing import Any


async def good_handler(record: Any, ctx: Any) -> None:
    return None


def sync_handler(record: Any, ctx: Any) -> None:
    return None


class HandlerClass:
    async def __call__(self, record: Any, ctx: Any) -> None:
        return None


callable_instance = HandlerClass()

not_callable = 42
