"""order-processing: a NEW order becomes PROCESSING and a ShipmentRequested event is published.

Idempotent under redelivery: the status change is conditional on ``NEW``; if it already
happened (a redelivery, or a crash between the update and the publish), the order is
read back and the event is published again only if the order is PROCESSING. The event id
is derived from the order id, so the outbox keeps exactly one event per order.
"""

from __future__ import annotations

from typing import Any

from worker.errors import PermanentError
from worker.idempotency import update_if
from worker.processing.context import HandlerContext
from worker.publishing.events import Event
from worker.publishing.none import publishes_events
from worker.records import StreamRecord

SHIPMENT_REQUESTED = "ShipmentRequested"


def _order_id(record: StreamRecord) -> Any:
    image = record.new_image or {}
    order_id = image.get("orderId", record.keys.get("orderId"))
    if order_id is None:
        raise PermanentError("order record has no orderId")
    return order_id


@publishes_events
async def process_order(record: StreamRecord, ctx: HandlerContext) -> None:
    order_id = _order_id(record)
    orders = await ctx.table(ctx.options.get("orders_table", "orders"))
    processing = await update_if(
        orders,
        Key={"orderId": order_id},
        UpdateExpression="SET #status = :processing, processingStartedAt = :at",
        ConditionExpression="#status = :new",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={
            ":processing": "PROCESSING",
            ":new": "NEW",
            ":at": record.approximate_creation_time.isoformat() if record.approximate_creation_time else "",
        },
    )
    if processing:
        ctx.log.info("set order processing", order_id=str(order_id))
    else:
        current = (await orders.get_item(Key={"orderId": order_id}, ConsistentRead=True)).get("Item")
        if current is None or current.get("status") != "PROCESSING":
            # Deleted, cancelled or moved on by someone else: nothing to ship from here.
            ctx.log.info("skip order not in NEW", order_id=str(order_id), status=(current or {}).get("status"))
            return
    event = Event.derive(
        type=SHIPMENT_REQUESTED,
        source=ctx.config.publisher.source,
        dedup_key=str(order_id),
        correlation_id=str(order_id),
        causation_id=record.event_id,
        time=record.approximate_creation_time,
        payload={"orderId": order_id, "action": "SHIP"},
    )
    await ctx.publisher.publish(event)
    ctx.log.info("publish shipment event", order_id=str(order_id), event_id=event.id)
