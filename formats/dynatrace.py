"""Dynatrace log ingest (`POST /api/v2/logs/ingest`): one text/plain event, or JSON events.

Payloads, by `Content-Type` (parameters such as `charset` ignored):

- `text/plain`: the whole body is one event's content. It is decoded as UTF-8 with
  invalid bytes replaced by U+FFFD (a raw log line is kept rather than refused for one bad
  byte) and one trailing newline (`\\n` or `\\r\\n`) is stripped. Timestamp = ingest time.
- `application/json`: an array of event objects, or one object. Invalid JSON refuses the
  request (400); an element that is not an object is a `Rejection`.
- the JSON-lines types Dynatrace also takes (`application/jsonl`, `application/jsonlines`,
  `application/jsonlines+json`, `application/x-ndjson`, `application/x-jsonlines`): one
  object per line, blank lines skipped; a line that is not a JSON object is a `Rejection`
  (Dynatrace's "200: part of the events ingested due to ... JSON parsing issues").
- anything else (none, or curl's form default): sniffed; a body starting with `[` or `{`
  is JSON, otherwise text/plain.

Field mapping, as Dynatrace's generic ingest does it (special keys matched case-insensitively,
the first present key of each list wins; the keys not chosen stay attributes):

    message   <- content, message, payload, body, log. Non-strings are kept as JSON text; an event
                 with none of them is rejected.
    timestamp <- timestamp, @timestamp, _timestamp, eventtime, date, published_date, syslog.timestamp,
                 time, epochSecond, startTime, datetime, ts, timeMillis, @t. Unix s/ms (numbers or
                 digit strings), RFC 3339 / ISO 8601 (`2022-01-17T22:12:31.0000`; no zone = UTC),
                 RFC 3164 (`Jan 17 22:12:31`, the latest year not in the future).
    level     <- loglevel, status, severity, level, syslog.severity; string values only, so an HTTP
                 `status: 200` stays an attribute. Words normalize_level knows map as it says; others
                 as Dynatrace does, by first letter: e/a/c/s -> error, f -> fatal, w -> warn,
                 n/i -> info, d -> debug. The text as sent is `severity_text`.
    service <- service.name, host <- host.name, environment <- deployment.environment,
    trace_id <- trace_id, span_id <- span_id (string values).
    attributes <- everything else, `log.source` included (a file path, not a service name);
                 objects are flattened to dotted keys (`{"k8s": {"pod": "a"}}` -> `k8s.pod`).

Timestamps follow Dynatrace too: an unsupported format uses the ingest time and keeps the
value as the attribute `unparsed_timestamp`; a time more than 10 minutes ahead of the
receive time is replaced by the receive time (the value sent stays an attribute under its
own key). Dynatrace's 24-hour age limit is deliberately not applied: Millrace keeps backfills.

Limits (Dynatrace's documented generic-ingest limits, UTF-8 bytes):

    request body            10 MiB                  ParseError 413 `request_too_large`
    events per request      50,000                  ParseError 413 `too_many_events`
    content of one event    64 KiB (65,536 bytes)   that event is a Rejection (200 partial success)
    attributes of one event 500                     Rejection
    attribute key           100 bytes               Rejection
    attribute value         32 KiB (32,768 bytes)   Rejection

Not applied: 32 values per attribute (arrays are stored as one JSON text) and 5 levels of
nesting (objects are flattened up to common.MAX_DEPTH; deeper is a `Rejection`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

import orjson

from formats import framing
from formats.base import ParseContext, Parsed, ParseError, Rejection
from formats.common import (
    load_json,
    media_type,
    parse_bsd_timestamp,
    parse_timestamp,
    put_attribute,
    to_text,
    utf8_exceeds,
)
from schemas.record import LEVELS, normalize_level

MAX_REQUEST_BYTES: Final = 10 * 1024 * 1024
MAX_EVENTS: Final = 50_000
MAX_CONTENT_BYTES: Final = 65_536
MAX_ATTRIBUTES: Final = 500
MAX_KEY_BYTES: Final = 100
MAX_VALUE_BYTES: Final = 32_768
FUTURE_TOLERANCE_NS: Final = 10 * 60 * 10**9

_JSON_LINES: Final = frozenset(
    {
        "application/jsonl",
        "application/jsonlines",
        "application/jsonlines+json",
        "application/x-ndjson",
        "application/x-jsonlines",
    }
)

_CONTENT, _TIMESTAMP, _SEVERITY = 0, 1, 2
# Lower-cased key -> (role, priority within the role).
_ROLES: Final[dict[str, tuple[int, int]]] = {
    **{k: (_CONTENT, p) for p, k in enumerate(("content", "message", "payload", "body", "log"))},
    **{
        k.lower(): (_TIMESTAMP, p)
        for p, k in enumerate(
            (
                "timestamp",
                "@timestamp",
                "_timestamp",
                "eventtime",
                "date",
                "published_date",
                "syslog.timestamp",
                "time",
                "epochSecond",
                "startTime",
                "datetime",
                "ts",
                "timeMillis",
                "@t",
            )
        )
    },
    **{
        k: (_SEVERITY, p)
        for p, k in enumerate(("loglevel", "status", "severity", "level", "syslog.severity"))
    },
}
_COLUMNS: Final = {
    "service.name": "service",
    "host.name": "host",
    "deployment.environment": "environment",
    "trace_id": "trace_id",
    "span_id": "span_id",
}
# Dynatrace maps a level it does not know by its first letter.
_BY_INITIAL: Final = {"e": "error", "a": "error", "c": "error", "s": "error", "f": "fatal", "w": "warn"}
_BY_INITIAL.update(n="info", i="info", d="debug")


def parse(body: bytes, ctx: ParseContext) -> Parsed:
    if len(body) > MAX_REQUEST_BYTES:
        raise ParseError(
            f"the request is {len(body):,} bytes; the limit is {MAX_REQUEST_BYTES:,}",
            code="request_too_large",
        )
    kind = media_type(ctx.content_type)
    if kind in _JSON_LINES:
        return _parse_lines(body, ctx)
    if kind == "application/json":
        return _parse_json(body, ctx)
    if kind != "text/plain" and body[:4096].lstrip()[:1] in (b"[", b"{"):
        return _parse_json(body, ctx)
    return _parse_text(body, ctx)


def _parse_text(body: bytes, ctx: ParseContext) -> Parsed:
    if not body.strip():
        raise ParseError("the body is empty; send the log line as text/plain", code="empty_body")
    content = body.decode("utf-8", "replace")
    if content.endswith("\n"):
        content = content[:-2] if content.endswith("\r\n") else content[:-1]
    if utf8_exceeds(content, MAX_CONTENT_BYTES):
        return Parsed(rows=[], rejected=[Rejection(0, f"content is over {MAX_CONTENT_BYTES:,} bytes")])
    level, number = normalize_level(None)
    row = {
        "timestamp": ctx.received_at_ns,
        "level": level,
        "severity_text": "",
        "severity_number": number,
        "message": content,
        "attributes": {},
    }
    return Parsed(rows=[row])


def _parse_json(body: bytes, ctx: ParseContext) -> Parsed:
    doc = load_json(body)
    if isinstance(doc, dict):
        events: list[Any] = [doc]
    elif isinstance(doc, list):
        events = doc
    else:
        raise ParseError(
            "the body must be a JSON array of log events or one event object", code="invalid_shape"
        )
    _check_count(len(events))
    rows: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    for i, event in enumerate(events):
        _add(i, event, ctx, rows, rejected)
    return Parsed(rows=rows, rejected=rejected)


def _parse_lines(body: bytes, ctx: ParseContext) -> Parsed:
    lines = list(framing.lines(body))
    if not lines:
        raise ParseError("the body is empty; send one JSON object per line", code="empty_body")
    _check_count(len(lines))
    rows: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    for i, (n, line) in enumerate(lines):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            rejected.append(Rejection(i, f"line {n} is not valid JSON"))
            continue
        _add(i, event, ctx, rows, rejected)
    return Parsed(rows=rows, rejected=rejected)


def _check_count(n: int) -> None:
    if n > MAX_EVENTS:
        raise ParseError(
            f"{n:,} log events in one request; the limit is {MAX_EVENTS:,}",
            code="too_many_events",
        )


def _add(
    i: int, event: Any, ctx: ParseContext, rows: list[dict[str, Any]], rejected: list[Rejection]
) -> None:
    if not isinstance(event, dict):
        rejected.append(Rejection(i, f"event {i} is not a JSON object"))
        return
    try:
        result = _row(i, event, ctx)
    except ParseError as exc:  # nesting or field count past the parser's own bounds: this event only
        result = f"event {i}: {exc.message}"
    if isinstance(result, str):
        rejected.append(Rejection(i, result))
    else:
        rows.append(result)


def _row(i: int, event: dict[str, Any], ctx: ParseContext) -> dict[str, Any] | str:
    """One event's row, or why it is rejected."""
    # Per role, the present key of the best priority: (key, priority).
    chosen: list[tuple[str, int] | None] = [None, None, None]
    for key, value in event.items():
        role = _ROLES.get(key)
        if role is None and not key.islower():
            role = _ROLES.get(key.lower())
        if role is None or value is None:
            continue
        kind, priority = role
        if kind == _SEVERITY and not isinstance(value, str):
            continue
        best = chosen[kind]
        if best is None or priority < best[1]:
            chosen[kind] = (key, priority)

    content_choice, ts_choice, severity_choice = chosen
    if content_choice is None:
        return f"event {i} has no content (content, message, payload, body or log)"
    content_key = content_choice[0]
    content = event[content_key]
    message = content if isinstance(content, str) else to_text(content)
    if utf8_exceeds(message, MAX_CONTENT_BYTES):
        return f"event {i}: content is over {MAX_CONTENT_BYTES:,} bytes"

    attributes: dict[str, str] = {}
    skip = {content_key}
    ts = ctx.received_at_ns
    if ts_choice is not None:
        ts_key = ts_choice[0]
        skip.add(ts_key)
        parsed = _timestamp(event[ts_key], ctx.received_at_ns)
        if parsed is None:
            attributes["unparsed_timestamp"] = to_text(event[ts_key])
        elif parsed > ctx.received_at_ns + FUTURE_TOLERANCE_NS:
            skip.discard(ts_key)  # replaced by the receive time; what was sent stays visible
        else:
            ts = parsed
    severity_text = ""
    if severity_choice is not None:
        sev_key = severity_choice[0]
        skip.add(sev_key)
        severity_text = event[sev_key]
    level = _level(severity_text)

    row: dict[str, Any] = {
        "timestamp": ts,
        "level": level,
        "severity_text": severity_text,
        "severity_number": LEVELS[level],
        "message": message,
    }
    for key, value in event.items():
        if key in skip:
            continue
        column = _COLUMNS.get(key)
        if column is not None and isinstance(value, str) and column not in row:
            row[column] = value
        elif isinstance(value, str):  # the common case, without a call
            attributes[key] = value
        else:
            put_attribute(attributes, key, value)
    problem = _attribute_problem(attributes)
    if problem:
        return f"event {i}: {problem}"
    row["attributes"] = attributes
    return row


def _timestamp(value: Any, received_at_ns: int) -> int | None:
    ns = parse_timestamp(value)
    if ns is None and isinstance(value, str):
        ns = parse_bsd_timestamp(value.strip(), received_at_ns)
    return ns


def _level(text: str) -> str:
    # Severities are a few short words sent on every event; only those are worth remembering.
    return _short_level(text) if len(text) <= 32 else _level_of(text)


@lru_cache(maxsize=1024)
def _short_level(text: str) -> str:
    return _level_of(text)


def _level_of(text: str) -> str:
    if not text:
        return "info"
    # normalize_level gives the same answer whatever the default only for words it knows.
    known, _ = normalize_level(text, "trace")
    if known == normalize_level(text, "fatal")[0]:
        return known
    word = text.strip().lower()
    if word.startswith("emerg"):
        return "error"
    if word.startswith(("trace", "verbose")):
        return "debug"
    return _BY_INITIAL.get(word[:1], "info")


def _attribute_problem(attributes: dict[str, str]) -> str:
    if len(attributes) > MAX_ATTRIBUTES:
        return f"{len(attributes)} attributes; the limit is {MAX_ATTRIBUTES}"
    # A string of n characters is at most 4n bytes: only longer ones need a closer look.
    for key, value in attributes.items():
        if len(key) * 4 > MAX_KEY_BYTES and utf8_exceeds(key, MAX_KEY_BYTES):
            return f"attribute key {key[:40]!r}... is over {MAX_KEY_BYTES} bytes"
        if len(value) * 4 > MAX_VALUE_BYTES and utf8_exceeds(value, MAX_VALUE_BYTES):
            return f"attribute {key!r} is over {MAX_VALUE_BYTES:,} bytes"
    return ""
