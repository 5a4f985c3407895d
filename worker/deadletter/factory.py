"""Builds dead-letter destinations and replay sources from config and shared clients."""

from __future__ import annotations

from worker.aws import AwsClients
from worker.config import DeadLetterConfig
from worker.deadletter.base import DeadLetterDestination, DeadLetterSource
from worker.deadletter.dynamodb import DynamoDbDeadLetters
from worker.deadletter.jsonl import JsonlDeadLetters
from worker.deadletter.sns import REPLAY_HINT, SnsDeadLetters
from worker.deadletter.sqs import SqsDeadLetters
from worker.errors import ConfigError

Store = SqsDeadLetters | SnsDeadLetters | DynamoDbDeadLetters | JsonlDeadLetters


async def build_dead_letters(
    config: DeadLetterConfig | None, clients: AwsClients, table_names: dict[str, str]
) -> DeadLetterDestination | None:
    """The destination for ``config``, or None when no dead-letter destination is configured.

    ``table_names`` maps logical table names to AWS names (``config.table`` is logical).
    Raises :class:`ConfigError` for a logical table name that is not in it.
    """
    if config is None:
        return None
    return await _build(config, clients, table_names)


async def build_dead_letter_source(
    config: DeadLetterConfig, clients: AwsClients, table_names: dict[str, str]
) -> DeadLetterSource:
    """The replay source for ``config``. SNS cannot be one: raises :class:`ConfigError`."""
    if config.type == "sns":
        raise ConfigError([("dead_letter.type", f"dead-letter type 'sns' cannot be replayed: {REPLAY_HINT}")])
    store = await _build(config, clients, table_names)
    assert isinstance(store, DeadLetterSource)
    return store


async def _build(config: DeadLetterConfig, clients: AwsClients, table_names: dict[str, str]) -> Store:
    # DeadLetterConfig has already checked that the field ``type`` needs is set; the
    # asserts only narrow the types.
    if config.type == "sqs":
        assert config.queue_url is not None
        return SqsDeadLetters(await clients.client("sqs"), config.queue_url)
    if config.type == "sns":
        assert config.topic_arn is not None
        return SnsDeadLetters(await clients.client("sns"), config.topic_arn)
    if config.type == "dynamodb":
        assert config.table is not None
        if config.table not in table_names:
            known = ", ".join(sorted(table_names)) or "none"
            raise ConfigError([("dead_letter.table", f"unknown table {config.table!r} (known: {known})")])
        resource = await clients.dynamodb_resource()
        return DynamoDbDeadLetters(await resource.Table(table_names[config.table]))
    if config.type == "jsonl":
        assert config.path is not None
        return JsonlDeadLetters(config.path)
    raise ValueError(f"unknown dead-letter type {config.type!r}")
