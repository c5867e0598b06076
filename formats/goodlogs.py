"""GoodLogs (`POST /v1/logs`, `POST /v1/events`): `{"batch": [...]}`, answered 202 `{accepted, rejected}`.

Items are accepted one by one (a bad item is a `Rejection`); the whole request is refused
(400 `VALIDATION_ERROR`, GoodLogs' code for an invalid body) when it is not JSON, is not an
object with a `batch` array, or holds more than 500 items, and with 413 over the 2 MB body
limit (taken as 2 MiB, 2,097,152 bytes).

Logs (`parse_logs`, table `logs`):

    severity (required: debug, info, warn, error or fatal; exactly) -> level, severity_text, severity_number
    message (required string, at most 64 KB = 65,536 bytes UTF-8) -> message
    timestamp (ISO 8601; Unix s/ms taken too)     -> timestamp; absent = ingest time, unparseable = rejected
    properties (object)                           -> attributes, keys as given, nested objects dotted
    legacy metadata, context, code_location       -> attributes too, flattened without a prefix as if
                                                     sent in properties (properties wins a clash)
    any other top-level field                     -> attributes under its own name

GoodLogs stores properties flat and queries them by name, so `attributes` is kept exactly
as sent, and the well-known property names (`service`, `env`/`environment`, `host`/`hostname`,
`userId`/`user_id`, `sessionId`, `requestId`, `traceId`, `spanId`, `flowId`, `errorName`,
`errorStack`, `dataset`, `tags`, see common.WELL_KNOWN_COLUMNS) are *also copied* to their
columns, so `service = 'billing'` works in the column-based read API too.

Events (`parse_events`, table `events`):

    event (required, non-empty string)            -> event
    distinctId (string; a number as its text)     -> distinct_id, and properties["distinct_id"] (as the
                                                     doc says it is stored)
    properties (object)                           -> properties, nested objects flattened to dotted keys
    timestamp (ISO 8601)                          -> timestamp; absent = ingest time, unparseable = rejected
    any other top-level field                     -> properties under its own name

Every row's map gets `$browser`, `$os`, `$device` (from the User-Agent) and `$ip` (the client address).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from formats.base import ParseContext, Parsed, ParseError, Rejection
from formats.common import (
    copy_well_known,
    flatten,
    json_body,
    put_attribute,
    time_or_received,
    utf8_exceeds,
)
from formats.useragent import user_agent
from schemas.record import EVENTS_TABLE, LEVELS

MAX_BATCH: Final = 500
MAX_BODY_BYTES: Final = 2 * 1024 * 1024
MAX_MESSAGE_BYTES: Final = 65_536
SEVERITIES: Final = ("debug", "info", "warn", "error", "fatal")
LEGACY: Final[tuple[str, ...]] = ("metadata", "context", "code_location")

_LOG_FIELDS: Final = frozenset({"severity", "message", "properties", "timestamp", *LEGACY})
_EVENT_FIELDS: Final = frozenset({"event", "distinctId", "properties", "timestamp"})
_SEVERITIES: Final = frozenset(SEVERITIES)

Row = dict[str, Any]


def parse_logs(body: bytes, ctx: ParseContext) -> Parsed:
    rows, rejected = _each(_batch(body, ctx), ctx, _log_row)
    _add_client_fields(rows, "attributes", ctx)
    return Parsed(rows=rows, rejected=rejected)


def parse_events(body: bytes, ctx: ParseContext) -> Parsed:
    rows, rejected = _each(_batch(body, ctx), ctx, _event_row)
    _add_client_fields(rows, "properties", ctx)
    return Parsed(rows=rows, rejected=rejected, table=EVENTS_TABLE)


def _add_client_fields(rows: list[Row], column: str, ctx: ParseContext) -> None:
    """GoodLogs promises server-injected `$browser`, `$os`, `$device` and `$ip` on every
    item; they win over a client's own keys of those names."""
    agent = user_agent(ctx.user_agent)
    injected = {"$browser": agent.browser, "$os": agent.os, "$device": agent.device, "$ip": ctx.client_ip}
    for row in rows:
        # In place: each row's map is its own (built by `_log_row` / `_event_row`), and update()
        # leaves a client's own `$ip` where it was, as a merged copy would.
        fields: dict[str, str] = row[column]
        fields.update(injected)


def _batch(body: bytes, ctx: ParseContext) -> list[Any]:
    if len(body) > MAX_BODY_BYTES:
        raise ParseError(
            f"the request body is {len(body):,} bytes; the limit is 2 MB",
            code="PAYLOAD_TOO_LARGE",
        )
    try:
        doc = json_body(body, ctx)
    except ParseError as exc:
        raise ParseError(exc.message, code="VALIDATION_ERROR") from None
    batch = doc.get("batch") if isinstance(doc, dict) else None
    if not isinstance(batch, list):
        raise ParseError("the body must be a JSON object with a 'batch' array", code="VALIDATION_ERROR")
    if len(batch) > MAX_BATCH:
        raise ParseError(
            f"'batch' holds {len(batch)} items; the limit is {MAX_BATCH} per request", code="VALIDATION_ERROR"
        )
    return batch


def _each(
    batch: list[Any], ctx: ParseContext, make: Callable[[dict[str, Any], ParseContext], Row | str]
) -> tuple[list[Row], list[Rejection]]:
    rows: list[Row] = []
    rejected: list[Rejection] = []
    for i, item in enumerate(batch):
        if not isinstance(item, dict):
            rejected.append(Rejection(i, f"batch[{i}] must be an object"))
            continue
        try:
            result = make(item, ctx)
        except ParseError as exc:  # past the flattening bounds: this item only
            result = exc.message
        if isinstance(result, str):
            rejected.append(Rejection(i, f"batch[{i}]: {result}"))
        else:
            rows.append(result)
    return rows, rejected


def _time(item: dict[str, Any], ctx: ParseContext) -> int | str:
    raw = item.get("timestamp")
    ts = time_or_received(raw, ctx)
    return f"timestamp {raw!r} is not an ISO 8601 time" if ts is None else ts


def _log_row(item: dict[str, Any], ctx: ParseContext) -> Row | str:
    severity = item.get("severity")
    if severity is None:
        return "severity is required"
    if not isinstance(severity, str) or severity not in _SEVERITIES:
        return f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}"
    message = item.get("message")
    if message is None:
        return "message is required"
    if not isinstance(message, str):
        return "message must be a string"
    if utf8_exceeds(message, MAX_MESSAGE_BYTES):
        return f"message is over {MAX_MESSAGE_BYTES:,} bytes (64 KB)"
    properties = item.get("properties")
    if properties is not None and not isinstance(properties, dict):
        return "properties must be an object"
    ts = _time(item, ctx)
    if isinstance(ts, str):
        return ts

    row: Row = {
        "timestamp": ts,
        "level": severity,
        "severity_text": severity,
        "severity_number": LEVELS[severity],
        "message": message,
    }
    attributes: dict[str, str] = {}
    for key, value in item.items():
        if key not in _LOG_FIELDS:
            put_attribute(attributes, key, value)
    for key in LEGACY:
        legacy = item.get(key)
        if isinstance(legacy, dict):
            flatten(legacy, "", attributes)
        elif legacy is not None:
            put_attribute(attributes, key, legacy)
    if properties:
        flatten(properties, "", attributes)
        copy_well_known(properties, row)
    for key in LEGACY:
        legacy = item.get(key)
        if isinstance(legacy, dict):
            copy_well_known(legacy, row)
    row["attributes"] = attributes
    return row


def _event_row(item: dict[str, Any], ctx: ParseContext) -> Row | str:
    name = item.get("event")
    if name is None:
        return "event is required"
    if not isinstance(name, str) or not name:
        return "event must be a non-empty string"
    distinct_id = item.get("distinctId")
    if distinct_id is not None:
        if isinstance(distinct_id, int | float) and not isinstance(distinct_id, bool):
            distinct_id = str(distinct_id)
        elif not isinstance(distinct_id, str):
            return "distinctId must be a string"
    properties = item.get("properties")
    if properties is not None and not isinstance(properties, dict):
        return "properties must be an object"
    ts = _time(item, ctx)
    if isinstance(ts, str):
        return ts

    props: dict[str, str] = {}
    for key, value in item.items():
        if key not in _EVENT_FIELDS:
            put_attribute(props, key, value)
    if properties:
        flatten(properties, "", props)
    row: Row = {"timestamp": ts, "event": name}
    if distinct_id is not None:
        row["distinct_id"] = props["distinct_id"] = distinct_id
    row["properties"] = props
    return row
