"""AstraLog drain (`POST /v1/drain`): `{"logs": [...]}` with five required fields per log.

The dialect has no partial success: one bad record refuses the whole request with
400, so nothing of a malformed batch is stored. `metadata` and any undocumented
field are kept as attributes; the body's own `project_id` is kept as the attribute
`project_id` (the tenant is always the key's project, never the body's claim).
"""

from __future__ import annotations

from typing import Any

from formats import astralog_store
from formats.base import ParseContext, Parsed, ParseError
from formats.common import flatten, load_json, parse_timestamp
from formats.validate import accepted, flatten_plain, iso_time, plain_object, texts_set
from schemas.record import normalize_level

REQUIRED = ("project_id", "timestamp", "level", "service", "message")
_KNOWN = astralog_store.KNOWN_FIELDS
_TEXT_FIELDS = astralog_store.TEXT_FIELDS


def parse(body: bytes, ctx: ParseContext) -> Parsed:
    logs = _logs(load_json(body))
    return Parsed(rows=[_plain_row(item) if _plain(item) else _row(i, item) for i, item in enumerate(logs)])


def validate(body: bytes, ctx: ParseContext) -> Parsed:
    """`parse`'s answer (the same ParseError, or the same count) without building rows.

    A body of the usual shape is checked whole (`body_ready`); otherwise records of the
    usual shape are checked in place, and any other record goes through `_row`, which
    raises exactly what `parse` raises for it (tests/test_fastpath.py).
    """
    count = astralog_store.body_ready(body)
    if count is not None:  # the usual body, checked whole by typed decoding
        parsed = accepted(count)
        parsed.store_parses = True
        return parsed
    logs = _logs(load_json(body))
    store_parses = True
    for i, item in enumerate(logs):
        if store_parses and astralog_store.ready(item):
            continue  # plain, and of the shape the store parses itself
        store_parses = False
        if not _plain(item):
            _row(i, item)
    parsed = accepted(len(logs))
    parsed.store_parses = store_parses
    return parsed


def _logs(doc: Any) -> list[Any]:
    if not isinstance(doc, dict) or "logs" not in doc:
        raise ParseError("the body must be a JSON object with a 'logs' array", code="invalid_shape")
    logs = doc["logs"]
    if not isinstance(logs, list):
        raise ParseError("'logs' must be an array", code="invalid_shape")
    if not logs:
        raise ParseError("'logs' is empty; send at least one log", code="empty_batch")
    return logs


def _plain(item: Any) -> bool:
    """True only if `_row(item)` surely succeeds: no extra fields, texts set, ISO time, flat metadata."""
    if not texts_set(item, _KNOWN, _TEXT_FIELDS):
        return False
    if not iso_time(item.get("timestamp")):
        return False
    metadata = item.get("metadata")
    return metadata is None or (type(metadata) is dict and plain_object(metadata))


def _plain_row(item: dict[str, Any]) -> dict[str, Any]:
    """`_row` for a record `_plain` accepted: the checks are done, the flattening is simpler."""
    attributes: dict[str, str] = {}
    metadata = item.get("metadata")
    if metadata:
        if "" in metadata:  # the general flatten's handling of an empty key, kept in one place
            flatten(metadata, "", attributes)
        else:
            flatten_plain(metadata, attributes)
    level = item["level"]
    attributes["project_id"] = item["project_id"]
    normalized, number = normalize_level(level)
    return {
        "timestamp": parse_timestamp(item["timestamp"]),
        "level": normalized,
        "severity_text": level,
        "severity_number": number,
        "service": item["service"],
        "message": item["message"],
        "attributes": attributes,
    }


def _row(i: int, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ParseError(f"logs[{i}] must be an object", code="invalid_shape")
    missing = [f for f in REQUIRED if item.get(f) in (None, "")]
    if missing:
        names = ", ".join(missing)
        raise ParseError(f"logs[{i}] is missing required field(s): {names}", code="missing_field")
    for f in ("project_id", "level", "service", "message"):
        if not isinstance(item[f], str):
            raise ParseError(f"logs[{i}].{f} must be a string", code="invalid_type")
    ts = parse_timestamp(item["timestamp"])
    if ts is None:
        raise ParseError(
            f"logs[{i}].timestamp {item['timestamp']!r} is not an RFC 3339, ISO 8601 or SQL timestamp",
            code="invalid_timestamp",
        )
    metadata = item.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ParseError(f"logs[{i}].metadata must be an object", code="invalid_type")
    attributes: dict[str, str] = {}
    if metadata:  # flattening an empty object adds nothing
        flatten(metadata, "", attributes)
    if not item.keys() <= _KNOWN:
        flatten({k: v for k, v in item.items() if k not in _KNOWN}, "", attributes)
    attributes["project_id"] = item["project_id"]
    level, number = normalize_level(item["level"])
    return {
        "timestamp": ts,
        "level": level,
        "severity_text": item["level"],
        "severity_number": number,
        "service": item["service"],
        "message": item["message"],
        "attributes": attributes,
    }
