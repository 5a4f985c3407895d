"""Route filter patterns: Lambda ``FilterCriteria`` semantics for DynamoDB Streams records.

Users already know how to write AWS Lambda event source mapping filters
(EventBridge-style event patterns), so routes accept the same JSON shape and it
means the same thing, evaluated against one stream record dict exactly as the
SDK (botocore) returns it from ``GetRecords``, e.g.::

    {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["NEW"]}}}}
    {"dynamodb": {"NewImage": {"qty": {"N": [{"numeric": [">", 10, "<=", 100]}]}}}}
    {"dynamodb": {"NewImage": {"status": {"S": [{"anything-but": ["CANCELLED", "DONE"]}]}}}}
    {"dynamodb": {"NewImage": {"orderId": {"S": [{"prefix": "eu-"}]}}}}
    {"dynamodb": {"NewImage": {"deletedAt": [{"exists": false}]}}}

Structure
---------
* A pattern is a nested mapping. Every key of a mapping must match (AND).
* A leaf is a non-empty list of alternatives; any one may match (OR).
* A route's ``filters`` is a list of patterns; any one may match (OR), like
  Lambda's ``Filters`` list. An empty list means "no filtering"
  (:func:`compile_filters` returns ``None``).

Alternatives
------------
* Exact values: strings, numbers, booleans and ``null``. Strings compare
  case-sensitively; ``true`` never equals ``1``.
* Operators, each a single-key mapping inside the leaf list:

  - ``{"prefix": "eu-"}`` / ``{"prefix": {"equals-ignore-case": "EU-"}}``
  - ``{"suffix": "-prod"}`` / ``{"suffix": {"equals-ignore-case": "-PROD"}}``
  - ``{"equals-ignore-case": "new"}`` (Unicode case folding)
  - ``{"anything-but": v}`` with ``v`` a value, a non-empty list of values, or
    ``{"prefix": s}``, ``{"suffix": s}``, ``{"equals-ignore-case": s | [s, ...]}``
  - ``{"numeric": [">", 10, "<=", 100]}``: op/number pairs, all must hold;
    ops are ``=``, ``<``, ``<=``, ``>``, ``>=``
  - ``{"exists": true | false}``
  - ``{"wildcard": "eu-*-prod"}``: ``*`` matches any run of characters;
    ``\\*`` and ``\\\\`` are a literal star and backslash
  - ``cidr`` is not supported.

Values in the record
--------------------
* Numbers. DynamoDB ``N`` values are strings on the wire (``{"N": "12"}``).
  Lambda compares those as strings, so ``numeric`` famously never matches
  them. **Here, under an ``N`` or ``NS`` key, number alternatives (exact numbers,
  ``numeric`` and number entries of ``anything-but``) parse the record's string
  as a Decimal**, so ``{"N": [12]}`` matches ``{"N": "12.0"}`` and
  ``{"N": [{"numeric": [">", 10]}]}`` matches ``{"N": "12"}``. Everywhere else
  only real numbers count as numbers (EventBridge behaviour: ``12`` does not
  match ``"12"`` under ``S``). String alternatives always compare as strings
  (``{"N": ["12"]}`` matches ``"12"``, not ``"12.0"``). All numbers, in
  patterns and records, are compared as exact :class:`~decimal.Decimal`
  values, never floats; NaN and infinities never match.
* ``ApproximateCreationDateTime`` is a ``datetime`` from botocore but seconds
  since the epoch in Lambda's event: a ``datetime`` (naive means UTC) is
  compared as epoch seconds so Lambda-style ``numeric`` filters keep working.
* Binary (``B``/``BS``) values are ``bytes`` from botocore but base64 strings in
  Lambda's event: ``bytes`` are compared as their base64 text.
* Lists (``SS``/``NS``/``BS`` sets, ``L``, any JSON array): a leaf matches if any
  element matches (EventBridge array semantics; so ``anything-but: "a"``
  matches ``["a", "b"]`` because of ``"b"``). A nested mapping pattern facing a
  list matches if any element (a mapping) matches the whole sub-pattern, so
  ``{"L": {"S": ["x"]}}`` matches ``{"L": [{"N": "1"}, {"S": "x"}]}``. All keys
  of that sub-pattern must then match within the same element (like
  EventBridge's array consistency). A list directly inside a list is not
  searched; DynamoDB records never have one (``L`` elements are typed maps).
* A leaf never matches a mapping value, except through ``exists``.

``exists``
----------
* ``{"exists": true}`` matches when the key is present, whatever its value
  (including ``{"NULL": true}``, ``null`` and nested maps; unlike EventBridge,
  not only leaves, because DynamoDB attributes are always ``{"<type>": value}``
  maps and ``{"deletedAt": [{"exists": false}]}`` must mean the attribute).
* ``{"exists": false}`` matches when the key is absent, including when a parent
  is absent or is not a mapping (a REMOVE record has no ``NewImage``, so every
  attribute in it is absent). A nested mapping whose keys all accept absence
  therefore accepts an absent parent.

Robustness and validation
-------------------------
Matching never raises on odd records (missing ``dynamodb``, wrong types, a
record that is not a mapping): whatever does not fit simply does not match.
Patterns are validated and precompiled once (sets for exact values, Decimals
for numbers, compiled regexes for wildcards), so matching parses nothing but
the record's own ``N`` strings. Invalid patterns raise
:class:`FilterPatternError` naming the exact location, e.g.
``filters[0].dynamodb.NewImage.qty.N[0].numeric``.
"""

from __future__ import annotations

import abc
import base64
import difflib
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final

__all__ = ["FilterPatternError", "RecordPredicate", "check_record_shape", "compile_filters", "compile_pattern"]

RecordPredicate = Callable[[Mapping[str, Any]], bool]
"""A compiled pattern: takes one raw stream record, says whether it matches."""

_ValueTest = Callable[[Any], bool]

_MISSING: Final = object()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Deep enough for any real DynamoDB image; stops recursive YAML aliases (``&a {x: *a}``).
_MAX_DEPTH: Final = 64
# Keys whose string values are DynamoDB numbers, so number alternatives parse them.
_NUMBER_KEYS: Final = frozenset({"N", "NS"})
_COMPARATORS: Final[dict[str, Callable[[Decimal, Decimal], bool]]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_OPERATOR_NAMES: Final = "anything-but, equals-ignore-case, exists, numeric, prefix, suffix, wildcard"


class FilterPatternError(ValueError):
    """A filter pattern is invalid; ``path`` is where (config key path), ``reason`` is why.

    Kept as two attributes so config validation can report it like any other
    ``(key_path, reason)`` problem.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# ---- record values --------------------------------------------------------------------------


def _is_sequence(value: Any) -> bool:
    """JSON arrays arrive as lists; tuples are accepted too. Strings are scalars."""
    return isinstance(value, (list, tuple))


def _normalize(value: Any) -> Any:
    """Bring botocore-only types to what Lambda's JSON event would carry (see module doc)."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return _epoch_seconds(value)
    return value


def _epoch_seconds(moment: datetime) -> Decimal | None:
    """Exact seconds since the epoch (naive means UTC); ``None`` if the tzinfo misbehaves."""
    try:
        if moment.utcoffset() is None:
            moment = moment.replace(tzinfo=timezone.utc)
        delta = moment - _EPOCH
    except (ArithmeticError, TypeError, ValueError):
        return None
    return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6)


def _as_number(value: Any, numeric_strings: bool) -> Decimal | None:
    """The value as a finite Decimal, or ``None`` if it is not a number here.

    Booleans are not numbers; strings count only under ``N``/``NS`` keys.
    NaN and infinities are rejected so later comparisons cannot raise.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str) and numeric_strings:
        try:
            number = Decimal(value)
        except (InvalidOperation, ValueError):
            return None
    else:
        return None
    return number if number.is_finite() else None


# ---- compiled nodes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ExactValues:
    """Exact alternatives as hash sets, so a leaf with many values costs one lookup."""

    strings: frozenset[str]
    numbers: frozenset[Decimal]
    bools: frozenset[bool]
    null: bool
    numeric_strings: bool

    def __bool__(self) -> bool:
        return bool(self.strings or self.numbers or self.bools or self.null)

    def contains(self, value: Any) -> bool:
        if value is None:
            return self.null
        if isinstance(value, bool):
            return value in self.bools
        if isinstance(value, str):
            if value in self.strings:
                return True
            if not self.numeric_strings:
                return False
        if not self.numbers:
            return False
        number = _as_number(value, self.numeric_strings)
        return number is not None and number in self.numbers


class _Node(abc.ABC):
    """A compiled pattern node; ``matches_missing`` says whether an absent key satisfies it."""

    __slots__ = ("matches_missing",)

    def __init__(self, matches_missing: bool) -> None:
        self.matches_missing = matches_missing

    @abc.abstractmethod
    def matches(self, value: Any) -> bool: ...


class _MappingNode(_Node):
    """All keys must match (AND); faces lists element-wise (any element matches)."""

    __slots__ = ("_children",)

    def __init__(self, children: tuple[tuple[str, _Node], ...]) -> None:
        super().__init__(all(child.matches_missing for _, child in children))
        self._children = children

    def matches(self, value: Any) -> bool:
        if isinstance(value, Mapping):
            return self._matches_mapping(value)
        if _is_sequence(value) and value:
            return any(self._matches_mapping(item) if isinstance(item, Mapping) else self.matches_missing
                       for item in value)
        # An empty list, a scalar or None has no keys: every key in the pattern is absent.
        return self.matches_missing

    def _matches_mapping(self, value: Mapping[Any, Any]) -> bool:
        for key, child in self._children:
            item = value.get(key, _MISSING)
            if not (child.matches_missing if item is _MISSING else child.matches(item)):
                return False
        return True


class _LeafNode(_Node):
    """A list of alternatives (OR) tested against a present value or its elements."""

    __slots__ = ("_exists", "_exact", "_tests")

    def __init__(self, exact: _ExactValues, tests: tuple[_ValueTest, ...], exists: bool, absent: bool) -> None:
        super().__init__(absent)
        self._exists = exists
        self._exact = exact if exact else None
        self._tests = tests

    def matches(self, value: Any) -> bool:
        if self._exists:
            return True
        if isinstance(value, Mapping):
            return False
        if _is_sequence(value):
            return any(self._matches_scalar(item) for item in value
                       if not isinstance(item, Mapping) and not _is_sequence(item))
        return self._matches_scalar(value)

    def _matches_scalar(self, value: Any) -> bool:
        value = _normalize(value)
        if self._exact is not None and self._exact.contains(value):
            return True
        return any(test(value) for test in self._tests)


# ---- compiling ------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_pattern_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _pattern_number(value: Any, path: str) -> Decimal:
    """A pattern number as an exact Decimal (floats via repr, so ``0.1`` is ``0.1``)."""
    number = _as_number(value, numeric_strings=False) if _is_pattern_number(value) else None
    if number is None:
        raise FilterPatternError(path, f"must be a finite number, got {value!r}")
    return number


def _compile_exact(values: list[tuple[Any, str]], numeric_strings: bool) -> _ExactValues:
    """Sort exact alternatives (already paired with their paths) into hash sets by type."""
    strings: set[str] = set()
    numbers: set[Decimal] = set()
    bools: set[bool] = set()
    null = False
    for value, path in values:
        if value is None:
            null = True
        elif isinstance(value, bool):
            bools.add(value)
        elif isinstance(value, str):
            strings.add(value)
        elif _is_pattern_number(value):
            numbers.add(_pattern_number(value, path))
        else:
            raise FilterPatternError(
                path, f"an exact value must be a string, number, boolean or null, got {_type_name(value)}")
    return _ExactValues(frozenset(strings), frozenset(numbers), frozenset(bools), null, numeric_strings)


def _require_string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise FilterPatternError(path, f"must be a string, got {_type_name(value)}")
    return value


def _single_key(spec: Mapping[Any, Any], path: str) -> tuple[str, Any]:
    """Operators are single-key mappings; anything else is ambiguous."""
    if len(spec) != 1:
        raise FilterPatternError(path, f"an operator must be a mapping with exactly one key, got {len(spec)} keys")
    ((name, argument),) = spec.items()
    return str(name), argument


def _affix_test(argument: Any, path: str, suffix: bool) -> _ValueTest:
    """``prefix``/``suffix``: a string, or ``{"equals-ignore-case": string}``."""
    if isinstance(argument, Mapping):
        name, inner = _single_key(argument, path)
        if name != "equals-ignore-case":
            raise FilterPatternError(f"{path}.{name}", "only equals-ignore-case may be nested here")
        folded = _require_string(inner, f"{path}.{name}").casefold()
        if suffix:
            return lambda value: isinstance(value, str) and value.casefold().endswith(folded)
        return lambda value: isinstance(value, str) and value.casefold().startswith(folded)
    text = _require_string(argument, path)
    if suffix:
        return lambda value: isinstance(value, str) and value.endswith(text)
    return lambda value: isinstance(value, str) and value.startswith(text)


def _ignore_case_test(argument: Any, path: str, allow_list: bool) -> _ValueTest:
    """``equals-ignore-case``: one string (or, inside anything-but, a non-empty list of them)."""
    if allow_list and isinstance(argument, list):
        if not argument:
            raise FilterPatternError(path, "must not be an empty list")
        folded = frozenset(_require_string(item, f"{path}[{i}]").casefold() for i, item in enumerate(argument))
        return lambda value: isinstance(value, str) and value.casefold() in folded
    text = _require_string(argument, path).casefold()
    return lambda value: isinstance(value, str) and value.casefold() == text


def _wildcard_test(argument: Any, path: str) -> _ValueTest:
    """``wildcard``: ``*`` is any run of characters, ``\\*``/``\\\\`` are literals."""
    text = _require_string(argument, path)
    parts: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            if index + 1 >= len(text) or text[index + 1] not in "*\\":
                raise FilterPatternError(path, "a backslash must escape '*' or '\\'")
            parts.append(re.escape(text[index + 1]))
            index += 2
            continue
        if char == "*":
            if parts and parts[-1] == ".*":
                raise FilterPatternError(path, "consecutive '*' are not allowed")
            parts.append(".*")
        else:
            parts.append(re.escape(char))
        index += 1
    regex = re.compile("".join(parts), re.DOTALL)
    return lambda value: isinstance(value, str) and regex.fullmatch(value) is not None


def _numeric_test(argument: Any, path: str, numeric_strings: bool) -> _ValueTest:
    """``numeric``: op/number pairs, all of which must hold (a range has two)."""
    if not isinstance(argument, list) or not argument or len(argument) % 2:
        raise FilterPatternError(path, 'must be a non-empty list of operator/number pairs, e.g. [">", 0, "<=", 5]')
    bounds: list[tuple[Callable[[Decimal, Decimal], bool], Decimal]] = []
    for index in range(0, len(argument), 2):
        op = argument[index]
        if not isinstance(op, str) or op not in _COMPARATORS:
            raise FilterPatternError(f"{path}[{index}]", f"unknown comparison {op!r} (use =, <, <=, >, >=)")
        bounds.append((_COMPARATORS[op], _pattern_number(argument[index + 1], f"{path}[{index + 1}]")))
    checks = tuple(bounds)

    def test(value: Any) -> bool:
        number = _as_number(value, numeric_strings)
        return number is not None and all(compare(number, bound) for compare, bound in checks)

    return test


def _anything_but_test(argument: Any, path: str, numeric_strings: bool) -> _ValueTest:
    """``anything-but``: a present scalar that is not one of the values / not matching the operator."""
    if isinstance(argument, Mapping):
        name, inner = _single_key(argument, path)
        inner_path = f"{path}.{name}"
        if name == "prefix":
            excluded = _affix_test(_require_string(inner, inner_path), inner_path, suffix=False)
        elif name == "suffix":
            excluded = _affix_test(_require_string(inner, inner_path), inner_path, suffix=True)
        elif name == "equals-ignore-case":
            excluded = _ignore_case_test(inner, inner_path, allow_list=True)
        else:
            raise FilterPatternError(inner_path, "anything-but takes a value, a list of values, "
                                                 "or one of prefix, suffix, equals-ignore-case")
        return lambda value: isinstance(value, str) and not excluded(value)
    if isinstance(argument, list):
        if not argument:
            raise FilterPatternError(path, "must not be an empty list")
        values = [(item, f"{path}[{i}]") for i, item in enumerate(argument)]
    else:
        values = [(argument, path)]
    exact = _compile_exact(values, numeric_strings)
    return lambda value: not exact.contains(value)


def _compile_operator(name: str, argument: Any, path: str, numeric_strings: bool) -> _ValueTest:
    if name == "prefix":
        return _affix_test(argument, path, suffix=False)
    if name == "suffix":
        return _affix_test(argument, path, suffix=True)
    if name == "equals-ignore-case":
        return _ignore_case_test(argument, path, allow_list=False)
    if name == "anything-but":
        return _anything_but_test(argument, path, numeric_strings)
    if name == "numeric":
        return _numeric_test(argument, path, numeric_strings)
    if name == "wildcard":
        return _wildcard_test(argument, path)
    if name == "cidr":
        raise FilterPatternError(path, "the cidr operator is not supported")
    raise FilterPatternError(path, f"unknown operator {name!r} (known: {_OPERATOR_NAMES})")


def _compile_leaf(alternatives: list[Any], path: str, key: str) -> _LeafNode:
    """Split a leaf list into exact values, operator tests and the two exists flags."""
    if not alternatives:
        raise FilterPatternError(path, "an empty list matches nothing; give at least one alternative")
    numeric_strings = key in _NUMBER_KEYS
    exact: list[tuple[Any, str]] = []
    tests: list[_ValueTest] = []
    exists = absent = False
    for index, item in enumerate(alternatives):
        item_path = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            exact.append((item, item_path))
            continue
        name, argument = _single_key(item, item_path)
        if name == "exists":
            if not isinstance(argument, bool):
                raise FilterPatternError(f"{item_path}.exists", f"must be true or false, got {argument!r}")
            exists, absent = exists or argument, absent or not argument
            continue
        tests.append(_compile_operator(name, argument, f"{item_path}.{name}", numeric_strings))
    return _LeafNode(_compile_exact(exact, numeric_strings), tuple(tests), exists, absent)


def _compile_mapping(pattern: Mapping[Any, Any], path: str, depth: int) -> _MappingNode:
    if depth > _MAX_DEPTH:
        raise FilterPatternError(path, f"pattern is nested deeper than {_MAX_DEPTH} levels")
    if not pattern:
        raise FilterPatternError(path, "an empty mapping would match everything; add keys or remove it")
    children: list[tuple[str, _Node]] = []
    for key, value in pattern.items():
        if not isinstance(key, str):
            raise FilterPatternError(f"{path}.{key}", f"keys must be strings, got {_type_name(key)}")
        key_path = f"{path}.{key}"
        if isinstance(value, Mapping):
            children.append((key, _compile_mapping(value, key_path, depth + 1)))
        elif isinstance(value, list):
            children.append((key, _compile_leaf(value, key_path, key)))
        else:
            raise FilterPatternError(
                key_path, f"must be a list of alternatives or a mapping of nested keys, got {_type_name(value)}")
    return _MappingNode(tuple(children))


def compile_pattern(pattern: Any, path: str = "filters[0]") -> Callable[[Mapping[str, Any]], bool]:
    """Validate one pattern and compile it into a record predicate.

    Raises :class:`FilterPatternError` at start-up rather than letting a typo
    silently drop (or pass) every record at run time.
    """
    if not isinstance(pattern, Mapping):
        raise FilterPatternError(path, f"a pattern must be a mapping, got {_type_name(pattern)}")
    root = _compile_mapping(pattern, path, depth=0)

    def matches(record: Mapping[str, Any]) -> bool:
        return isinstance(record, Mapping) and root.matches(record)

    return matches


# ---- the record's shape ---------------------------------------------------------------------

# What a stream record holds, as Lambda's filters see it: a pattern key anywhere else can
# never match, so it is a config error rather than a route that silently never fires.
RECORD_KEYS: Final = ("awsRegion", "dynamodb", "eventID", "eventName", "eventSource", "eventVersion",
                      "userIdentity")
DYNAMODB_KEYS: Final = ("ApproximateCreationDateTime", "Keys", "NewImage", "OldImage", "SequenceNumber",
                        "SizeBytes", "StreamViewType")
USER_IDENTITY_KEYS: Final = ("principalId", "type")
ATTRIBUTE_TYPES: Final = ("B", "BOOL", "BS", "L", "M", "N", "NS", "NULL", "S", "SS")
_IMAGE_KEYS: Final = frozenset({"Keys", "NewImage", "OldImage"})


def _unknown_key(path: str, key: str, known: tuple[str, ...], where: str) -> FilterPatternError:
    same_but_case = [name for name in known if name.casefold() == key.casefold()]
    close = same_but_case or difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return FilterPatternError(f"{path}.{key}", f"a stream record has no {key!r} {where}; {hint}"
                                               f"(known: {', '.join(known)})")


def check_record_shape(pattern: Any, path: str) -> None:
    """Reject pattern keys that a DynamoDB stream record cannot have, with a hint.

    ``{"NewImage": ...}`` at the top gets "did you mean `dynamodb.NewImage`"; an image
    attribute given a bare list of values (``{"status": ["NEW"]}``) is told to name the
    attribute's type (``{"status": {"S": ["NEW"]}}``), since images are typed on the wire.
    """
    if not isinstance(pattern, Mapping):
        return  # compile_pattern reports it
    for key, value in pattern.items():
        if key in RECORD_KEYS:
            if key == "dynamodb" and isinstance(value, Mapping):
                _check_dynamodb(value, f"{path}.dynamodb")
            elif key == "userIdentity" and isinstance(value, Mapping):
                for inner in value:
                    if inner not in USER_IDENTITY_KEYS:
                        raise _unknown_key(f"{path}.userIdentity", str(inner), USER_IDENTITY_KEYS, "under userIdentity")
            continue
        if key in DYNAMODB_KEYS:
            raise FilterPatternError(f"{path}.{key}", f"{key} sits under dynamodb in a stream record: "
                                                      f"did you mean `dynamodb.{key}`?")
        raise _unknown_key(path, str(key), RECORD_KEYS, "at the top level")


def _check_dynamodb(pattern: Mapping[Any, Any], path: str) -> None:
    for key, value in pattern.items():
        if key not in DYNAMODB_KEYS:
            if key in RECORD_KEYS:
                raise FilterPatternError(f"{path}.{key}", f"{key} is a top-level key of a stream record, "
                                                          f"not under dynamodb: move it up a level")
            raise _unknown_key(path, str(key), DYNAMODB_KEYS, "under dynamodb")
        if key in _IMAGE_KEYS and isinstance(value, Mapping):
            for attribute, typed in value.items():
                _check_attribute(typed, f"{path}.{key}.{attribute}", str(attribute))


def _check_attribute(pattern: Any, path: str, attribute: str) -> None:
    """An image attribute is ``{"<type>": value}``: only ``exists`` may skip the type."""
    if isinstance(pattern, list):
        if all(isinstance(item, Mapping) and set(item) == {"exists"} for item in pattern):
            return
        raise FilterPatternError(path, f"image attributes are typed on the wire: name the type, e.g. "
                                       f"`{attribute}: {{S: [...]}}` or `{{N: [...]}}`")
    if isinstance(pattern, Mapping):
        for key in pattern:
            if key not in ATTRIBUTE_TYPES:
                raise _unknown_key(path, str(key), ATTRIBUTE_TYPES, "as an attribute type")


def compile_filters(patterns: list[Any], path: str = "filters") -> Callable[[Mapping[str, Any]], bool] | None:
    """Compile a route's ``filters`` list into one predicate (OR of the patterns).

    Every pattern is also checked against the shape of a stream record
    (:func:`check_record_shape`). ``None`` for an empty list, so callers can skip
    filtering entirely instead of calling a predicate that always says yes.
    """
    if not isinstance(patterns, list):
        raise FilterPatternError(path, f"must be a list of patterns, got {_type_name(patterns)}")
    compiled = tuple(compile_pattern(pattern, f"{path}[{index}]") for index, pattern in enumerate(patterns))
    for index, pattern in enumerate(patterns):
        check_record_shape(pattern, f"{path}[{index}]")
    if not compiled:
        return None
    if len(compiled) == 1:
        return compiled[0]

    def matches_any(record: Mapping[str, Any]) -> bool:
        return any(predicate(record) for predicate in compiled)

    return matches_any
