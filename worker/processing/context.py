"""The handler API: what a handler gets besides its record, what a batch handler returns,
and the two signatures a route can name (``Handler``, ``BatchHandler``).

Users import these names from :mod:`worker`; this module is where they live.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Protocol

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from worker.config import Config
    from worker.publishing.base import Publisher
    from worker.records import StreamRecord


class Table(Protocol):
    """The part of an aioboto3 DynamoDB ``Table`` handlers use: plain Python values in and
    out (numbers come back as ``Decimal``), keyword arguments as in boto3's ``Table``."""

    async def get_item(self, **kwargs: Any) -> dict[str, Any]: ...

    async def put_item(self, **kwargs: Any) -> dict[str, Any]: ...

    async def update_item(self, **kwargs: Any) -> dict[str, Any]: ...

    async def delete_item(self, **kwargs: Any) -> dict[str, Any]: ...

    async def query(self, **kwargs: Any) -> dict[str, Any]: ...

    async def scan(self, **kwargs: Any) -> dict[str, Any]: ...


class TableProvider(Protocol):
    """Gives the ``Table`` of a logical table name from the config's ``tables`` section."""

    async def table(self, logical_name: str) -> Table: ...


class Resources:
    """Shared clients built once by ``hooks.on_start``: ``ctx.resources.http``.

    A plain namespace: ``on_start`` sets attributes on it (``info.resources.http = ...``)
    or returns a mapping whose items become attributes. Asking for one that was never set
    is an ``AttributeError`` that lists the ones that were.
    """

    def __init__(self, **items: Any) -> None:
        self.__dict__.update(items)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy/pickle probes
            raise AttributeError(name)
        known = ", ".join(sorted(self.__dict__)) or "none"
        raise AttributeError(f"no resource {name!r} (resources: {known}); hooks.on_start builds them")

    def __setattr__(self, name: str, value: Any) -> None:
        # Declared so that type checkers accept ``info.resources.http = ...`` in a hook.
        object.__setattr__(self, name, value)

    def __contains__(self, name: object) -> bool:
        return name in self.__dict__

    def __repr__(self) -> str:
        return f"Resources({', '.join(sorted(self.__dict__))})"


@dataclass(slots=True)
class HandlerContext:
    """Everything a handler call gets besides its record(s).

    ``route`` and ``options`` are the route's name and its ``options:`` mapping from the
    config; ``shard_id`` the shard the records come from; ``attempt`` counts calls with
    these records (1 on the first call, 2 on the first retry ...); ``deadline`` is the
    ``time.monotonic()`` value at which the route's ``timeout_seconds`` cancels the call
    (None: no timeout). ``log`` is a structlog logger already bound to the route, shard,
    sequence number and correlation id. ``resources`` holds the shared clients the
    config's ``hooks.on_start`` built (``ctx.resources.http``; empty without that hook).
    """

    route: str
    options: dict[str, Any]
    publisher: Publisher
    config: Config
    log: FilteringBoundLogger
    tables: TableProvider = field(repr=False)
    shard_id: str = ""
    attempt: int = 1
    deadline: float | None = None
    resources: Resources = field(default_factory=Resources)

    async def table(self, logical_name: str) -> Table:
        """The aioboto3 ``Table`` for the logical table ``logical_name`` (config ``tables:``)."""
        return await self.tables.table(logical_name)

    def remaining_seconds(self) -> float | None:
        """Seconds left before the route's timeout cancels this call (None: no timeout)."""
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.0)


@dataclass(frozen=True)
class BatchResult:
    """What a batch handler returns: the records (or their sequence numbers) that failed.
    Only those are retried; every other record of the batch counts as handled."""

    failed: tuple[StreamRecord | str, ...] = ()


class Handler(Protocol):
    """A per-record handler: ``async def handle(record, ctx) -> None``. Raise
    :class:`~worker.errors.PermanentError` for records retrying cannot fix; any other
    exception is retried."""

    def __call__(self, record: StreamRecord, ctx: HandlerContext, /) -> Awaitable[None]: ...


class BatchHandler(Protocol):
    """A batch handler: ``async def handle(records, ctx) -> BatchResult | None``. Returning
    None means every record succeeded; raising fails (and bisects) the whole batch."""

    def __call__(self, records: list[StreamRecord], ctx: HandlerContext, /) -> Awaitable[BatchResult | None]: ...
