"""Lifecycle hooks: one rates client for the whole worker, opened at start, closed at stop."""

from __future__ import annotations

from decimal import Decimal

import structlog

from worker import HandlerContext, ShardInfo, StreamRecord, WorkerInfo

log = structlog.get_logger(__name__)


class RatesClient:
    """Stands for a costly client (an HTTP session, a connection pool): built once, shared."""

    def __init__(self) -> None:
        self.open = True
        self._to_eur = {"EUR": Decimal("1"), "USD": Decimal("0.92")}

    async def to_eur(self, amount: Decimal, currency: str) -> Decimal:
        if not self.open:
            raise RuntimeError("rates client used after close")
        return amount * self._to_eur[currency]

    async def close(self) -> None:
        self.open = False


async def on_start(info: WorkerInfo) -> None:
    # Whatever is set here (or returned as a mapping) is ctx.resources in every handler.
    info.resources.rates = RatesClient()


async def on_stop(info: WorkerInfo) -> None:
    await info.resources.rates.close()


async def on_shard_end(info: ShardInfo) -> None:
    log.info("shard done", shard=info.shard_id, last=info.checkpoint, children=info.child_shard_ids)


async def on_lease_lost(info: ShardInfo) -> None:
    # Another worker owns the shard now (info.reason: taken, expired or fenced) and resumes
    # after info.checkpoint: drop per-shard state here, never write for the shard again.
    log.warning("shard lost", shard=info.shard_id, reason=info.reason, resumes_after=info.checkpoint)


async def book_in_eur(record: StreamRecord, ctx: HandlerContext) -> None:
    payment = record.new_image or {}
    rates: RatesClient = ctx.resources.rates
    amount = await rates.to_eur(payment["amount"], payment["currency"])
    ledger = await ctx.table("ledger")
    await ledger.put_item(Item={"paymentId": payment["paymentId"], "amountEur": amount})
