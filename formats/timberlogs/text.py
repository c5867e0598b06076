"""Timberlogs plain text: one log per line (blank lines skipped).

A line may start with a timestamp, then a level keyword; the rest of the line (trimmed) is
the message:

    2024-01-15 10:30:00 ERROR Connection refused to database
    2024-01-15T10:30:00.250Z [warning] Disk 91% full
    01/15/2024 10:30:00 info: Retrying
    DEBUG cache miss for key 42
    just a message

- timestamps: ISO 8601 (`T` or space separator, optional fraction with `.` or `,`, optional
  `Z`/offset; no zone = UTC) and `MM/DD/YYYY HH:MM:SS` (US order, UTC). A line without one
  gets the ingest time.
- level keywords, case-insensitive, as the first word after the timestamp, optionally
  bracketed or followed by a colon: ERROR, WARN, WARNING, INFO, DEBUG. The word as written is
  kept in `severity_text`. A line without one gets the `?level=` default, else `info`.
- `source` and `environment` come from the query defaults (`?source=nginx&environment=production`).

Only the start of the line is looked at: "no error found" is an info message, not an error.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final

from formats import framing
from formats.base import ParseContext
from formats.common import datetime_ns
from formats.timberlogs.schema import MAX_LOGS, decode

LEVEL_WORDS: Final = {"error": "error", "warn": "warn", "warning": "warn", "info": "info", "debug": "debug"}

# Run only on lines whose first character is a digit.
_TIMESTAMP: Final = re.compile(
    r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d(?::?\d\d)?)?"
    r"|(\d\d)/(\d\d)/(\d{4}) (\d\d):(\d\d):(\d\d))(?=\s|$)",
    re.ASCII,
)


def entries(body: bytes, ctx: ParseContext) -> tuple[list[Any], list[str]]:
    """The log entries, and each one's level as written (its `severity_text`)."""
    out: list[Any] = []
    written: list[str] = []
    for _, line in framing.lines(decode(body), MAX_LOGS):
        entry, word = parse_line(line.strip())
        out.append(entry)
        written.append(word)
    return out, written


def parse_line(line: str) -> tuple[dict[str, Any], str]:
    entry: dict[str, Any] = {}
    rest = line
    if line[0].isdigit():
        match = _TIMESTAMP.match(line)
        ns = _time(match) if match is not None else None
        if ns is not None and match is not None:
            entry["timestamp"] = ns // 1_000_000 if ns % 1_000_000 == 0 else ns / 1_000_000
            rest = line[match.end() :].lstrip()
    first, _, after = rest.partition(" ")
    word = first.strip("[]").rstrip(":")
    level = LEVEL_WORDS.get(word.lower())
    if level is None:
        written = ""
    else:
        entry["level"] = level
        written = word
        rest = after.lstrip()
    entry["message"] = rest
    return entry, written


def _time(match: re.Match[str]) -> int | None:
    try:
        if match.group(2) is None:
            dt = datetime.fromisoformat(match.group(1).replace(",", "."))
            return datetime_ns(dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC))
        month, day, year, hour, minute, second = [int(g) for g in match.groups()[1:]]
        return datetime_ns(datetime(year, month, day, hour, minute, second, tzinfo=UTC))
    except (ValueError, OverflowError):  # 2024-13-45, or a zone that pushes it out of range
        return None
