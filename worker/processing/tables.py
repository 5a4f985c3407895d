"""Tables: the handlers' ``ctx.table(name)``, one cached aioboto3 ``Table`` per logical name."""

from __future__ import annotations

from typing import Any

from worker.aws import AwsClients


class Tables:
    def __init__(self, clients: AwsClients, names: dict[str, str]) -> None:
        self._clients = clients
        self._names = names  # logical name -> AWS table name
        self._tables: dict[str, Any] = {}

    async def table(self, logical_name: str) -> Any:
        if logical_name not in self._tables:
            if logical_name not in self._names:
                raise KeyError(f"no table {logical_name!r} in the config's tables section")
            resource = await self._clients.dynamodb_resource()
            self._tables[logical_name] = await resource.Table(self._names[logical_name])
        return self._tables[logical_name]
