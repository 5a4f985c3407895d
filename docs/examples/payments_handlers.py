"""Handlers for the payments example (docs/handlers.md)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from worker import BatchResult, Event, HandlerContext, PermanentError, StreamRecord, idempotent


class Payment(BaseModel):
    paymentId: str
    amount: Decimal
    currency: str
    status: str


@idempotent(key=lambda record: record.keys["paymentId"], table="idempotency")
async def audit_captured(record: StreamRecord, ctx: HandlerContext) -> None:
    """Write one audit row per captured payment and publish PaymentCaptured."""
    payment = record.new_image_as(Payment)  # an invalid image is parked, not retried
    if payment.amount <= 0:
        raise PermanentError(f"payment {payment.paymentId} has amount {payment.amount}")
    audit = await ctx.table("audit")
    await audit.put_item(Item={"paymentId": payment.paymentId, "amount": payment.amount,
                               "currency": payment.currency, "attempt": ctx.attempt})
    await ctx.publisher.publish(Event.derive(
        type="PaymentCaptured", source=ctx.config.publisher.source, dedup_key=payment.paymentId,
        correlation_id=payment.paymentId, causation_id=record.event_id,
        time=record.approximate_creation_time,
        payload={"paymentId": payment.paymentId, "amount": str(payment.amount)},
    ))
    ctx.log.info("audit captured payment", payment_id=payment.paymentId)


async def record_refunds(records: list[StreamRecord], ctx: HandlerContext) -> BatchResult:
    """Record each refund; report the ones that failed so that only those are retried."""
    audit = await ctx.table("audit")
    failed = []
    for record in records:
        refund = record.new_image_as(Payment)
        if refund.currency not in ("EUR", "USD"):
            failed.append(record)
            continue
        await audit.update_item(Key={"paymentId": refund.paymentId},
                                UpdateExpression="SET refunded = :yes",
                                ExpressionAttributeValues={":yes": True})
    return BatchResult(failed=tuple(failed))
