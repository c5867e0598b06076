"""AstraLog drain (`POST /v1/drain`): `{"logs": [...]}` with five required fields per log.

The dialect has no partial success: one bad record refuses the whole request with
400, so nothing of a malformed batch is stored. `metadata` and any undocumented
field are kept as attributes; the body's own `project_id` is kept as the attribute
`project_id` (the tenant is always the key's project, never the body's claim).
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

from formats.base import ParseContext, Parsed, ParseError
from formats.common import flatten, load_json, normalized_level, parse_timestamp

REQUIRED: Final = ("project_id", "timestamp", "level", "service", "message")
_KNOWN: Final = frozenset((*REQUIRED, "metadata"))


def parse(body: bytes, ctx: ParseContext) -> Parsed:
    logs = _logs(load_json(body))
    return Parsed(rows=[_row(i, item) for i, item in enumerate(logs)])


def _logs(doc: Any) -> list[Any]:
    if not isinstance(doc, dict) or "logs" not in doc:
        raise ParseError("the body must be a JSON object with a 'logs' array", code="invalid_shape")
    logs = doc["logs"]
    if not isinstance(logs, list):
        raise ParseError("'logs' must be an array", code="invalid_shape")
    if not logs:
        raise ParseError("'logs' is empty; send at least one log", code="empty_batch")
    return logs


def _row(i: int, item: Any) -> dict[str, Any]:
    """One log as a row. The test below is `_refuse`'s checks, in one expression: a log
    that passes it is one `_refuse` lets through, and any other log is refused there."""
    if type(item) is dict:
        log: dict[str, Any] = item  # typed, so the compiled parser calls dict methods directly
        project_id, level, service, message = (
            log.get("project_id"),
            log.get("level"),
            log.get("service"),
            log.get("message"),
        )
        ts = parse_timestamp(log.get("timestamp"))
        metadata = log.get("metadata")
        if (
            type(project_id) is str
            and type(level) is str
            and type(service) is str
            and type(message) is str
            and project_id
            and level
            and service
            and message
            and ts is not None
            and (metadata is None or type(metadata) is dict)
        ):
            attributes: dict[str, str] = {}
            if metadata:  # flattening an empty object adds nothing
                flatten(metadata, "", attributes)
            if not log.keys() <= _KNOWN:
                flatten({k: v for k, v in log.items() if k not in _KNOWN}, "", attributes)
            attributes["project_id"] = project_id
            normalized, number = normalized_level(level)
            return {
                "timestamp": ts,
                "level": normalized,
                "severity_text": level,
                "severity_number": number,
                "service": service,
                "message": message,
                "attributes": attributes,
            }
    _refuse(i, item)


def _refuse(i: int, item: Any) -> NoReturn:
    """Why log `i` cannot be stored: the first rule it breaks, in the order the API's errors name them."""
    if not isinstance(item, dict):
        raise ParseError(f"logs[{i}] must be an object", code="invalid_shape", position=i)
    missing = [f for f in REQUIRED if item.get(f) in (None, "")]
    if missing:
        names = ", ".join(missing)
        raise ParseError(f"logs[{i}] is missing required field(s): {names}", code="missing_field", position=i)
    for f in ("project_id", "level", "service", "message"):
        if not isinstance(item[f], str):
            raise ParseError(f"logs[{i}].{f} must be a string", code="invalid_type", position=i)
    if parse_timestamp(item["timestamp"]) is None:
        raise ParseError(
            f"logs[{i}].timestamp {item['timestamp']!r} is not an RFC 3339, ISO 8601 or SQL timestamp",
            code="invalid_timestamp",
            position=i,
        )
    raise ParseError(f"logs[{i}].metadata must be an object", code="invalid_type", position=i)
