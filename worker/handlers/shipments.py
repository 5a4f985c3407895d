"""shipment-dispatch: a ShipmentRequested event starts the shipment, once.

The shipment row is created conditionally (``attribute_not_exists``): a redelivered
event finds it and does nothing. The chain ends here: no further event is published.
"""

from __future__ import annotations

from worker.errors import PermanentError
from worker.idempotency import put_if_absent
from worker.processing.context import HandlerContext
from worker.records import StreamRecord


async def dispatch_shipment(record: StreamRecord, ctx: HandlerContext) -> None:
    event = record.new_image or {}
    payload = event.get("payload") or {}
    # Bad data is permanent: a payload that is not a map, or an orderId that cannot be the
    # shipments key (a non-empty string, as order-processing publishes it), would otherwise
    # fail as AttributeError / ValidationException and be retried to no avail.
    order_id = payload.get("orderId") if isinstance(payload, dict) else None
    if not isinstance(order_id, str) or not order_id or payload.get("action") != "SHIP":
        shape = sorted(payload) if isinstance(payload, dict) else f"a {type(payload).__name__} payload"
        raise PermanentError(f"event {event.get('eventId')!r} is not a shipment request: {shape}")
    shipments = await ctx.table(ctx.options.get("shipments_table", "shipments"))
    item = {
        "orderId": order_id,
        "status": "DISPATCHED",
        "requestEventId": event.get("eventId"),
        "correlationId": event.get("correlationId"),
        "requestedAt": event.get("time"),
    }
    if await put_if_absent(shipments, item, "orderId"):
        ctx.log.info("dispatch shipment", order_id=str(order_id))
    else:
        ctx.log.info("skip shipment already dispatched", order_id=str(order_id))
