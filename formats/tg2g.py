"""TG2G IngestAPI (`POST /v1/logs`): `{"source", "entity": {name, kind, tags}, "logs": [...]}`.

Only `logs[].message` is required. The dialect keeps every extra field ("stored in metadata
and searchable"), so every field without a column lands in `attributes`, objects flattened
to dotted keys. Items are accepted one by one: a bad item is a `Rejection`, the rest is kept;
only a body that is not an object with a `logs` array (or has a malformed `source`/`entity`)
refuses the whole request.

Mapping (input -> column):

    source (request); logs[].source or logs[].service      -> service (the log's own wins)
    entity.name / entity.kind / entity.tags                -> entity_name / entity_kind / entity_tags
    any other entity.<key>                                 -> attributes["entity.<key>"]
    logs[].message (string, required)                      -> message
    logs[].timestamp (ISO 8601; Unix s/ms taken too)       -> timestamp; absent or null = ingest time,
                                                              unparseable = the item is rejected
    logs[].level (any text; pino/bunyan numbers 10..60)    -> level (normalized, default info),
                                                              severity_text (as sent)
    requestId/request_id, traceId/trace_id, spanId/span_id, userId/user_id, sessionId/session_id,
    flowId/flow_id, errorName/error_name, errorStack/error_stack, env/environment, host/hostname,
    dataset (scalar values)                                -> the column of that name
    tags (string or array)                                 -> tags
    anything else (region, featureFlag, ...)               -> attributes["region"], ...

Extra top-level fields (besides `source`, `entity`, `logs`) apply to every log as if each
log carried them, the log's own field winning. The dialect documents no batch limit; the
gateway's body limit bounds it. An empty `logs` array is accepted with nothing to store.
"""

from __future__ import annotations

from typing import Any, Final

from formats.base import ParseContext, Parsed, ParseError, Rejection
from formats.common import (
    WELL_KNOWN_COLUMNS,
    flatten,
    json_body,
    level_fields,
    split_fields,
    str_list,
    time_or_received,
)

_ENVELOPE: Final = frozenset({"source", "entity", "logs"})
_HANDLED: Final = frozenset({"message", "timestamp", "level"})
_MAPPING: Final = {**WELL_KNOWN_COLUMNS, "source": "service"}


def parse(body: bytes, ctx: ParseContext) -> Parsed:
    doc = json_body(body, ctx)
    if not isinstance(doc, dict) or not isinstance(doc.get("logs"), list):
        raise ParseError("the body must be a JSON object with a 'logs' array", code="invalid_shape")
    base = _request_columns(doc)
    extras = {k: v for k, v in doc.items() if k not in _ENVELOPE}
    rows: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    for i, item in enumerate(doc["logs"]):
        if not isinstance(item, dict):
            rejected.append(Rejection(i, f"logs[{i}] must be an object"))
            continue
        try:
            row = _row(i, {**extras, **item} if extras else item, base, ctx)
        except ParseError as exc:  # an oversized or over-deep item is refused alone
            row = f"logs[{i}]: {exc.message}"
        if isinstance(row, str):
            rejected.append(Rejection(i, row))
        else:
            rows.append(row)
    return Parsed(rows=rows, rejected=rejected)


def _request_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """The columns `source` and `entity` give every log of the request."""
    base: dict[str, Any] = {}
    source = doc.get("source")
    if source is not None:
        if not isinstance(source, str):
            raise ParseError("'source' must be a string", code="invalid_type")
        base["service"] = source
    entity = doc.get("entity")
    if entity is None:
        return base
    if not isinstance(entity, dict):
        raise ParseError("'entity' must be an object", code="invalid_type")
    for key, column in (("name", "entity_name"), ("kind", "entity_kind")):
        value = entity.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise ParseError(f"'entity.{key}' must be a string", code="invalid_type")
            base[column] = value
    tags = entity.get("tags")
    if tags is not None:
        if not isinstance(tags, list):
            raise ParseError("'entity.tags' must be an array of strings", code="invalid_type")
        base["entity_tags"] = str_list(tags)
    rest = {k: v for k, v in entity.items() if k not in ("name", "kind", "tags")}
    if rest:
        attributes: dict[str, str] = {}
        flatten(rest, "entity", attributes)
        base["attributes"] = attributes
    return base


def _row(i: int, item: dict[str, Any], base: dict[str, Any], ctx: ParseContext) -> dict[str, Any] | str:
    """One log's row, or the reason it is rejected."""
    message = item.get("message")
    if message is None:
        return f"logs[{i}].message is required"
    if not isinstance(message, str):
        return f"logs[{i}].message must be a string"
    raw_ts = item.get("timestamp")
    ts = time_or_received(raw_ts, ctx)
    if ts is None:
        return f"logs[{i}].timestamp {raw_ts!r} is not an ISO 8601 time"
    level, number, severity_text = level_fields(item.get("level"))
    row: dict[str, Any] = {
        "timestamp": ts,
        "level": level,
        "severity_text": severity_text,
        "severity_number": number,
        "message": message,
    }
    attributes: dict[str, str] = dict(base["attributes"]) if "attributes" in base else {}
    split_fields(item, _HANDLED, row, attributes, _MAPPING)
    for column, value in base.items():  # request-wide values fill what the log did not say itself
        if column not in row and column != "attributes":
            row[column] = value
    row["attributes"] = attributes
    return row
