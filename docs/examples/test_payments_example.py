"""Unit tests of the payments handlers, written only with worker.testing (no AWS, no server)."""

from __future__ import annotations

from pathlib import Path

from worker.testing import Outcome, make_record, route_harness

CONFIG = Path(__file__).with_name("payments.yaml")


async def test_a_captured_payment_is_audited_once_and_published() -> None:
    async with route_harness(CONFIG, "audit-captured") as h:
        captured = h.record("MODIFY", {"paymentId": "p-1"},
                            new_image={"amount": 12.5, "currency": "EUR", "status": "CAPTURED"},
                            old_image={"amount": 12.5, "currency": "EUR", "status": "AUTHORIZED"})
        pending = h.record("INSERT", {"paymentId": "p-2"},
                           new_image={"amount": 3, "currency": "EUR", "status": "PENDING"})

        assert await h.deliver([captured, pending]) == [Outcome.HANDLED, Outcome.FILTERED]
        # Delivered again (a crash before the checkpoint): no second effect.
        assert await h.deliver([captured]) == [Outcome.HANDLED]

        audit = await h.table("audit")
        row = (await audit.get_item(Key={"paymentId": "p-1"}))["Item"]
        assert row["currency"] == "EUR" and row["attempt"] == 1
        assert [event.type for event in h.published] == ["PaymentCaptured"]


async def test_a_payment_that_does_not_validate_is_parked_with_the_reason() -> None:
    async with route_harness(CONFIG, "audit-captured") as h:
        broken = h.record("INSERT", {"paymentId": "p-3"}, new_image={"status": "CAPTURED"})

        assert await h.deliver([broken]) == [Outcome.PARKED]
        [letter] = h.dead_letters
        assert letter.error_class == "permanent" and "amount" in letter.error_message


async def test_only_the_failed_refund_is_retried_and_then_parked() -> None:
    async with route_harness(CONFIG, "record-refunds") as h:
        good = h.record("MODIFY", {"paymentId": "p-4"},
                        new_image={"amount": 5, "currency": "USD", "status": "REFUNDED"})
        odd = h.record("MODIFY", {"paymentId": "p-5"},
                       new_image={"amount": 5, "currency": "XTS", "status": "REFUNDED"})

        assert await h.deliver([good, odd]) == [Outcome.HANDLED, Outcome.PARKED]
        assert [letter.sequence_number for letter in h.dead_letters] == [odd.sequence_number]


def test_a_ttl_delete_is_told_apart_from_a_user_delete() -> None:
    expired = make_record("REMOVE", {"paymentId": "p-6"}, old_image={"status": "PENDING"},
                          table="payments", ttl_delete=True)
    deleted = make_record("REMOVE", {"paymentId": "p-6"}, old_image={"status": "PENDING"}, table="payments")
    assert expired.is_ttl_delete and not deleted.is_ttl_delete
