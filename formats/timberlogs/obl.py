"""Timberlogs OBL: Open Board Logging (`open-board-log-0.1`), AAC device logs; one log per event.

A leading `/* ... */` comment block (OBL files open with a privacy notice) is stripped.

    event `button`                        -> message "Button: {label}"
    event `utterance`                     -> message "Utterance: {text}" (its `buttons` in data)
    event `action`                        -> message "Action: {action}"
    event `note`                          -> message "Note: {text}"
    event `timestamp` (ISO 8601)          -> timestamp (absent = ingest time; unparseable refuses)
    every other event field (spoken, button_id, board_id, buttons, destination_board_id, text,
    author_name, label, ...)              -> data.<field>; the event's id as data.event_id, its type
                                             as data.event_type
    session id, type, started, ended, locale, extensions -> data.session.<field>
    root user_id (a session's own wins)   -> userId
    session device_id (else the root's)   -> sessionId
    root source                           -> source (else the ?source= default)
    other root fields (format, locale, user_name, license, ...) -> data.obl.<field>

A derived name (`event_id`, `session`, ...) that an event field already uses gets a leading `_`.

Level: the `?level=` default, else `info` (OBL events have no level). An event of another
type, or a malformed document, refuses the request naming where: OBL lists exactly the
four types above.
"""

from __future__ import annotations

from typing import Any, Final

from formats.base import ParseContext
from formats.common import parse_timestamp, to_text
from formats.timberlogs.schema import MAX_LOGS, fail, loads

MARKER: Final = "open-board-log-"
_MESSAGE: Final = {
    "button": ("Button", "label"),
    "utterance": ("Utterance", "text"),
    "action": ("Action", "action"),
}
_MESSAGE["note"] = ("Note", "text")
_ROOT_FIELDS: Final = frozenset({"sessions", "user_id", "source", "device_id"})
_SESSION_FIELDS: Final = frozenset({"events", "user_id", "device_id"})


def is_obl(doc: Any) -> bool:
    fmt = doc.get("format") if isinstance(doc, dict) else None
    return isinstance(fmt, str) and fmt.startswith(MARKER)


def strip_comment(body: bytes) -> bytes:
    data = body.lstrip()
    while data.startswith(b"/*"):
        end = data.find(b"*/", 2)
        if end < 0:
            fail("Failed to parse OBL: the leading /* comment is not closed")
        data = data[end + 2 :].lstrip()
    return data


def entries(body: bytes, ctx: ParseContext) -> list[Any]:
    return from_doc(loads(strip_comment(body), "OBL"), ctx)


def from_doc(doc: Any, ctx: ParseContext) -> list[Any]:
    if not isinstance(doc, dict):
        fail("Invalid OBL: the document must be a JSON object")
    sessions = doc.get("sessions")
    if not isinstance(sessions, list):
        fail("Invalid OBL: 'sessions' must be an array")
    root = {k: v for k, v in doc.items() if k not in _ROOT_FIELDS}
    source = doc.get("source")
    out: list[Any] = []
    for s, session in enumerate(sessions):
        if not isinstance(session, dict):
            fail(f"Invalid OBL: sessions[{s}] must be an object")
        events = session.get("events")
        if events is None:
            continue
        if not isinstance(events, list):
            fail(f"Invalid OBL: sessions[{s}].events must be an array")
        meta = {k: v for k, v in session.items() if k not in _SESSION_FIELDS}
        shared: dict[str, Any] = {}
        if source is not None:
            shared["source"] = source
        user = session.get("user_id", doc.get("user_id"))
        if user is not None:
            shared["userId"] = user if isinstance(user, str) else to_text(user)
        device = session.get("device_id", doc.get("device_id"))
        if device is not None:
            shared["sessionId"] = device if isinstance(device, str) else to_text(device)
        for e, event in enumerate(events):
            out.append(_entry(f"sessions[{s}].events[{e}]", event, shared, meta, root))
            if len(out) > MAX_LOGS:
                return out
    return out


def _entry(
    where: str, event: Any, shared: dict[str, Any], meta: dict[str, Any], root: dict[str, Any]
) -> dict[str, Any]:
    if not isinstance(event, dict):
        fail(f"Invalid OBL: {where} must be an object")
    kind = event.get("type")
    if not isinstance(kind, str) or kind not in _MESSAGE:
        fail(f"Invalid OBL: {where}.type must be button, utterance, action or note, not {kind!r}")
    title, field = _MESSAGE[kind]
    subject = event.get(field)
    text = "" if subject is None else subject if isinstance(subject, str) else to_text(subject)
    entry: dict[str, Any] = {**shared, "message": f"{title}: {text}"}
    raw_ts = event.get("timestamp")
    if raw_ts is not None:
        ns = parse_timestamp(raw_ts)
        if ns is None:
            fail(f"Invalid OBL: {where}.timestamp {raw_ts!r} is not an ISO 8601 time")
        entry["timestamp"] = ns // 1_000_000 if ns % 1_000_000 == 0 else ns / 1_000_000
    data: dict[str, Any] = {k: v for k, v in event.items() if k not in ("id", "type", "timestamp")}
    _put(data, "event_type", kind)
    if "id" in event:
        _put(data, "event_id", event["id"])
    if meta:
        _put(data, "session", meta)
    if root:
        _put(data, "obl", root)
    entry["data"] = data
    return entry


def _put(data: dict[str, Any], key: str, value: Any) -> None:
    """Add what the parser derives without overwriting an event field of the same name."""
    while key in data:
        key = f"_{key}"
    data[key] = value
