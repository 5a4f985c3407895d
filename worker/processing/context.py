"""What a handler gets besides the record: tables, the publisher, a bound logger, config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

if TYPE_CHECKING:
    from worker.config import Config
    from worker.publishing.base import Publisher
    from worker.records import StreamRecord


class TableProvider(Protocol):
    async def table(self, logical_name: str) -> Any: ...


@dataclass
class HandlerContext:
    """Per-call context. ``await ctx.table("orders")`` gives an aioboto3 ``Table`` for the
    logical table ``orders`` (plain Python values in and out, numbers as ``Decimal``)."""

    route: str
    options: dict[str, Any]
    publisher: "Publisher"
    config: "Config"
    log: Any
    _tables: TableProvider = field(repr=False)

    async def table(self, logical_name: str) -> Any:
        return await self._tables.table(logical_name)


Handler = Callable[["StreamRecord", HandlerContext], Awaitable[None]]
