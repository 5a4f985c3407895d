"""Builds the configured publisher from shared clients."""

from __future__ import annotations

from typing import Callable

from worker.aws import AwsClients
from worker.config import PublisherConfig
from worker.publishing.base import Publisher
from worker.publishing.eventbridge import EventBridgePublisher
from worker.publishing.none import NoPublisher
from worker.publishing.outbox import OutboxPublisher
from worker.publishing.sns import SnsPublisher
from worker.publishing.sqs import SqsPublisher


async def build_publisher(
    config: PublisherConfig, clients: AwsClients, table_names: dict[str, str], *,
    wake_readers: Callable[[str], None] | None = None,
) -> Publisher:
    """``table_names`` maps logical table names to AWS names (the outbox uses the logical one).
    ``wake_readers(logical table)``: called after each outbox write, when this process also
    reads the outbox table's stream.

    PublisherConfig has already checked that the target of ``type`` is set; the asserts
    only narrow the types.
    """
    if config.type == "none":
        return NoPublisher()
    if config.type == "outbox":
        assert config.table is not None
        resource = await clients.dynamodb_resource()
        table = await resource.Table(table_names[config.table])
        outbox = config.table
        return OutboxPublisher(table, None if wake_readers is None else lambda: wake_readers(outbox))
    if config.type == "eventbridge":
        return EventBridgePublisher(await clients.client("events"), config.event_bus)
    if config.type == "sqs":
        assert config.queue_url is not None
        return SqsPublisher(await clients.client("sqs"), config.queue_url)
    if config.type == "sns":
        assert config.topic_arn is not None
        return SnsPublisher(await clients.client("sns"), config.topic_arn)
    raise ValueError(f"unknown publisher type {config.type!r}")
