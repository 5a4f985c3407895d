"""Publishers against a real moto server: what lands at each destination, and how often."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any

import aioboto3
import pytest
from botocore.exceptions import ClientError

from worker.aws import AwsClients
from worker.config import AwsConfig, PublisherConfig
from worker.errors import RetryableError
from worker.publishing import Event, build_publisher, derive_event_id
from worker.publishing.eventbridge import EventBridgePublisher
from worker.publishing.outbox import OutboxPublisher
from worker.publishing.sns import SnsPublisher
from worker.publishing.sqs import SqsPublisher

pytestmark = pytest.mark.integration

# A fixed past time: a publisher that stamped "now" instead would be caught.
EVENT_TIME = datetime(2024, 5, 1, 12, 30, 45, 123000, tzinfo=timezone.utc)


def make_event(dedup_key: str = "order-1", source: str = "orders-service") -> Event:
    return Event.derive(
        type="OrderShipped",
        source=source,
        dedup_key=dedup_key,
        correlation_id="order-1",
        causation_id="shard-0001:000000000000000000042",
        time=EVENT_TIME,
        payload={"orderId": "order-1", "total": 42, "lines": [{"sku": "A-1", "qty": 2}], "meta": {"rush": True}},
    )


def envelope(event: Event) -> dict[str, Any]:
    return json.loads(event.to_json())


async def create_queue(sqs: Any, name: str, *, fifo: bool = False) -> tuple[str, str]:
    """Returns (url, arn)."""
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
    url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, attrs["Attributes"]["QueueArn"]


async def receive_all(sqs: Any, url: str, *, rounds: int = 5) -> list[dict[str, Any]]:
    """Receives and deletes until the queue answers empty after at least one message.

    Deleting matters on FIFO queues: an undeleted message blocks the rest of its group,
    which would hide duplicates instead of counting them.
    """
    messages: list[dict[str, Any]] = []
    for _ in range(rounds):
        response = await sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1 if messages else 2,
            MessageAttributeNames=["All"],
        )
        batch = response.get("Messages", [])
        if not batch and messages:
            break
        for message in batch:
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        messages.extend(batch)
    return messages


# --- outbox -------------------------------------------------------------------------


async def test_outbox_writes_one_item_for_repeated_publishes(aws: dict[str, Any], prefix: str) -> None:
    ddb = aws["dynamodb"]
    name = f"{prefix}events"
    await ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "eventId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "eventId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    endpoint = ddb.meta.endpoint_url
    async with aioboto3.Session(region_name="us-east-1").resource("dynamodb", endpoint_url=endpoint) as resource:
        table = await resource.Table(name)
        publisher = OutboxPublisher(table)
        event = make_event()
        for _ in range(3):
            await publisher.publish(event)
        # A redelivery whose payload differs must not overwrite the first write: the
        # conditional put, not the key alone, is what makes the outbox write-once.
        await publisher.publish(dataclasses.replace(event, payload={"changed": True}))
        await publisher.close()

        items = (await table.scan())["Items"]

    assert len(items) == 1
    item = items[0]
    assert item == {
        "eventId": event.id,
        "type": "OrderShipped",
        "source": "orders-service",
        "correlationId": "order-1",
        "causationId": "shard-0001:000000000000000000042",
        "time": "2024-05-01T12:30:45.123Z",
        "payload": {
            "orderId": "order-1",
            "total": 42,
            "lines": [{"sku": "A-1", "qty": 2}],
            "meta": {"rush": True},
        },
    }
    assert event.id == derive_event_id("OrderShipped", "order-1")


# --- SQS ----------------------------------------------------------------------------


async def test_sqs_standard_queue_carries_envelope_and_event_id(aws: dict[str, Any], prefix: str) -> None:
    sqs = aws["sqs"]
    url, _ = await create_queue(sqs, f"{prefix}out")
    event = make_event()

    await SqsPublisher(sqs, url).publish(event)

    messages = await receive_all(sqs, url)
    assert len(messages) == 1
    assert json.loads(messages[0]["Body"]) == envelope(event)
    assert messages[0]["MessageAttributes"] == {
        "eventId": {"DataType": "String", "StringValue": event.id},
        "type": {"DataType": "String", "StringValue": "OrderShipped"},
    }


async def test_sqs_fifo_queue_deduplicates_by_event_id(aws: dict[str, Any], prefix: str) -> None:
    sqs = aws["sqs"]
    url, _ = await create_queue(sqs, f"{prefix}out.fifo", fifo=True)
    publisher = SqsPublisher(sqs, url)
    first, second = make_event("order-1"), make_event("order-2")

    for _ in range(3):
        await publisher.publish(first)
    await publisher.publish(second)

    messages = await receive_all(sqs, url)
    # One per distinct event id, in publish order (same correlation id = same group).
    assert [json.loads(m["Body"])["eventId"] for m in messages] == [first.id, second.id]


# --- SNS ----------------------------------------------------------------------------


async def subscribe_queue(aws: dict[str, Any], topic_arn: str, queue_arn: str) -> None:
    await aws["sns"].subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )


async def test_sns_topic_delivers_envelope_to_subscribed_queue(aws: dict[str, Any], prefix: str) -> None:
    sqs, sns = aws["sqs"], aws["sns"]
    url, queue_arn = await create_queue(sqs, f"{prefix}sub")
    topic_arn = (await sns.create_topic(Name=f"{prefix}topic"))["TopicArn"]
    await subscribe_queue(aws, topic_arn, queue_arn)
    event = make_event()

    await SnsPublisher(sns, topic_arn).publish(event)

    messages = await receive_all(sqs, url)
    assert len(messages) == 1
    assert json.loads(messages[0]["Body"]) == envelope(event)
    assert messages[0]["MessageAttributes"]["eventId"] == {"DataType": "String", "StringValue": event.id}
    assert messages[0]["MessageAttributes"]["type"] == {"DataType": "String", "StringValue": "OrderShipped"}


async def test_sns_fifo_topic_to_fifo_queue_deduplicates_by_event_id(aws: dict[str, Any], prefix: str) -> None:
    # moto quirk: a FIFO topic itself keeps no deduplication state; it forwards
    # MessageDeduplicationId and MessageGroupId to its FIFO SQS subscribers, and the
    # queue drops the duplicates. Real SNS dedupes at the topic too. What a subscriber
    # sees is the same either way, and that is what this asserts. Without the
    # deduplication id moto rejects the publish (ContentBasedDeduplication is off).
    sqs, sns = aws["sqs"], aws["sns"]
    url, queue_arn = await create_queue(sqs, f"{prefix}sub.fifo", fifo=True)
    topic_arn = (
        await sns.create_topic(
            Name=f"{prefix}topic.fifo",
            Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "false"},
        )
    )["TopicArn"]
    await subscribe_queue(aws, topic_arn, queue_arn)
    publisher = SnsPublisher(sns, topic_arn)
    first, second = make_event("order-1"), make_event("order-2")

    for _ in range(3):
        await publisher.publish(first)
    await publisher.publish(second)

    messages = await receive_all(sqs, url)
    assert [json.loads(m["Body"])["eventId"] for m in messages] == [first.id, second.id]


# --- EventBridge --------------------------------------------------------------------


async def test_eventbridge_rule_routes_event_with_envelope_as_detail(aws: dict[str, Any], prefix: str) -> None:
    events, sqs = aws["events"], aws["sqs"]
    bus = f"{prefix}bus"
    source = f"{prefix}orders"
    await events.create_event_bus(Name=bus)
    await events.put_rule(Name=f"{prefix}rule", EventBusName=bus, EventPattern=json.dumps({"source": [source]}))
    url, queue_arn = await create_queue(sqs, f"{prefix}eb")
    await events.put_targets(Rule=f"{prefix}rule", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    event = make_event(source=source)
    publisher = EventBridgePublisher(events, bus)

    await publisher.publish(event)
    # An event from another source must not match the rule.
    await publisher.publish(make_event("order-2", source=f"{prefix}other"))

    messages = await receive_all(sqs, url)
    assert len(messages) == 1
    delivered = json.loads(messages[0]["Body"])
    assert delivered["detail"] == envelope(event)
    assert delivered["detail-type"] == "OrderShipped"
    assert delivered["source"] == source
    # The cause's time travels as the event time (moto renders it without milliseconds).
    assert delivered["time"] == "2024-05-01T12:30:45Z"


async def test_eventbridge_failed_entry_raises_retryable_error(aws: dict[str, Any], prefix: str) -> None:
    # moto fails an entry (FailedEntryCount=1, ErrorCode InvalidArgument) when Source is
    # empty, as AWS does; the call itself answers 200.
    bus = f"{prefix}bus"
    await aws["events"].create_event_bus(Name=bus)
    publisher = EventBridgePublisher(aws["events"], bus)

    with pytest.raises(RetryableError, match="InvalidArgument: Parameter Source is not valid"):
        await publisher.publish(make_event(source=""))


async def test_eventbridge_missing_bus_is_a_client_error(aws: dict[str, Any], prefix: str) -> None:
    # moto quirk: PutEvents to a bus that does not exist fails the whole request with
    # ResourceNotFoundException (HTTP 400) rather than failing the entry. The publisher
    # lets it propagate: it is a config problem, not a transient one.
    publisher = EventBridgePublisher(aws["events"], f"{prefix}no-such-bus")

    with pytest.raises(ClientError) as caught:
        await publisher.publish(make_event())
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


# --- factory ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"type": "outbox", "table": "events"}, OutboxPublisher),
        ({"type": "eventbridge", "event_bus": "default"}, EventBridgePublisher),
        ({"type": "sqs", "queue_url": "http://localhost/123456789012/q"}, SqsPublisher),
        ({"type": "sns", "topic_arn": "arn:aws:sns:us-east-1:123456789012:t"}, SnsPublisher),
    ],
)
async def test_build_publisher_returns_class_for_type(
    moto_url: str, settings: dict[str, str], expected: type
) -> None:
    clients = AwsClients(AwsConfig(region="us-east-1", endpoint_url=moto_url))
    try:
        publisher = await build_publisher(PublisherConfig(**settings), clients, {"events": "aws-events"})
        assert type(publisher) is expected
    finally:
        await clients.close()


async def test_build_publisher_outbox_writes_to_mapped_table(
    moto_url: str, aws: dict[str, Any], prefix: str
) -> None:
    ddb = aws["dynamodb"]
    name = f"{prefix}events-physical"
    await ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "eventId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "eventId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    clients = AwsClients(AwsConfig(region="us-east-1", endpoint_url=moto_url))
    try:
        publisher = await build_publisher(PublisherConfig(type="outbox", table="events"), clients, {"events": name})
        event = make_event()
        await publisher.publish(event)
    finally:
        await clients.close()

    item = (await ddb.get_item(TableName=name, Key={"eventId": {"S": event.id}}))["Item"]
    assert item["type"] == {"S": "OrderShipped"}
