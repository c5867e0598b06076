"""Splunk HTTP Event Collector: `/services/collector/event` (JSON events) and `/raw` (lines).

Event endpoint: one or many JSON event objects, concatenated with or without whitespace
between them (splunk-handler sends them so, with no Content-Type). Events are taken in
order, as HEC does: the first bad event stops the request, the events before it are
stored, and it is the one `Rejection` (its reason is HEC's error text, which the gateway's
dialect turns into HEC's code and `invalid-event-number`).

Mapping of an event (input -> column):

    time (epoch seconds, fraction allowed; number or string) -> timestamp; absent = receive time
    event, a string                                -> message
    event, an object                               -> message from its message / msg / log / text
                                                      (else the whole object as JSON), level from
                                                      its level / log_level / severity, every other
                                                      key to its column or attributes (dotted)
    host                                           -> host
    index                                          -> dataset
    source, sourcetype                             -> attributes["source"], attributes["sourcetype"]
    fields {...}                                   -> well-known names to their columns (service,
                                                      env, trace_id, ...), the rest to attributes

Raw endpoint: every non-empty line is one event whose message is the line, stamped with the
receive time; `?host=`, `?source=`, `?sourcetype=`, `?index=` apply to every line (and are
defaults for events that do not say them).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

from formats.base import ParseContext, Parsed, ParseError, Rejection
from formats.common import (
    WELL_KNOWN_COLUMNS,
    level_fields,
    put_attribute,
    split_fields,
    time_or_received,
    to_text,
)

NO_DATA: Final = "No data"
INVALID_FORMAT: Final = "Invalid data format"
EVENT_REQUIRED: Final = "Event field is required"
EVENT_BLANK: Final = "Event field cannot be blank"

_MESSAGE_KEYS: Final[tuple[str, ...]] = ("message", "msg", "log", "text")
_LEVEL_KEYS: Final[tuple[str, ...]] = ("level", "log_level", "severity", "levelname")
_SKIP: Final = frozenset((*_MESSAGE_KEYS, *_LEVEL_KEYS))
_FIELD_COLUMNS: Final = {k: v for k, v in WELL_KNOWN_COLUMNS.items() if v not in ("tags", "dataset")}
_META_KEYS: Final[tuple[str, ...]] = ("host", "source", "sourcetype", "index")
_ENVELOPE_KEYS: Final = frozenset(("event", "time", "fields", *_META_KEYS))
_JOINT: Final = re.compile(rb"\}[ \t\r\n]*\{")  # where two concatenated objects meet
_MAX_MISSES: Final = 8
_ONE_DIGIT: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS: Final = b"0" * 20  # 20 digits in a row: maybe an integer past 64 bits


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER: Final = json.JSONDecoder(parse_constant=_no_constants)


def parse_event(body: bytes, ctx: ParseContext) -> Parsed:
    if not body.strip():
        raise ParseError(NO_DATA, code="no_data")
    events = _split_events(body)
    if events is not None:
        defaults = _defaults(ctx)
        rows: list[dict[str, Any]] = []
        for n, event in enumerate(events):
            row = _event_row(event, defaults, ctx)
            if isinstance(row, str):
                return _stop(rows, n, row)
            rows.append(row)
        return Parsed(rows=rows)
    return _parse_event_text(body, ctx)


def _split_events(body: bytes) -> list[Any] | None:
    """The events of a body whose every event is a JSON object, decoded by orjson; None when the
    body is anything else (the exact, slower walk below then decides, as HEC would).

    Outside strings, `}` followed by `{` (whitespace between allowed) only ever joins two
    concatenated objects, so each event ends at one of those places: a candidate end whose
    prefix does not decode was inside a string, and the next one is tried. Strings full of
    such pairs give up after a few misses rather than decode the prefix again and again.
    """
    if _LONG_DIGITS in body.translate(_ONE_DIGIT):  # a translate and a find: far cheaper than a regex
        return None  # orjson reads an integer past 64 bits as a float; the standard library does not
    events: list[Any] = []
    start = 0
    misses = 0
    for joint in _JOINT.finditer(body):
        try:
            events.append(orjson.loads(body[start : joint.start() + 1]))
        except orjson.JSONDecodeError:
            misses += 1
            if misses > _MAX_MISSES:
                return None
            continue
        start = joint.end() - 1
    try:
        events.append(orjson.loads(body[start:]))
    except orjson.JSONDecodeError:
        return None
    return events


def _parse_event_text(body: bytes, ctx: ParseContext) -> Parsed:
    """Event by event with the standard library's decoder, which can say where each one ends."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(INVALID_FORMAT, code="invalid_format", position=exc.start) from None
    defaults = _defaults(ctx)
    rows: list[dict[str, Any]] = []
    pos, end, n = 0, len(text), 0
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos >= end:
            break
        try:
            event, pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return _stop(rows, n, INVALID_FORMAT)
        row = _event_row(event, defaults, ctx)
        if isinstance(row, str):
            return _stop(rows, n, row)
        rows.append(row)
        n += 1
    return Parsed(rows=rows)


def parse_raw(body: bytes, ctx: ParseContext) -> Parsed:
    if not body.strip():
        raise ParseError(NO_DATA, code="no_data")
    defaults = _defaults(ctx)
    text = body.decode("utf-8", "replace")  # raw data is whatever the sender had; keep what we can
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        row: dict[str, Any] = {"timestamp": ctx.received_at_ns, "message": line, "level": "info"}
        row["severity_number"], row["severity_text"] = 9, ""
        attributes: dict[str, str] = {}
        _apply_meta(defaults, row, attributes)
        row["attributes"] = attributes
        rows.append(row)
    return Parsed(rows=rows)


def _stop(rows: list[dict[str, Any]], n: int, reason: str) -> Parsed:
    """HEC stops at a bad event: the ones before it are kept, the rest of the body is not read."""
    return Parsed(rows=rows, rejected=[Rejection(n, reason)])


def _defaults(ctx: ParseContext) -> dict[str, str]:
    return {k: v for k in ("host", "source", "sourcetype", "index") if (v := ctx.query.get(k))}


def _apply_meta(meta: dict[str, Any], row: dict[str, Any], attributes: dict[str, str]) -> None:
    for key in _META_KEYS:
        value = meta.get(key)
        if value is None or value == "":
            continue
        _set_meta(key, value, row, attributes)


def _set_meta(key: str, value: Any, row: dict[str, Any], attributes: dict[str, str]) -> None:
    text = value if isinstance(value, str) else to_text(value)
    if key == "host":
        row["host"] = text
    elif key == "index":
        row["dataset"] = text
    else:
        attributes[key] = text


def _event_row(event: Any, defaults: dict[str, str], ctx: ParseContext) -> dict[str, Any] | str:
    """One event's row, or HEC's text for why it stops the request."""
    if not isinstance(event, dict):
        return INVALID_FORMAT
    if "event" not in event:
        return EVENT_REQUIRED
    body = event["event"]
    if body is None or body == "" or body == {}:
        return EVENT_BLANK
    ts = time_or_received(event.get("time"), ctx)
    if ts is None:
        return INVALID_FORMAT
    row: dict[str, Any] = {"timestamp": ts}
    attributes: dict[str, str] = {}
    try:
        level_value: Any = None
        if isinstance(body, dict):
            message_key = level_key = None
            for key in _MESSAGE_KEYS:
                if isinstance(body.get(key), str):
                    message_key = key
                    break
            row["message"] = body[message_key] if message_key is not None else to_text(body)
            for key in _LEVEL_KEYS:
                if body.get(key) is not None:
                    level_key = key
                    break
            level_value = body[level_key] if level_key is not None else None
            split_fields(body, _SKIP, row, attributes)
            # What did not become the message or the level stays an attribute (in _SKIP's order).
            present = _SKIP.intersection(body)
            if len(present) > (message_key is not None) + (level_key is not None):
                for key in _SKIP:
                    if key in present and key != message_key and key != level_key:
                        put_attribute(attributes, key, body[key])
        else:
            row["message"] = body if isinstance(body, str) else to_text(body)
        row["level"], row["severity_number"], row["severity_text"] = level_fields(level_value)
        fields = event.get("fields")
        if fields is not None:
            if not isinstance(fields, dict):
                return INVALID_FORMAT
            split_fields(fields, frozenset(), row, attributes, _FIELD_COLUMNS)
        for key in _META_KEYS:  # the event's own, else the query's (an empty one is not replaced)
            value = event[key] if key in event else defaults.get(key)
            if value is None or value == "":
                continue
            _set_meta(key, value, row, attributes)
        for key, value in event.items():
            if key not in _ENVELOPE_KEYS:
                put_attribute(attributes, key, value)
    except ParseError as exc:  # over-deep or too many fields: this event stops the request
        return f"{INVALID_FORMAT}: {exc.message}"
    row["attributes"] = attributes
    return row
