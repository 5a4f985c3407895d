"""records.decode_image's scalar fast path gives exactly what the SDK's TypeDeserializer gives."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from hypothesis import given
from hypothesis import strategies as st

from worker.records import decode_image

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=Decimal("-1e20"),
                max_value=Decimal("1e20")).map(str),
)
scalars = st.one_of(
    st.text(max_size=20).map(lambda v: {"S": v}),
    numbers.map(lambda v: {"N": v}),
    st.booleans().map(lambda v: {"BOOL": v}),
    st.just({"NULL": True}),
    st.binary(max_size=10).map(lambda v: {"B": v}),
    st.sets(st.text(max_size=5), min_size=1, max_size=3).map(lambda v: {"SS": sorted(v)}),
    st.sets(st.integers(-1000, 1000), min_size=1, max_size=3).map(lambda v: {"NS": [str(n) for n in sorted(v)]}),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda v: {"L": v}),
        st.dictionaries(st.text(min_size=1, max_size=5), inner, max_size=3).map(lambda v: {"M": v}),
    ),
    max_leaves=12,
)
images = st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=8)


@given(images)
def test_fast_path_equals_the_sdk(image: dict[str, Any]) -> None:
    sdk = TypeDeserializer()
    expected = {name: sdk.deserialize(value) for name, value in image.items()}
    decoded = decode_image(image)
    assert decoded == expected
    # Same types too (Decimal, not float or int; None; bool).
    assert [type(v) for v in decoded.values()] == [type(v) for v in expected.values()]  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [{}, {"X": "1"}, "text", ["S", "x"]])
def test_malformed_values_fail_as_in_the_sdk(bad: Any) -> None:
    with pytest.raises(Exception) as ours:
        decode_image({"a": bad})
    with pytest.raises(Exception) as sdks:
        TypeDeserializer().deserialize(bad)
    assert type(ours.value) is type(sdks.value)
