"""Timberlogs syslog: one RFC 5424 or RFC 3164 message per line (blank lines skipped).

    RFC 5424  <165>1 2024-01-15T10:30:00.000Z myhost api 1234 ID47 [sd@1 k="v"] Connection refused
    RFC 3164  <34>Jan 15 10:30:00 myhost api[1234]: Connection refused

    severity (PRI % 8)  -> level: emergency/alert/critical/error -> error, warning -> warn,
                           notice/info -> info, debug -> debug; the severity name is `severity_text`
                           and `data.severity`
    facility (PRI // 8) -> data.facility (its name: kern, user, ..., local7)
    TIMESTAMP           -> timestamp. RFC 3164 has no year: the latest year that does not put it
                           more than a day past the receive time (a `Jan 15` line received in
                           November is this year's, a `Dec 31` line received on January 1st
                           last year's). A 3164
                           line may carry an RFC 3339 time instead, as many senders do.
    HOSTNAME            -> data.hostname, and the `host` column
    APP-NAME / TAG      -> source
    PROCID / [pid]      -> data.procid
    MSGID               -> data.msgid
    STRUCTURED-DATA     -> data["<SD-ID>.<PARAM>"]
    MSG                 -> message (a leading UTF-8 BOM dropped)

RFC 5424 nil values (`-`) are left out. A line that is neither form refuses the request:
"Failed to parse line 3: not an RFC 5424 or RFC 3164 syslog message".
"""

from __future__ import annotations

import re
from typing import Any, Final

from formats import framing
from formats.base import ParseContext
from formats.common import ascii_digits, parse_bsd_timestamp, parse_timestamp
from formats.timberlogs.schema import MAX_LOGS, decode, fail

SEVERITIES: Final[tuple[str, ...]] = (
    *("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"),
)
LEVELS: Final[tuple[str, ...]] = ("error", "error", "error", "error", "warn", "info", "info", "debug")
FACILITIES: Final[tuple[str, ...]] = (
    *("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp"),
    *("ntp", "security", "console", "solaris-cron", *[f"local{n}" for n in range(8)]),
)

# Structured data is rare and small, so a regex per element is fine there.
_SD_ID: Final = re.compile(r'\[([^ \]="]+)')
_SD_PARAM: Final = re.compile(r' ([^ \]="]+)="((?:[^"\\]|\\.)*)"', re.S)
_SD_UNESCAPE: Final = re.compile(r'\\(["\\\]])')


def entries(body: bytes, ctx: ParseContext) -> tuple[list[Any], list[str]]:
    """The log entries, and each one's syslog severity name (its `severity_text`)."""
    out: list[Any] = []
    severities: list[str] = []
    for n, line in framing.lines(decode(body), MAX_LOGS):
        parsed = parse_line(line, ctx.received_at_ns)
        if parsed is None:
            fail(f"Failed to parse line {n}: not an RFC 5424 or RFC 3164 syslog message")
        out.append(parsed[0])
        severities.append(parsed[1])
    return out, severities


def parse_line(line: str, received_at_ns: int) -> tuple[dict[str, Any], str] | None:
    line = line.lstrip()
    close = line.find(">", 1, 5)
    if not line.startswith("<") or close < 0 or not ascii_digits(line[1:close]):
        return None
    pri = int(line[1:close])
    if pri > 191:
        return None
    facility, severity = divmod(pri, 8)
    data: dict[str, Any] = {"severity": SEVERITIES[severity], "facility": FACILITIES[facility]}
    rest = line[close + 1 :]
    entry = (
        _rfc5424(rest, data)
        if rest[:1].isdigit() and rest[1:2] == " "
        else _rfc3164(rest, data, received_at_ns)
    )
    if entry is None:
        return None
    entry["level"] = LEVELS[severity]
    entry["data"] = data
    return entry, SEVERITIES[severity]


def _rfc5424(rest: str, data: dict[str, Any]) -> dict[str, Any] | None:
    parts = rest.split(" ", 6)
    if len(parts) < 7 or parts[0] != "1":
        return None
    _, stamp, hostname, app, procid, msgid, tail = parts
    entry: dict[str, Any] = {}
    if stamp != "-":
        ns = _rfc3339(stamp)
        if ns is None:
            return None
        entry["timestamp"] = _ms(ns)
    if hostname != "-":
        data["hostname"] = hostname
    if app != "-":
        entry["source"] = app
    if procid != "-":
        data["procid"] = procid
    if msgid != "-":
        data["msgid"] = msgid
    if tail.startswith("-"):
        end = 1
    else:
        structured = _structured(tail, data)
        if structured is None:
            return None
        end = structured
    if end < len(tail) and tail[end] != " ":
        return None
    message = tail[end + 1 :]
    entry["message"] = message[1:] if message.startswith("\ufeff") else message
    return entry


def _structured(tail: str, data: dict[str, Any]) -> int | None:
    """Parse `[id k="v" ...]...` into data; the index after it, or None when malformed."""
    pos = 0
    while pos < len(tail) and tail[pos] == "[":
        sd = _SD_ID.match(tail, pos)
        if sd is None:
            return None
        pos = sd.end()
        while (param := _SD_PARAM.match(tail, pos)) is not None:
            value = param.group(2)
            data[f"{sd.group(1)}.{param.group(1)}"] = (
                _SD_UNESCAPE.sub(r"\1", value) if "\\" in value else value
            )
            pos = param.end()
        if tail[pos : pos + 1] != "]":
            return None
        pos += 1
    return pos if pos else None


def _rfc3164(rest: str, data: dict[str, Any], received_at_ns: int) -> dict[str, Any] | None:
    entry: dict[str, Any] = {}
    ns = parse_bsd_timestamp(rest[:15], received_at_ns)
    if ns is not None and rest[15:16] in (" ", ""):
        after = rest[16:]
    else:  # many senders put an RFC 3339 time in the 3164 layout
        stamp, _, after = rest.partition(" ")
        ns = _rfc3339(stamp)
        if ns is None:
            return None
    entry["timestamp"] = _ms(ns)
    first, _, remainder = after.partition(" ")
    if first and not first.endswith(":") and "[" not in first:
        data["hostname"] = first
    else:  # no HOSTNAME: the first word is already the TAG
        remainder = after
    colon, space = remainder.find(":"), remainder.find(" ")
    if colon > 0 and (space < 0 or colon < space):
        tag, message = remainder[:colon], remainder[colon + 1 :]
        bracket = tag.find("[")
        if bracket > 0 and tag.endswith("]"):
            data["procid"] = tag[bracket + 1 : -1]
            tag = tag[:bracket]
        entry["source"] = tag
        entry["message"] = message[1:] if message.startswith(" ") else message
    else:
        entry["message"] = remainder
    return entry


def _rfc3339(stamp: str) -> int | None:
    """A date-time, not a bare number (which parse_timestamp would read as Unix seconds)."""
    if stamp[4:5] != "-":
        return None
    return parse_timestamp(stamp) or None


def _ms(ns: int) -> int | float:
    """Unix ms as the schema wants it; whole when it is, so the common case converts back exactly."""
    whole, part = divmod(ns, 1_000_000)
    return whole if not part else ns / 1_000_000
