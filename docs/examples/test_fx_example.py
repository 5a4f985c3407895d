"""The harness runs on_start on entry and on_stop on exit, as the worker does."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from worker.testing import Outcome, route_harness

CONFIG = Path(__file__).with_name("fx.yaml")


async def test_the_handler_uses_the_client_on_start_built_and_on_stop_closes_it() -> None:
    async with route_harness(CONFIG, "book-in-eur") as h:
        rates = h.resources.rates
        payment = h.record("INSERT", {"paymentId": "p-1"},
                           new_image={"paymentId": "p-1", "amount": 10, "currency": "USD"})

        assert await h.deliver([payment]) == [Outcome.HANDLED]

        ledger = await h.table("ledger")
        assert (await ledger.get_item(Key={"paymentId": "p-1"}))["Item"]["amountEur"] == Decimal("9.2")
        assert rates.open
    assert not rates.open
