"""GQL autocomplete: suggestions for the word at the cursor, from the discovered schema.

`valid` says whether the query is valid apart from the word being completed (so
`severity:` with the cursor after the colon is valid, as in the seed's example), and
`parsed` is that query's parsed form.
"""

from __future__ import annotations

import re
from typing import Any

from reads.gql.compile import compile_query
from reads.gql.lexer import GQLError
from reads.gql.parser import parse
from schemas.record import LEVELS

MAX_SUGGESTIONS = 20
_WORD_BREAK = " \t\r\n(|"
_FROM_EVENTS = re.compile(r"\bfrom\s*:?\s*events\b", re.IGNORECASE)
_FROM_ALERTS = re.compile(r"\bfrom\s*:?\s*alert_events\b", re.IGNORECASE)
# After these a field name is wanted on its own (`count by ev|`), not a `field:` filter.
_NAME_ONLY = re.compile(r"(\b(by|sort|distinct)\s+|count_distinct\(\s*|,\s*)$", re.IGNORECASE)
_COMPARE = re.compile(r"^(-?)([^:=<>!]+?)(:|!=|>=|<=|==|=|>|<)(.*)$")

_LOG_FIELDS = (
    ("severity", "level: trace, debug, info, warn, error, fatal"),
    ("message", "the log message (matches text inside it)"),
    ("service", "service name"),
    ("environment", "environment"),
    ("host", "host name"),
    ("trace_id", "trace id"),
    ("request_id", "request id"),
    ("user_id", "user id"),
    ("session_id", "session id"),
    ("timestamp", "event time"),
    ("$browser", "browser from the User-Agent"),
    ("$os", "OS from the User-Agent"),
    ("$device", "device class from the User-Agent"),
    ("$ip", "client IP"),
)
_EVENT_FIELDS = (
    ("event", "event name"),
    ("distinct_id", "user id for analytics"),
    ("timestamp", "event time"),
    ("$browser", "browser from the User-Agent"),
    ("$os", "OS from the User-Agent"),
    ("$device", "device class from the User-Agent"),
    ("$ip", "client IP"),
)
_ALERT_FIELDS = (
    ("state", "pending, firing, resolved or ok"),
    ("previous_state", "the state before the transition"),
    ("rule", "rule id"),
    ("rule_name", "rule name"),
    ("group", "the group's fields, for a count by rule"),
    ("value", "the value that moved it"),
    ("threshold", "the rule's threshold"),
    ("event_id", "the transition's id (the webhook's)"),
    ("timestamp", "time of the transition"),
)
_KEYWORDS = (
    ("from:", "from:logs (default), from:events or from:alert_events"),
    ("last:", "time window, e.g. last:1h, last:24h, last:30d"),
    ("since:", "from this ISO 8601 time"),
    ("until:", "up to this ISO 8601 time (exclusive)"),
    ("NOT", "negate the next condition (or prefix it with -)"),
    ("OR", "either condition"),
)
_STAGES = (
    ("count", "number of matching rows"),
    ("count by ", "rows per value of a field"),
    ("count_distinct(", "distinct values of a field"),
    ("top ", "the N largest groups"),
    ("sort ", "sort by a field (asc or desc)"),
    ("limit ", "at most N rows or groups"),
    ("where ", "a condition"),
    ("last:", "time window"),
)
_BINS = (("bin(timestamp, 1m)", "time buckets of a width: s, m, h, d, w"),)
_WINDOWS = ("15m", "1h", "6h", "24h", "7d", "30d")


def suggest(text: str, cursor: int, schema: dict[str, Any]) -> dict[str, Any]:
    cursor = max(0, min(cursor, len(text)))
    start = cursor
    while start > 0 and text[start - 1] not in _WORD_BREAK:
        start -= 1
    end = cursor
    while end < len(text) and text[end] not in _WORD_BREAK:
        end += 1
    word = text[start:cursor]
    source = (
        "alert_events" if _FROM_ALERTS.search(text) else "events" if _FROM_EVENTS.search(text) else "logs"
    )

    compare = _COMPARE.match(word)
    if name_only := _NAME_ONLY.search(text[:start]):
        suggestions = [{**s, "text": s["text"].removesuffix(":")} for s in _fields(word, source, schema)]
        if name_only.group(2) is None or name_only.group(2).lower() == "by":
            suggestions = _matching(_BINS, word, "field") + suggestions
    elif compare:
        suggestions = _values(compare.group(2), compare.group(4), source, schema)
    elif text[:start].rstrip().endswith("|") or not text[:start].strip():
        suggestions = _stages_and_fields(word, source, schema, stages=text[:start].rstrip().endswith("|"))
    else:
        suggestions = _fields(word, source, schema) + _matching(_KEYWORDS, word, "keyword")
    valid, parsed, problem = _validate(text, text[:start] + text[end:], source)
    out: dict[str, Any] = {"suggestions": suggestions[:MAX_SUGGESTIONS], "valid": valid, "parsed": parsed}
    if problem is not None:
        out["error"] = problem
    return out


def _validate(
    text: str, without_word: str, source: str
) -> tuple[bool, dict[str, Any], dict[str, Any] | None]:
    first: GQLError | None = None
    for candidate in (text, without_word):
        try:
            query = parse(candidate)
            compile_query(query, "-", 0)  # unknown sources, severities and the like
        except GQLError as exc:
            first = first or exc
            continue
        return True, query.to_dict(), None
    assert first is not None
    problem = {"message": str(first), "position": first.position}
    return False, {"source": source, "filters": []}, problem


def _values(field: str, prefix: str, source: str, schema: dict[str, Any]) -> list[dict[str, Any]]:
    name = field.lower()
    options: list[tuple[str, str]]
    if name == "from":
        options = [
            ("logs", "log entries"),
            ("events", "product analytics events"),
            ("alert_events", "alert transitions"),
        ]
    elif name == "last":
        options = [(w, "time window") for w in _WINDOWS]
    elif source == "logs" and name in ("severity", "level"):
        seen = schema.get("log_levels") or []
        options = [(s["name"], f"{s['volume']:,} logs") for s in seen] or [(lvl, "level") for lvl in LEVELS]
    elif source == "logs" and name == "service":
        options = [(s["name"], f"{s['volume']:,} logs") for s in schema.get("log_services") or []]
    elif source == "alert_events" and name in ("state", "previous_state"):
        options = [(state, "alert state") for state in ("pending", "firing", "resolved", "ok")]
    elif source == "alert_events":
        options = []
    elif source == "events" and name in ("event", "event_name", "name"):
        options = [(s["name"], f"{s['volume']:,} events") for s in schema.get("event_names") or []]
    else:
        props = schema.get("event_properties" if source == "events" else "log_properties") or []
        match = next((p for p in props if p["key"] == field), None)
        options = [(str(e), f"example {field} ({match['type']})") for e in match["examples"]] if match else []
    quote = '"' if prefix.startswith('"') else "'" if prefix.startswith("'") else ""
    bare = prefix.strip("'\"").lower()
    return [
        {
            "text": f"{quote}{text}{quote}" if quote else _quoted_if_needed(text),
            "description": desc,
            "kind": "value",
        }
        for text, desc in options
        if text.lower().startswith(bare)
    ]


def _quoted_if_needed(value: str) -> str:
    if value and not any(c in value for c in " \t()|'\""):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fields(prefix: str, source: str, schema: dict[str, Any]) -> list[dict[str, Any]]:
    negate = "-" if prefix.startswith("-") else ""
    bare = prefix.removeprefix("-").lower()
    builtin = {"events": _EVENT_FIELDS, "alert_events": _ALERT_FIELDS}.get(source, _LOG_FIELDS)
    out = [
        {"text": f"{negate}{name}:", "description": desc, "kind": "field"}
        for name, desc in builtin
        if name.lower().startswith(bare)
    ]
    unit = "events" if source == "events" else "logs"
    known = {name for name, _ in builtin}
    props = [] if source == "alert_events" else schema.get(f"{unit[:-1]}_properties") or []
    for prop in props:
        if prop["key"].lower().startswith(bare) and prop["key"] not in known:
            out.append(
                {
                    "text": f"{negate}{_quoted_if_needed(prop['key'])}:",
                    "description": f"{prop['type']}, {prop['volume']:,} {unit}",
                    "kind": "property",
                }
            )
    return out


def _stages_and_fields(word: str, source: str, schema: dict[str, Any], stages: bool) -> list[dict[str, Any]]:
    out = _matching(_STAGES, word, "stage")
    if not stages or not out:
        out += _fields(word, source, schema) + _matching(_KEYWORDS[:2], word, "keyword")
    return out


def _matching(options: tuple[tuple[str, str], ...], prefix: str, kind: str) -> list[dict[str, Any]]:
    bare = prefix.lower()
    return [
        {"text": text, "description": desc, "kind": kind}
        for text, desc in options
        if text.lower().startswith(bare)
    ]
