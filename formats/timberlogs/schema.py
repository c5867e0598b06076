"""The Timberlogs Log Entry Schema, checked on every log of a request, and the rows it maps to.

Every input format first becomes a list of log entries in the JSON shape; this module fills
the query defaults, validates all of them, and either returns every row or raises one
`ParseError` (400, code `PARSE_ERROR`) whose `details` lists zod-like issues:
`[{"path": [3, "level"], "message": "Invalid enum value. ..."}]`. Timberlogs has no partial
success: one invalid log refuses the request.

    field        rule (lengths in UTF-16 code units, as JavaScript counts)   column
    level        required; debug, info, warn or error                         level (+ severity_*)
    message      required string, 1..10,000                                   message
    source       required string, 1..100                                      service
    environment  required; development, staging or production                environment
    dataset      optional string (default "default")                          dataset
    version      optional string                                              attributes["version"]
    userId, sessionId, requestId, flowId: optional strings    -> user_id, session_id, request_id, flow_id
    errorName, errorStack: optional strings                   -> error_name, error_stack
    data         optional object                     -> attributes, flattened to dotted keys, no prefix
    tags         optional array of at most 20 strings of at most 50           tags
    timestamp    optional Unix ms (exactly: no guessing by magnitude); an ISO 8601 string is taken too,
                 as the TypeScript SDK types it                               timestamp (absent = ingest time)
    stepIndex    optional integer 0..1000                                     attributes["stepIndex"]
    other keys   kept: the schema does not forbid them                        attributes under their names

A `data` key that clashes with `version`, `stepIndex` or an extra field is kept as `data.<key>`.
`null` counts as absent for an optional field. Query defaults (`source`, `environment`,
`level`, `dataset`) fill a log that lacks the field (absent or null), before validation.
"""

from __future__ import annotations

import math
from typing import Any, Final, NoReturn

import orjson

from formats.base import ParseContext, ParseError
from formats.common import flatten, parse_timestamp, put_attribute
from schemas.record import LEVELS

CODE: Final = "PARSE_ERROR"
MIN_LOGS, MAX_LOGS = 1, 100
LEVEL_VALUES: Final[tuple[str, ...]] = ("debug", "info", "warn", "error")
ENVIRONMENTS: Final[tuple[str, ...]] = ("development", "staging", "production")
MAX_MESSAGE, MAX_SOURCE, MAX_TAGS, MAX_TAG, MAX_STEP = 10_000, 100, 20, 50, 1000
MAX_ISSUES: Final = 100  # enough to fix a batch, bounded so an error body stays small
QUERY_DEFAULTS: Final[tuple[str, ...]] = ("source", "environment", "level", "dataset")

FIELDS: Final[tuple[str, ...]] = (
    "level",
    "message",
    "source",
    "environment",
    "dataset",
    "version",
    "userId",
    "sessionId",
    "requestId",
    "data",
    "errorName",
    "errorStack",
    "tags",
    "timestamp",
    "flowId",
    "stepIndex",
)
_KNOWN: Final = frozenset(FIELDS)
_OPTIONAL_STRINGS: Final[tuple[tuple[str, str], ...]] = (
    ("userId", "user_id"),
    ("sessionId", "session_id"),
    ("requestId", "request_id"),
    ("flowId", "flow_id"),
    ("errorName", "error_name"),
    ("errorStack", "error_stack"),
)
_MAX_MS: Final = 4_102_444_800_000  # 2100-01-01, the bound common.parse_timestamp keeps too

Issue = dict[str, Any]


def fail(message: str, details: list[Issue] | None = None) -> NoReturn:
    raise ParseError(message, code=CODE, details=details)


def loads(data: bytes | str, what: str = "body") -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        fail(f"Failed to parse {what}: invalid JSON ({exc})")


def decode(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"Failed to parse body: not valid UTF-8 (bad byte at offset {exc.start})")
    return text[1:] if text.startswith("\ufeff") else text


def build_rows(
    entries: list[Any],
    ctx: ParseContext,
    *,
    implicit_level: str | None = None,
    severity_texts: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Validate every entry (after defaults) and map them to rows; any issue refuses them all.

    `implicit_level` is the level of a format whose lines may carry none (text, OBL), used
    after the `level` query default. `severity_texts` are the levels as written, where the
    format had them in another spelling (`WARNING`, a syslog severity name).
    """
    n = len(entries)
    if n < MIN_LOGS:
        fail(
            "No logs in the request: at least 1 log is required",
            [_issue([], "Array must contain at least 1 element(s)")],
        )
    if n > MAX_LOGS:
        fail(
            f"Too many logs: the limit is {MAX_LOGS} per request",
            [_issue([], f"Array must contain at most {MAX_LOGS} element(s)")],
        )
    defaults = {key: value for key in QUERY_DEFAULTS if (value := ctx.query.get(key))}
    if implicit_level is not None:
        defaults.setdefault("level", implicit_level)
    issues: list[Issue] = []
    rows: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        try:
            row = _row(i, entry, defaults, ctx.received_at_ns, issues)
        except ParseError as exc:  # flattening past its bounds (nesting, field count)
            issues.append(_issue([i], exc.message))
            row = None
        if row is not None:
            if severity_texts is not None:
                row["severity_text"] = severity_texts[i]
            rows.append(row)
        if len(issues) >= MAX_ISSUES:
            del issues[MAX_ISSUES:]
            break
    if issues:
        first = issues[0]
        where = ".".join(str(p) for p in first["path"][1:]) or "log"
        more = f" (and {len(issues) - 1} more issue(s))" if len(issues) > 1 else ""
        fail(f"Invalid log at index {first['path'][0]}: {where}: {first['message']}{more}", issues)
    return rows


def _row(
    i: int, entry: Any, defaults: dict[str, str], received_at_ns: int, issues: list[Issue]
) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        issues.append(_issue([i], f"Expected object, received {_kind(entry)}"))
        return None
    before = len(issues)
    log: dict[str, Any] = entry  # typed, so the compiled parser calls dict methods directly
    level = _enum(i, "level", _or_default(log, defaults, "level"), LEVEL_VALUES, issues)
    message = _string(i, "message", log.get("message"), MAX_MESSAGE, issues, required=True)
    source = _string(i, "source", _or_default(log, defaults, "source"), MAX_SOURCE, issues, required=True)
    environment = _enum(i, "environment", _or_default(log, defaults, "environment"), ENVIRONMENTS, issues)
    dataset = _string(i, "dataset", _or_default(log, defaults, "dataset"), None, issues)
    version = _string(i, "version", log.get("version"), None, issues)
    columns: list[tuple[str, str]] = []
    for key, column in _OPTIONAL_STRINGS:
        text = _string(i, key, log.get(key), None, issues)  # not `value`: that one holds Any below
        if text is not None:
            columns.append((column, text))
    data = log.get("data")
    if data is not None and not isinstance(data, dict):
        issues.append(_issue([i, "data"], f"Expected object, received {_kind(data)}"))
    tags = _tags(i, log.get("tags"), issues)
    ts = _timestamp(i, log.get("timestamp"), issues)
    step = _step(i, log.get("stepIndex"), issues)
    if len(issues) > before or level is None or message is None or source is None or environment is None:
        return None

    attributes: dict[str, str] = {}
    if version is not None:
        attributes["version"] = version
    if step is not None:
        attributes["stepIndex"] = str(step)
    if not _KNOWN.issuperset(log):
        for key, value in log.items():
            if key not in _KNOWN:
                put_attribute(attributes, key, value)
    if data:
        if attributes:
            flat: dict[str, str] = {}
            flatten(data, "", flat)
            for key, value in flat.items():
                attributes[f"data.{key}" if key in attributes else key] = value
        else:
            flatten(data, "", attributes)
    row: dict[str, Any] = {
        "timestamp": received_at_ns if ts is None else ts,
        "level": level,
        "severity_text": level,
        "severity_number": LEVELS[level],
        "message": message,
        "service": source,
        "environment": environment,
        "dataset": "default" if dataset is None else dataset,
    }
    for column, value in columns:
        row[column] = value
    row["attributes"] = attributes
    if tags:
        row["tags"] = tags
    return row


def _issue(path: list[Any], message: str) -> Issue:
    return {"path": path, "message": message}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def js_length(text: str) -> int:
    """String length as JavaScript (and so zod) counts it: UTF-16 code units."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _or_default(log: dict[str, Any], defaults: dict[str, str], key: str) -> Any:
    """A field of the log, or the request's default for it when the log leaves it out."""
    value = log.get(key)
    return defaults.get(key) if value is None else value


def _string(
    i: int, field: str, value: Any, maximum: int | None, issues: list[Issue], *, required: bool = False
) -> str | None:
    if value is None:
        if required:
            issues.append(_issue([i, field], "Required"))
        return None
    if not isinstance(value, str):
        issues.append(_issue([i, field], f"Expected string, received {_kind(value)}"))
        return None
    if required and not value:
        issues.append(_issue([i, field], "String must contain at least 1 character(s)"))
        return None
    # len() is a lower bound of the UTF-16 length and half of it an upper bound: count only in between.
    if maximum is not None and len(value) * 2 > maximum and js_length(value) > maximum:
        issues.append(_issue([i, field], f"String must contain at most {maximum} character(s)"))
        return None
    return value


def _enum(i: int, field: str, value: Any, allowed: tuple[str, ...], issues: list[Issue]) -> str | None:
    if value is None:
        issues.append(_issue([i, field], "Required"))
        return None
    if not isinstance(value, str) or value not in allowed:
        expected = " | ".join(f"'{a}'" for a in allowed)
        received = repr(value) if isinstance(value, str) else _kind(value)
        issues.append(_issue([i, field], f"Invalid enum value. Expected {expected}, received {received}"))
        return None
    return value


def _tags(i: int, value: Any, issues: list[Issue]) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        issues.append(_issue([i, "tags"], f"Expected array, received {_kind(value)}"))
        return None
    if len(value) > MAX_TAGS:
        issues.append(_issue([i, "tags"], f"Array must contain at most {MAX_TAGS} element(s)"))
        return None
    ok = True
    for j, tag in enumerate(value):
        if not isinstance(tag, str):
            issues.append(_issue([i, "tags", j], f"Expected string, received {_kind(tag)}"))
            ok = False
        elif len(tag) * 2 > MAX_TAG and js_length(tag) > MAX_TAG:
            issues.append(_issue([i, "tags", j], f"String must contain at most {MAX_TAG} character(s)"))
            ok = False
    return value if ok else None


def _timestamp(i: int, value: Any, issues: list[Issue]) -> int | None:
    """Unix milliseconds (exactly, no guessing by magnitude) as ns; ISO 8601 text is also taken."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        as_number = number(text)
        if as_number is None:
            ns = parse_timestamp(text)
            if ns is None:
                issues.append(
                    _issue([i, "timestamp"], "Expected number (Unix milliseconds), received string")
                )
            return ns
        value = as_number
    if isinstance(value, bool) or not isinstance(value, int | float):
        issues.append(_issue([i, "timestamp"], f"Expected number, received {_kind(value)}"))
        return None
    if not (isinstance(value, int) or math.isfinite(value)) or not 0 < value <= _MAX_MS:
        issues.append(_issue([i, "timestamp"], "Invalid timestamp: expected Unix milliseconds (1970..2100)"))
        return None
    if isinstance(value, int):
        return value * 1_000_000
    whole = int(value)  # whole ms exactly, the fraction to the microsecond (all a double holds here)
    return whole * 1_000_000 + round((value - whole) * 1e3) * 1000


def number(text: str) -> int | float | None:
    """A decimal number written in ASCII (`12`, `-3`, `1.5`: a CSV cell, a digit string), else None."""
    digits = text[1:] if text.startswith("-") else text
    whole, dot, fraction = digits.partition(".")
    if (
        not whole.isascii()
        or not whole.isdigit()
        or (dot and not (fraction.isascii() and fraction.isdigit()))
    ):
        return None
    # int() refuses more than 4,300 digits; such a number is out of range anyway, and float() says inf.
    return float(text) if dot or len(whole) > 18 else int(text)


def _step(i: int, value: Any, issues: list[Issue]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        issues.append(_issue([i, "stepIndex"], f"Expected number, received {_kind(value)}"))
        return None
    if isinstance(value, float) and not value.is_integer():
        issues.append(_issue([i, "stepIndex"], "Expected integer, received float"))
        return None
    step = int(value)
    if step < 0:
        issues.append(_issue([i, "stepIndex"], "Number must be greater than or equal to 0"))
        return None
    if step > MAX_STEP:
        issues.append(_issue([i, "stepIndex"], f"Number must be less than or equal to {MAX_STEP}"))
        return None
    return step
