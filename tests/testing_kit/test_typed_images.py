"""record.new_image_as / old_image_as: pydantic models over the images; failures are permanent."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import BaseModel

from worker import ImageValidationError, PermanentError
from worker.testing import make_record


class Order(BaseModel):
    orderId: str
    total: Decimal
    status: str = "NEW"


def test_images_validate_into_models() -> None:
    record = make_record("MODIFY", {"orderId": "o-1"}, new_image={"total": 12.5, "status": "PAID"},
                         old_image={"total": 12.5})
    assert record.new_image_as(Order) == Order(orderId="o-1", total=Decimal("12.5"), status="PAID")
    assert record.old_image_as(Order).status == "NEW"


def test_an_invalid_image_is_a_permanent_error_naming_the_field() -> None:
    record = make_record("INSERT", {"orderId": "o-1"}, new_image={"total": "lots"})
    with pytest.raises(ImageValidationError) as caught:
        record.new_image_as(Order)
    assert isinstance(caught.value, PermanentError) and not caught.value.retryable
    assert "NewImage does not validate as Order" in str(caught.value) and "total" in str(caught.value)


def test_an_absent_image_says_which_and_why() -> None:
    record = make_record("REMOVE", {"orderId": "o-1"}, old_image={"total": 1})
    with pytest.raises(ImageValidationError, match="NewImage is absent from this REMOVE record"):
        record.new_image_as(Order)
