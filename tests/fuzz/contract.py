"""The parser contract, as one check every fuzzer runs on every input.

`parse(body, ctx)` either returns a `Parsed` whose rows fit the table they are bound for
(only columns a parser may fill, each value of its column's type per `schemas.record`), or
raises `ParseError`; nothing else may escape. What the gateway sends back from either
(error messages, details, rejection reasons) must be JSON-serializable, the rows must
encode for the envelope (`schemas.rows.encode`), and a second parse of the same request
gives the same rows (a version 1 envelope is parsed again by the worker).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from formats import PARSERS, ParseContext, Parsed, ParseError, Rejection
from schemas import rows as row_codec
from schemas.record import (
    EVENT_COLUMNS,
    EVENTS_TABLE,
    LEVELS,
    LOG_COLUMNS,
    LOGS_TABLE,
    PARSER_EVENT_COLUMNS,
    PARSER_LOG_COLUMNS,
)

COLUMN_TYPES = {
    LOGS_TABLE: {name: type_ for name, type_, _ in LOG_COLUMNS},
    EVENTS_TABLE: {name: type_ for name, type_, _ in EVENT_COLUMNS},
}
PARSER_COLUMNS = {LOGS_TABLE: PARSER_LOG_COLUMNS, EVENTS_TABLE: PARSER_EVENT_COLUMNS}
UINT_MAX = {"UInt8": 2**8 - 1, "UInt32": 2**32 - 1, "UInt64": 2**64 - 1}
# DateTime64(9) holds 1900-01-01 .. 2262-04-11; parsers keep to 1970..2100.
MAX_TIMESTAMP_NS = 4_102_444_800 * 10**9


class ContractViolation(AssertionError):
    """A parser broke its contract; the message says how."""


def check(name: str, body: bytes, ctx: ParseContext) -> Parsed | ParseError:
    """Run parser `name` and check whatever it did; raises on a contract violation."""
    try:
        parsed = PARSERS[name](body, ctx)
    except ParseError as exc:
        check_error(exc)
        return exc
    check_parsed(parsed)
    again = PARSERS[name](body, ctx)
    if again.rows != parsed.rows or again.rejected != parsed.rejected or again.table != parsed.table:
        raise ContractViolation("a second parse of the same request gave a different result")
    return parsed


def check_error(exc: ParseError) -> None:
    if not (isinstance(exc.code, str) and exc.code):
        raise ContractViolation(f"ParseError without a code: {exc.code!r}")
    if exc.position is not None and not (isinstance(exc.position, int) and exc.position >= 0):
        raise ContractViolation(f"ParseError with position {exc.position!r}")
    if not (isinstance(exc.message, str) and exc.message):
        raise ContractViolation("ParseError without a message")
    if exc.details is not None and not all(isinstance(d, dict) for d in exc.details):
        raise ContractViolation(f"ParseError details are not objects: {exc.details!r}")
    _serializable({"message": exc.message, "code": exc.code, "details": exc.details}, "the error body")


def check_parsed(parsed: Parsed) -> None:
    if parsed.table not in PARSER_COLUMNS:
        raise ContractViolation(f"unknown table {parsed.table!r}")
    types, allowed = COLUMN_TYPES[parsed.table], PARSER_COLUMNS[parsed.table]
    for row in parsed.rows:
        if not isinstance(row, dict):
            raise ContractViolation(f"a row is a {type(row).__name__}")
        extra = set(row) - allowed
        if extra:
            raise ContractViolation(f"columns a parser may not fill: {sorted(extra)}")
        for column, value in row.items():
            problem = type_problem(types[column], value)
            if problem:
                raise ContractViolation(f"column {column}: {problem}: {_short(value)}")
        if "timestamp" not in row:
            raise ContractViolation("a row without a timestamp")
        if parsed.table == LOGS_TABLE:
            level = row.get("level")
            if level not in LEVELS:
                raise ContractViolation(f"level {level!r} is not normalized")
            if row.get("severity_number") != LEVELS[level]:
                raise ContractViolation(f"severity_number {row.get('severity_number')!r} for level {level}")
    for rejection in parsed.rejected:
        if (
            not isinstance(rejection, Rejection)
            or not isinstance(rejection.index, int)
            or rejection.index < 0
        ):
            raise ContractViolation(f"malformed rejection {rejection!r}")
        if not (isinstance(rejection.reason, str) and rejection.reason):
            raise ContractViolation("a rejection without a reason")
    _serializable([r.reason for r in parsed.rejected], "rejection reasons")
    try:
        row_codec.encode(parsed.rows)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise ContractViolation(f"the rows cannot travel in an envelope: {exc}") from None


def type_problem(type_: str, value: Any) -> str:
    """Why `value` cannot be sent by clickhouse-connect to a column of type `type_` ('' if it can)."""
    if type_ in ("String", "LowCardinality(String)"):
        return "" if isinstance(value, str) and _utf8(value) else "not a UTF-8 string"
    if type_.startswith("DateTime64"):
        if not _int(value):
            return "not an integer (ns)"
        return "" if 0 <= value <= MAX_TIMESTAMP_NS else "outside 1970..2100"
    if type_ in UINT_MAX:
        return "" if _int(value) and 0 <= value <= UINT_MAX[type_] else f"not a {type_}"
    if type_.startswith("Array("):
        ok = isinstance(value, list) and all(isinstance(v, str) and _utf8(v) for v in value)
        return "" if ok else "not a list of UTF-8 strings"
    if type_.startswith("Map("):
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) and _utf8(k) and _utf8(v) for k, v in value.items()
        )
        return "" if ok else "not a map of UTF-8 strings"
    if type_ == "Float64":
        return "" if isinstance(value, float) and math.isfinite(value) else "not a finite float"
    return f"no check for column type {type_}"


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _serializable(value: Any, what: str) -> None:
    try:
        orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError: lone surrogates, unknown types
        raise ContractViolation(f"{what} cannot be sent as JSON: {exc}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
