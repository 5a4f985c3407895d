"""Route filter patterns: Lambda FilterCriteria semantics on botocore-shaped stream records."""

from __future__ import annotations

import base64
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.processing.filters import FilterPatternError, compile_filters, compile_pattern

RECORD: dict[str, Any] = {
    "eventID": "e-1",
    "eventName": "INSERT",
    "eventSource": "aws:dynamodb",
    "awsRegion": "eu-west-1",
    "dynamodb": {
        "ApproximateCreationDateTime": datetime(2024, 1, 1, tzinfo=timezone.utc),  # 1704067200
        "Keys": {"orderId": {"S": "eu-o-1"}},
        "NewImage": {
            "orderId": {"S": "eu-o-1"},
            "status": {"S": "NEW"},
            "code": {"S": "12"},
            "city": {"S": "Köln"},
            "glob": {"S": "a*b"},
            "qty": {"N": "12"},
            "price": {"N": "12.50"},
            "tags": {"SS": ["a", "b"]},
            "sizes": {"NS": ["1", "2.5"]},
            "flag": {"BOOL": True},
            "gone": {"NULL": True},
            "blob": {"B": b"hello"},
            "payload": {"M": {
                "action": {"S": "SHIP"},
                "items": {"L": [{"N": "1"}, {"S": "x"}, {"M": {"sku": {"S": "K-1"}}}]},
            }},
        },
        "OldImage": {"orderId": {"S": "eu-o-1"}, "status": {"S": "DRAFT"}},
        "SequenceNumber": "111",
        "SizeBytes": 123,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    },
}

REMOVE_RECORD: dict[str, Any] = {
    "eventID": "e-2",
    "eventName": "REMOVE",
    "eventSource": "aws:dynamodb",
    "dynamodb": {"Keys": {"orderId": {"S": "o-9"}}, "OldImage": {"status": {"S": "DONE"}}, "SizeBytes": 9},
}


def new(attribute: str, leaf: Any) -> dict[str, Any]:
    """A pattern on one NewImage attribute."""
    return {"dynamodb": {"NewImage": {attribute: leaf}}}


def matches(pattern: Any, record: Any = RECORD) -> bool:
    return compile_pattern(pattern)(record)


# ---- every operator, positive and negative, on the sample record ------------------------------

CASES: list[tuple[str, Any, bool]] = [
    # exact strings / eventName lists / case sensitivity
    ("eventName exact", {"eventName": ["INSERT"]}, True),
    ("eventName none of", {"eventName": ["MODIFY", "REMOVE"]}, False),
    ("eventName one of", {"eventName": ["MODIFY", "INSERT"]}, True),
    ("eventName is case-sensitive", {"eventName": ["insert"]}, False),
    ("eventSource", {"eventSource": ["aws:dynamodb"]}, True),
    ("S exact", new("status", {"S": ["NEW"]}), True),
    ("S exact miss", new("status", {"S": ["OLD"]}), False),
    ("wrong type descriptor", new("status", {"N": ["NEW"]}), False),
    ("missing attribute", new("missing", {"S": ["x"]}), False),
    ("Keys", {"dynamodb": {"Keys": {"orderId": {"S": ["eu-o-1"]}}}}, True),
    ("OldImage", {"dynamodb": {"OldImage": {"status": {"S": ["DRAFT"]}}}}, True),
    ("OldImage miss", {"dynamodb": {"OldImage": {"status": {"S": ["NEW"]}}}}, False),
    # booleans and null
    ("BOOL true", new("flag", {"BOOL": [True]}), True),
    ("BOOL false", new("flag", {"BOOL": [False]}), False),
    ("BOOL is not the number 1", new("flag", {"BOOL": [1]}), False),
    ("NULL true", new("gone", {"NULL": [True]}), True),
    # plain numbers (SizeBytes is an int in the record)
    ("int exact", {"dynamodb": {"SizeBytes": [123]}}, True),
    ("float exact", {"dynamodb": {"SizeBytes": [123.0]}}, True),
    ("int exact miss", {"dynamodb": {"SizeBytes": [124]}}, False),
    ("number string is not a number outside N", {"dynamodb": {"SizeBytes": ["123"]}}, False),
    ("numeric on int", {"dynamodb": {"SizeBytes": [{"numeric": [">", 100, "<", 200]}]}}, True),
    ("numeric on int miss", {"dynamodb": {"SizeBytes": [{"numeric": [">", 123]}]}}, False),
    # N strings compare numerically (Decimal)
    ("N exact int", new("qty", {"N": [12]}), True),
    ("N exact float", new("qty", {"N": [12.0]}), True),
    ("N exact miss", new("qty", {"N": [13]}), False),
    ("N exact decimal value", new("price", {"N": [12.5]}), True),
    ("N string pattern is a string", new("qty", {"N": ["12"]}), True),
    ("N string pattern does not parse", new("price", {"N": ["12.5"]}), False),
    ("N string pattern vs 12.0", new("qty", {"N": ["12.0"]}), False),
    ("numeric >", new("qty", {"N": [{"numeric": [">", 10]}]}), True),
    ("numeric > at bound", new("qty", {"N": [{"numeric": [">", 12]}]}), False),
    ("numeric >= at bound", new("qty", {"N": [{"numeric": [">=", 12]}]}), True),
    ("numeric < at bound", new("qty", {"N": [{"numeric": ["<", 12]}]}), False),
    ("numeric <= at bound", new("qty", {"N": [{"numeric": ["<=", 12]}]}), True),
    ("numeric =", new("qty", {"N": [{"numeric": ["=", 12]}]}), True),
    ("numeric = float", new("qty", {"N": [{"numeric": ["=", 12.0]}]}), True),
    ("numeric = miss", new("qty", {"N": [{"numeric": ["=", 11]}]}), False),
    ("range inside", new("qty", {"N": [{"numeric": [">", 10, "<=", 100]}]}), True),
    ("range above lower only", new("qty", {"N": [{"numeric": [">", 12, "<=", 100]}]}), False),
    ("range below upper only", new("qty", {"N": [{"numeric": [">", 0, "<", 12]}]}), False),
    ("range tight", new("qty", {"N": [{"numeric": [">=", 12, "<", 12.000001]}]}), True),
    ("range on decimal", new("price", {"N": [{"numeric": [">", 12.49, "<", 12.51]}]}), True),
    ("range on decimal miss", new("price", {"N": [{"numeric": [">", 12.5, "<", 13]}]}), False),
    ("numbers are not parsed under S", new("code", {"S": [12]}), False),
    ("numeric is not parsed under S", new("code", {"S": [{"numeric": [">", 0]}]}), False),
    ("numeric on a text value", new("status", {"S": [{"numeric": [">", 0]}]}), False),
    # datetime is epoch seconds, like Lambda's event
    ("datetime =", {"dynamodb": {"ApproximateCreationDateTime": [{"numeric": ["=", 1704067200]}]}}, True),
    ("datetime exact", {"dynamodb": {"ApproximateCreationDateTime": [1704067200]}}, True),
    ("datetime >", {"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">", 1704067200]}]}}, False),
    # sets: any element
    ("SS any element", new("tags", {"SS": ["b"]}), True),
    ("SS no element", new("tags", {"SS": ["c"]}), False),
    ("SS OR alternatives", new("tags", {"SS": ["c", "a"]}), True),
    ("NS exact", new("sizes", {"NS": [2.5]}), True),
    ("NS exact miss", new("sizes", {"NS": [3]}), False),
    ("NS numeric", new("sizes", {"NS": [{"numeric": [">", 2]}]}), True),
    ("NS numeric miss", new("sizes", {"NS": [{"numeric": [">", 3]}]}), False),
    ("SS prefix", new("tags", {"SS": [{"prefix": "b"}]}), True),
    # binary compares as base64 text
    ("B base64", new("blob", {"B": [base64.b64encode(b"hello").decode()]}), True),
    ("B base64 miss", new("blob", {"B": ["aGVsbG9v"]}), False),
    # prefix / suffix
    ("prefix", new("orderId", {"S": [{"prefix": "eu-"}]}), True),
    ("prefix miss", new("orderId", {"S": [{"prefix": "us-"}]}), False),
    ("prefix case-sensitive", new("orderId", {"S": [{"prefix": "EU-"}]}), False),
    ("prefix ignore case", new("orderId", {"S": [{"prefix": {"equals-ignore-case": "EU-"}}]}), True),
    ("prefix ignore case miss", new("orderId", {"S": [{"prefix": {"equals-ignore-case": "US-"}}]}), False),
    ("prefix on a number", {"dynamodb": {"SizeBytes": [{"prefix": "1"}]}}, False),
    ("suffix", new("orderId", {"S": [{"suffix": "-1"}]}), True),
    ("suffix miss", new("orderId", {"S": [{"suffix": "-2"}]}), False),
    ("suffix ignore case", new("orderId", {"S": [{"suffix": {"equals-ignore-case": "O-1"}}]}), True),
    ("suffix ignore case miss", new("orderId", {"S": [{"suffix": {"equals-ignore-case": "O-2"}}]}), False),
    # equals-ignore-case
    ("equals-ignore-case", new("status", {"S": [{"equals-ignore-case": "new"}]}), True),
    ("equals-ignore-case miss", new("status", {"S": [{"equals-ignore-case": "old"}]}), False),
    ("equals-ignore-case unicode", new("city", {"S": [{"equals-ignore-case": "KÖLN"}]}), True),
    ("equals-ignore-case is not prefix", new("status", {"S": [{"equals-ignore-case": "ne"}]}), False),
    # wildcard
    ("wildcard", new("orderId", {"S": [{"wildcard": "eu-*-1"}]}), True),
    ("wildcard anywhere", new("orderId", {"S": [{"wildcard": "*o*"}]}), True),
    ("wildcard miss", new("orderId", {"S": [{"wildcard": "us-*"}]}), False),
    ("wildcard is anchored", new("orderId", {"S": [{"wildcard": "eu-*-"}]}), False),
    ("wildcard escaped star is literal", new("orderId", {"S": [{"wildcard": "eu-o-\\*"}]}), False),
    ("wildcard literal star", new("glob", {"S": [{"wildcard": "a\\*b"}]}), True),
    ("wildcard literal star miss", new("glob", {"S": [{"wildcard": "a\\*c"}]}), False),
    # anything-but
    ("anything-but value", new("status", {"S": [{"anything-but": "DONE"}]}), True),
    ("anything-but value miss", new("status", {"S": [{"anything-but": "NEW"}]}), False),
    ("anything-but list", new("status", {"S": [{"anything-but": ["CANCELLED", "DONE"]}]}), True),
    ("anything-but list miss", new("status", {"S": [{"anything-but": ["CANCELLED", "NEW"]}]}), False),
    ("anything-but number on N", new("qty", {"N": [{"anything-but": [12.0]}]}), False),
    ("anything-but number on N other", new("qty", {"N": [{"anything-but": [13]}]}), True),
    ("anything-but prefix", new("orderId", {"S": [{"anything-but": {"prefix": "us-"}}]}), True),
    ("anything-but prefix miss", new("orderId", {"S": [{"anything-but": {"prefix": "eu-"}}]}), False),
    ("anything-but suffix miss", new("orderId", {"S": [{"anything-but": {"suffix": "-1"}}]}), False),
    ("anything-but ignore case miss", new("orderId", {"S": [{"anything-but": {"equals-ignore-case": "EU-O-1"}}]}),
     False),
    ("anything-but ignore case list", new("status", {"S": [{"anything-but": {"equals-ignore-case": ["x", "y"]}}]}),
     True),
    ("anything-but ignore case list miss",
     new("status", {"S": [{"anything-but": {"equals-ignore-case": ["x", "new"]}}]}), False),
    ("anything-but on a set, one element left", new("tags", {"SS": [{"anything-but": "a"}]}), True),
    ("anything-but on a set, none left", new("tags", {"SS": [{"anything-but": ["a", "b"]}]}), False),
    ("anything-but needs the key", new("missing", {"S": [{"anything-but": "x"}]}), False),
    ("anything-but does not match a map", new("payload", [{"anything-but": "x"}]), False),
    # exists
    ("exists false, absent", new("deletedAt", [{"exists": False}]), True),
    ("exists true, absent", new("deletedAt", [{"exists": True}]), False),
    ("exists true, present", new("status", [{"exists": True}]), True),
    ("exists false, present", new("status", [{"exists": False}]), False),
    ("exists true on NULL attribute", new("gone", [{"exists": True}]), True),
    ("exists true on NULL descriptor", new("gone", {"NULL": [{"exists": True}]}), True),
    ("exists false on NULL attribute", new("gone", [{"exists": False}]), False),
    ("exists or value", new("deletedAt", {"S": ["x", {"exists": False}]}), True),
    # nested maps (M) and lists (L)
    ("M nested", new("payload", {"M": {"action": {"S": ["SHIP"]}}}), True),
    ("M nested miss", new("payload", {"M": {"action": {"S": ["HOLD"]}}}), False),
    ("M nested prefix", new("payload", {"M": {"action": {"S": [{"prefix": "SH"}]}}}), True),
    ("L any element S", new("payload", {"M": {"items": {"L": {"S": ["x"]}}}}), True),
    ("L any element N", new("payload", {"M": {"items": {"L": {"N": [1]}}}}), True),
    ("L any element miss", new("payload", {"M": {"items": {"L": {"S": ["y"]}}}}), False),
    ("L map element", new("payload", {"M": {"items": {"L": {"M": {"sku": {"S": [{"prefix": "K-"}]}}}}}}), True),
    ("L keys must share one element", new("payload", {"M": {"items": {"L": {"S": ["x"], "N": [1]}}}}), False),
    ("leaf never equals a map", new("payload", ["SHIP"]), False),
    # AND across keys, OR inside leaves
    ("AND all match", {"eventName": ["INSERT"], **new("status", {"S": ["NEW"]})}, True),
    ("AND one fails", {"eventName": ["INSERT"], **new("status", {"S": ["DONE"]})}, False),
    ("AND other fails", {"eventName": ["MODIFY"], **new("status", {"S": ["NEW"]})}, False),
    ("AND within image",
     {"dynamodb": {"NewImage": {"status": {"S": ["NEW"]}, "qty": {"N": [{"numeric": [">", 10]}]},
                                "deletedAt": [{"exists": False}]}}}, True),
    ("AND within image fails",
     {"dynamodb": {"NewImage": {"status": {"S": ["NEW"]}, "qty": {"N": [{"numeric": [">", 20]}]}}}}, False),
    ("AND new and old images",
     {"dynamodb": {"NewImage": {"status": {"S": ["NEW"]}}, "OldImage": {"status": {"S": ["DRAFT"]}}}}, True),
    ("OR of exact and operator", new("status", {"S": ["DONE", {"prefix": "N"}]}), True),
    ("OR of operators, none match", new("status", {"S": [{"prefix": "X"}, {"suffix": "Y"}]}), False),
]


@pytest.mark.parametrize(("pattern", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_pattern_against_sample_record(pattern: Any, expected: bool) -> None:
    assert matches(pattern) is expected


REMOVE_CASES: list[tuple[str, Any, bool]] = [
    ("no NewImage: attribute absent", new("deletedAt", [{"exists": False}]), True),
    ("no NewImage: typed attribute absent", new("status", {"S": [{"exists": False}]}), True),
    ("no NewImage: exists true fails", new("status", [{"exists": True}]), False),
    ("no NewImage: value fails", new("status", {"S": ["DONE"]}), False),
    ("no NewImage: anything-but fails", new("status", {"S": [{"anything-but": "x"}]}), False),
    ("absent AND value", {"eventName": ["REMOVE"], **new("status", [{"exists": False}])}, True),
    ("absent AND failing value",
     {"dynamodb": {"NewImage": {"status": [{"exists": False}], "qty": {"N": [12]}}}}, False),
    ("OldImage still matches", {"eventName": ["REMOVE"], "dynamodb": {"OldImage": {"status": {"S": ["DONE"]}}}},
     True),
]


@pytest.mark.parametrize(("pattern", "expected"), [c[1:] for c in REMOVE_CASES], ids=[c[0] for c in REMOVE_CASES])
def test_pattern_against_remove_record_without_new_image(pattern: Any, expected: bool) -> None:
    assert matches(pattern, REMOVE_RECORD) is expected


NULL_RECORD = {"a": None, "b": "x", "n": 0, "t": True}

NULL_CASES: list[tuple[str, Any, bool]] = [
    ("null exact", {"a": [None]}, True),
    ("null is not a string", {"a": ["None"]}, False),
    ("string is not null", {"b": [None]}, False),
    ("null is present", {"a": [{"exists": True}]}, True),
    ("null is not absent", {"a": [{"exists": False}]}, False),
    ("anything-but string accepts null", {"a": [{"anything-but": "x"}]}, True),
    ("anything-but null", {"a": [{"anything-but": [None]}]}, False),
    ("zero is not false", {"n": [False]}, False),
    ("true is not one", {"t": [1]}, False),
    ("true is true", {"t": [True]}, True),
    ("anything-but 1 accepts true", {"t": [{"anything-but": 1}]}, True),
]


@pytest.mark.parametrize(("pattern", "expected"), [c[1:] for c in NULL_CASES], ids=[c[0] for c in NULL_CASES])
def test_null_and_bool_values_are_typed(pattern: Any, expected: bool) -> None:
    assert matches(pattern, NULL_RECORD) is expected


def test_naive_datetime_counts_as_utc() -> None:
    record = {"dynamodb": {"ApproximateCreationDateTime": datetime(2024, 1, 1, 0, 0, 1, 500000)}}
    assert matches({"dynamodb": {"ApproximateCreationDateTime": [1704067201.5]}}, record) is True
    assert matches({"dynamodb": {"ApproximateCreationDateTime": [{"numeric": ["<", 1704067201.5]}]}}, record) is False


# ---- odd records never raise and never match ----------------------------------------------

ODD_RECORDS: list[Any] = [
    {},
    {"dynamodb": None},
    {"dynamodb": "x"},
    {"dynamodb": []},
    {"dynamodb": {"NewImage": None}},
    {"dynamodb": {"NewImage": ["status"]}},
    {"dynamodb": {"NewImage": {"qty": "12", "status": "NEW"}}},
    {"dynamodb": {"NewImage": {"qty": {"N": None}, "status": {"S": None}}}},
    {"dynamodb": {"NewImage": {"qty": {"N": "abc"}, "status": {"S": 5}}}},
    {"dynamodb": {"NewImage": {"qty": {"N": "NaN"}, "status": {"S": [["NEW"]]}}}},
    {"dynamodb": {"NewImage": {"qty": {"N": "Infinity"}, "status": {"S": {"S": "NEW"}}}}},
    {"dynamodb": {"NewImage": {"qty": {"N": Decimal("sNaN")}, "status": {"S": 3.5}}}},
    {"eventName": ["INSERTX"], "dynamodb": {"NewImage": {"qty": {"N": [[12]]}}}},
    None,
    "INSERT",
    42,
    [RECORD],
]

VALUE_PATTERNS: list[Any] = [
    {"eventName": ["INSERT"]},
    new("qty", {"N": [12]}),
    new("qty", {"N": [{"numeric": [">", 0]}]}),
    new("status", {"S": ["NEW"]}),
    new("status", {"S": [{"prefix": "N"}]}),
    new("status", {"S": [{"suffix": "W"}]}),
    new("status", {"S": [{"equals-ignore-case": "new"}]}),
    new("status", {"S": [{"wildcard": "N*W"}]}),
    new("status", {"S": [{"anything-but": {"prefix": "D"}}]}),
]


@pytest.mark.parametrize("record", ODD_RECORDS, ids=[f"odd{i}" for i in range(len(ODD_RECORDS))])
@pytest.mark.parametrize("pattern", VALUE_PATTERNS, ids=[f"p{i}" for i in range(len(VALUE_PATTERNS))])
def test_odd_records_do_not_match(record: Any, pattern: Any) -> None:
    assert compile_pattern(pattern)(record) is False


def test_odd_records_and_exists_false() -> None:
    """Absence is judged by keys: a wrong-shaped parent has no keys; a non-mapping record never matches."""
    predicate = compile_pattern(new("deletedAt", [{"exists": False}]))
    assert [predicate(record) for record in ODD_RECORDS] == [True] * 13 + [False] * 4


# ---- compile_filters: OR across patterns ---------------------------------------------------


def test_compile_filters_empty_is_none() -> None:
    assert compile_filters([], "routes[0].filters") is None


def test_compile_filters_ors_patterns() -> None:
    predicate = compile_filters(
        [{"eventName": ["MODIFY"]}, new("status", {"S": ["NEW"]})], "routes[0].filters")
    assert predicate is not None
    assert predicate(RECORD) is True  # second pattern
    assert predicate(REMOVE_RECORD) is False
    assert predicate({**REMOVE_RECORD, "eventName": "MODIFY"}) is True  # first pattern
    assert predicate({}) is False


def test_compile_filters_single_pattern() -> None:
    predicate = compile_filters([{"eventName": ["REMOVE"]}], "routes[0].filters")
    assert predicate is not None
    assert (predicate(RECORD), predicate(REMOVE_RECORD)) == (False, True)


def test_compile_filters_names_the_bad_pattern() -> None:
    with pytest.raises(FilterPatternError) as info:
        compile_filters([{"eventName": ["INSERT"]}, {"eventName": "INSERT"}], "routes[3].filters")
    assert info.value.path == "routes[3].filters[1].eventName"


def test_compile_filters_rejects_a_non_list() -> None:
    with pytest.raises(FilterPatternError) as info:
        compile_filters({"eventName": ["INSERT"]}, "routes[0].filters")  # type: ignore[arg-type]
    assert (info.value.path, info.value.reason) == ("routes[0].filters", "must be a list of patterns, got dict")


# ---- malformed patterns: exact path, clear reason -----------------------------------------

P = "filters[0]"
QTY = f"{P}.dynamodb.NewImage.qty.N"
DEL = f"{P}.dynamodb.NewImage.deletedAt"
EV = f"{P}.eventName"


def qty(*alternatives: Any) -> dict[str, Any]:
    return new("qty", {"N": list(alternatives)})


ERRORS: list[tuple[str, Any, str, str]] = [
    ("pattern is a list", ["INSERT"], P, "a pattern must be a mapping, got list"),
    ("pattern is null", None, P, "a pattern must be a mapping, got null"),
    ("empty pattern", {}, P, "an empty mapping would match everything; add keys or remove it"),
    ("empty nested mapping", {"dynamodb": {}}, f"{P}.dynamodb", "an empty mapping would match everything"),
    ("leaf is a string", {"eventName": "INSERT"}, EV,
     "must be a list of alternatives or a mapping of nested keys, got str"),
    ("leaf is a number", new("qty", {"N": 12}), QTY, "must be a list of alternatives or a mapping of nested keys"),
    ("empty leaf", {"eventName": []}, EV, "an empty list matches nothing; give at least one alternative"),
    ("non-string key", {1: ["x"]}, f"{P}.1", "keys must be strings, got int"),
    ("nested list value", {"eventName": [["INSERT"]]}, f"{EV}[0]",
     "an exact value must be a string, number, boolean or null, got list"),
    ("date value", {"eventName": ["INSERT", date(2024, 1, 1)]}, f"{EV}[1]",
     "an exact value must be a string, number, boolean or null, got date"),
    ("infinite value", {"dynamodb": {"SizeBytes": [float("inf")]}}, f"{P}.dynamodb.SizeBytes[0]",
     "must be a finite number"),
    ("unknown operator", {"eventName": [{"startswith": "I"}]}, f"{EV}[0].startswith", "unknown operator 'startswith'"),
    ("unknown operator second", {"eventName": ["INSERT", {"regex": "I.*"}]}, f"{EV}[1].regex", "unknown operator"),
    ("cidr unsupported", {"sourceIp": [{"cidr": "10.0.0.0/8"}]}, f"{P}.sourceIp[0].cidr",
     "the cidr operator is not supported"),
    ("two-key operator", {"eventName": [{"prefix": "I", "suffix": "T"}]}, f"{EV}[0]",
     "an operator must be a mapping with exactly one key, got 2 keys"),
    ("empty operator", {"eventName": [{}]}, f"{EV}[0]", "an operator must be a mapping with exactly one key, got 0"),
    ("numeric odd length", qty({"numeric": [">", 10, "<"]}), f"{QTY}[0].numeric",
     "must be a non-empty list of operator/number pairs"),
    ("numeric empty", qty({"numeric": []}), f"{QTY}[0].numeric", "must be a non-empty list"),
    ("numeric not a list", qty({"numeric": ">10"}), f"{QTY}[0].numeric", "must be a non-empty list"),
    ("numeric bad operator", qty({"numeric": [">>", 10]}), f"{QTY}[0].numeric[0]", "unknown comparison '>>'"),
    ("numeric bad second operator", qty(12, {"numeric": ["=", 1, "!=", 2]}), f"{QTY}[1].numeric[2]",
     "unknown comparison '!='"),
    ("numeric string bound", qty({"numeric": [">", "10"]}), f"{QTY}[0].numeric[1]",
     "must be a finite number, got '10'"),
    ("numeric bool bound", qty({"numeric": [">", True]}), f"{QTY}[0].numeric[1]", "must be a finite number"),
    ("numeric nan bound", qty({"numeric": ["<", float("nan")]}), f"{QTY}[0].numeric[1]", "must be a finite number"),
    ("numeric second bound", qty({"numeric": [">", 1, "<", None]}), f"{QTY}[0].numeric[3]",
     "must be a finite number, got None"),
    ("exists string", new("deletedAt", [{"exists": "false"}]), f"{DEL}[0].exists", "must be true or false"),
    ("exists number", new("deletedAt", [{"exists": 0}]), f"{DEL}[0].exists", "must be true or false, got 0"),
    ("prefix number", {"eventName": [{"prefix": 5}]}, f"{EV}[0].prefix", "must be a string, got int"),
    ("prefix unknown nested", {"eventName": [{"prefix": {"wildcard": "x"}}]}, f"{EV}[0].prefix.wildcard",
     "only equals-ignore-case may be nested here"),
    ("prefix nested non-string", {"eventName": [{"prefix": {"equals-ignore-case": 1}}]},
     f"{EV}[0].prefix.equals-ignore-case", "must be a string, got int"),
    ("suffix list", {"eventName": [{"suffix": ["T"]}]}, f"{EV}[0].suffix", "must be a string, got list"),
    ("equals-ignore-case list", {"eventName": [{"equals-ignore-case": ["insert"]}]},
     f"{EV}[0].equals-ignore-case", "must be a string, got list"),
    ("wildcard double star", {"eventName": [{"wildcard": "I**"}]}, f"{EV}[0].wildcard",
     "consecutive '*' are not allowed"),
    ("wildcard bad escape", {"eventName": [{"wildcard": "I\\N"}]}, f"{EV}[0].wildcard",
     "a backslash must escape '*' or '\\'"),
    ("anything-but empty", {"eventName": [{"anything-but": []}]}, f"{EV}[0].anything-but",
     "must not be an empty list"),
    ("anything-but nested list", {"eventName": [{"anything-but": ["A", ["B"]]}]}, f"{EV}[0].anything-but[1]",
     "an exact value must be a string, number, boolean or null, got list"),
    ("anything-but numeric", {"eventName": [{"anything-but": {"numeric": [">", 1]}}]},
     f"{EV}[0].anything-but.numeric", "anything-but takes a value"),
    ("anything-but prefix number", {"eventName": [{"anything-but": {"prefix": 1}}]},
     f"{EV}[0].anything-but.prefix", "must be a string, got int"),
    ("anything-but two keys", {"eventName": [{"anything-but": {"prefix": "a", "suffix": "b"}}]},
     f"{EV}[0].anything-but", "an operator must be a mapping with exactly one key, got 2 keys"),
    ("anything-but empty ignore-case list", {"eventName": [{"anything-but": {"equals-ignore-case": []}}]},
     f"{EV}[0].anything-but.equals-ignore-case", "must not be an empty list"),
]


@pytest.mark.parametrize(("pattern", "path", "reason"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_malformed_pattern_raises_with_exact_path(pattern: Any, path: str, reason: str) -> None:
    with pytest.raises(FilterPatternError) as info:
        compile_pattern(pattern)
    assert info.value.path == path
    assert info.value.reason.startswith(reason)
    assert str(info.value) == f"{info.value.path}: {info.value.reason}"


def test_error_is_a_value_error_and_uses_the_given_path() -> None:
    with pytest.raises(ValueError) as info:
        compile_pattern({"eventName": "INSERT"}, "routes[2].filters[5]")
    assert isinstance(info.value, FilterPatternError)
    assert info.value.path == "routes[2].filters[5].eventName"


def test_recursive_pattern_is_rejected() -> None:
    pattern: dict[str, Any] = {}
    pattern["a"] = pattern  # what a YAML alias like `&p {a: *p}` builds
    with pytest.raises(FilterPatternError) as info:
        compile_pattern(pattern)
    assert info.value.reason == "pattern is nested deeper than 64 levels"
    assert info.value.path.startswith("filters[0].a.a.a")


# ---- properties -----------------------------------------------------------------------------

KEYS = st.sampled_from(["eventName", "dynamodb", "NewImage", "OldImage", "status", "qty", "deletedAt",
                        "S", "N", "NS", "SS", "M", "L", "BOOL", "NULL", "x"])
EXACT_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                 | st.text(max_size=8) | st.sampled_from(["INSERT", "NEW", "12", "12.0", "eu-1", "NaN"]))
ODD_SCALARS = (st.floats() | st.decimals() | st.binary(max_size=4) | st.datetimes()
               | st.datetimes(timezones=st.just(timezone.utc)))
ANY_VALUES = st.recursive(
    EXACT_SCALARS | ODD_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=25,
)

NUMBERS = st.integers(-1000, 1000) | st.floats(-1e6, 1e6, allow_nan=False)
OPERATORS = st.one_of(
    EXACT_SCALARS,
    st.builds(lambda s: {"prefix": s}, st.text(max_size=3)),
    st.builds(lambda s: {"suffix": {"equals-ignore-case": s}}, st.text(max_size=3)),
    st.builds(lambda s: {"equals-ignore-case": s}, st.text(max_size=3)),
    st.builds(lambda s: {"wildcard": s}, st.sampled_from(["*", "a*", "*b*c", "\\*"])),
    st.builds(lambda v: {"anything-but": v}, EXACT_SCALARS | st.lists(EXACT_SCALARS, min_size=1, max_size=3)),
    st.builds(lambda s: {"anything-but": {"prefix": s}}, st.text(max_size=3)),
    st.builds(lambda op, n: {"numeric": [op, n]}, st.sampled_from(["=", "<", "<=", ">", ">="]), NUMBERS),
    st.builds(lambda lo, hi: {"numeric": [">=", lo, "<", hi]}, NUMBERS, NUMBERS),
    st.builds(lambda b: {"exists": b}, st.booleans()),
)
PATTERNS = st.recursive(
    st.dictionaries(KEYS, st.lists(OPERATORS, min_size=1, max_size=3), min_size=1, max_size=3),
    lambda children: st.dictionaries(KEYS, children | st.lists(OPERATORS, min_size=1, max_size=3),
                                     min_size=1, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(pattern=PATTERNS, record=ANY_VALUES)
def test_random_records_never_make_a_pattern_raise(pattern: dict[str, Any], record: Any) -> None:
    predicate = compile_pattern(pattern)
    assert isinstance(predicate(record), bool)
    assert isinstance(predicate({"dynamodb": record, "eventName": record}), bool)


COMPILED = [compile_pattern(pattern) for pattern in VALUE_PATTERNS + [case[1] for case in CASES]]


@settings(max_examples=200, deadline=None)
@given(record=ANY_VALUES)
def test_random_records_against_every_operator(record: Any) -> None:
    for predicate in COMPILED:
        assert predicate(record) in (True, False)
        assert predicate({"dynamodb": record}) in (True, False)
        assert predicate({"dynamodb": {"NewImage": record}}) in (True, False)


def exact_leaves(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every (key path, scalar) that a pattern can state as an exact value.

    Lists are searched element-wise (a pattern sees through them), but a list
    directly inside a list is not (the matcher does not look there either).
    """
    found: list[tuple[tuple[str, ...], Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(exact_leaves(value, (*path, key)))
    elif isinstance(node, list):
        for item in node:
            if not isinstance(item, list):
                found.extend(exact_leaves(item, path))
    elif path and (node is None or isinstance(node, (bool, int, str))
                   or (isinstance(node, float) and node == node and abs(node) != float("inf"))):
        found.append((path, node))
    return found


def pattern_for(path: tuple[str, ...], leaf: list[Any]) -> dict[str, Any]:
    pattern: Any = leaf
    for key in reversed(path):
        pattern = {key: pattern}
    return dict(pattern)


@settings(max_examples=300, deadline=None)
@given(record=st.dictionaries(KEYS, ANY_VALUES, min_size=1, max_size=5), data=st.data())
def test_pattern_from_a_records_own_value_matches_it(record: dict[str, Any], data: st.DataObject) -> None:
    leaves = exact_leaves(record)
    if not leaves:
        return
    path, value = data.draw(st.sampled_from(leaves))
    assert compile_pattern(pattern_for(path, [value]))(record) is True
    assert compile_pattern(pattern_for(path, ["\x00never", value]))(record) is True
    assert compile_pattern(pattern_for(path, [{"exists": True}]))(record) is True


ATTRIBUTE_VALUES = st.recursive(
    st.one_of(
        st.builds(lambda s: {"S": s}, st.text(max_size=8)),
        st.builds(lambda n: {"N": str(n)}, st.integers(-10**6, 10**6)),
        st.builds(lambda ss: {"SS": ss}, st.lists(st.text(max_size=4), min_size=1, max_size=3, unique=True)),
        st.builds(lambda ns: {"NS": [str(n) for n in ns]}, st.lists(st.integers(), min_size=1, max_size=3)),
        st.builds(lambda b: {"BOOL": b}, st.booleans()),
        st.just({"NULL": True}),
        st.builds(lambda b: {"B": b}, st.binary(max_size=6)),
    ),
    lambda children: st.builds(lambda m: {"M": m}, st.dictionaries(st.text(max_size=4), children, max_size=3))
    | st.builds(lambda items: {"L": items}, st.lists(children, max_size=3)),
    max_leaves=8,
)
STREAM_RECORDS = st.fixed_dictionaries({
    "eventID": st.text(min_size=1, max_size=8),
    "eventName": st.sampled_from(["INSERT", "MODIFY", "REMOVE"]),
    "eventSource": st.just("aws:dynamodb"),
    "awsRegion": st.just("eu-west-1"),
    "dynamodb": st.fixed_dictionaries({
        "ApproximateCreationDateTime": st.datetimes(timezones=st.just(timezone.utc)),
        "Keys": st.dictionaries(st.text(min_size=1, max_size=4), ATTRIBUTE_VALUES, min_size=1, max_size=2),
        "NewImage": st.dictionaries(st.text(min_size=1, max_size=4), ATTRIBUTE_VALUES, min_size=1, max_size=4),
        "SequenceNumber": st.from_regex(r"\A[0-9]{1,21}\Z"),
        "SizeBytes": st.integers(1, 400_000),
        "StreamViewType": st.just("NEW_IMAGE"),
    }),
})


@settings(max_examples=200, deadline=None)
@given(rec=STREAM_RECORDS, data=st.data())
def test_stream_record_matches_patterns_built_from_itself(rec: dict[str, Any], data: st.DataObject) -> None:
    assert compile_pattern({"eventName": [rec["eventName"]]})(rec) is True
    assert compile_pattern({"eventName": [{"anything-but": rec["eventName"]}]})(rec) is False
    name, attribute = data.draw(st.sampled_from(sorted(rec["dynamodb"]["NewImage"].items())))
    kind, value = next(iter(attribute.items()))
    if kind == "N":
        leaf: list[Any] = [int(value)]  # a number matches the N string numerically
        assert compile_pattern(new(name, {"N": [{"numeric": ["=", int(value)]}]}))(rec) is True
        assert compile_pattern(new(name, {"N": [{"numeric": [">=", int(value), "<", int(value) + 1]}]}))(rec) is True
        assert compile_pattern(new(name, {"N": [{"numeric": [">", int(value)]}]}))(rec) is False
    elif kind == "NS":
        leaf = [int(value[-1])]
    elif kind in ("S", "BOOL", "NULL"):
        leaf = [value]
    elif kind == "SS":
        leaf = [value[0]]
    elif kind == "B":
        leaf = [base64.b64encode(value).decode()]
    else:  # M / L: the whole attribute is present
        leaf = [{"exists": True}]
    pattern = {"eventName": [rec["eventName"]], "dynamodb": {
        "NewImage": {name: leaf if kind in ("M", "L") else {kind: leaf}},
        "SizeBytes": [{"numeric": ["=", rec["dynamodb"]["SizeBytes"]]}],
        "ApproximateCreationDateTime": [{"numeric": [">", -10**12]}],
    }}
    assert compile_pattern(pattern)(rec) is True
    either = compile_filters([{"eventName": ["\x00never"]}, pattern], "routes[0].filters")
    assert either is not None and either(rec) is True
    assert compile_pattern(new(name, [{"exists": False}]))(rec) is False
