"""Creates the application tables (streams on where needed) and the lease table.

For local use and tests; production creates tables from ``deploy/`` templates.
"""

from __future__ import annotations

from typing import Any

import structlog
from botocore.exceptions import ClientError

from worker.aws import AwsClients
from worker.aws_errors import error_code
from worker.config import Config
from worker.leases.table import LeaseTable

log = structlog.get_logger(__name__)


async def create_application_table(client: Any, name: str, key: str, with_stream: bool) -> bool:
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": key, "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if with_stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    try:
        await client.create_table(**kwargs)
    except ClientError as exc:
        if error_code(exc) == "ResourceInUseException":
            return False
        raise
    await client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return True


async def create_tables(config: Config, clients: AwsClients) -> list[str]:
    """Create every missing table of the config. Returns the names it created."""
    ddb = await clients.client("dynamodb")
    streamed = set(config.consumed_tables)
    if config.publisher.type == "outbox" and config.publisher.table:
        streamed.add(config.publisher.table)
    created = []
    for logical, table in config.tables.items():
        if await create_application_table(ddb, table.name, table.key, logical in streamed):
            created.append(table.name)
            log.info("create table", table=table.name, stream=logical in streamed)
    lease_table = LeaseTable(ddb, await clients.dynamodb_resource(), config.leases.table)
    if await lease_table.create_if_missing():
        created.append(config.leases.table)
    return created
