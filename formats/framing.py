"""Framing: a body split into the records a format then reads, kept apart from the formats.

Every line-oriented format (JSON lines, syslog, plain text) frames its body here, so a
blank line, a CRLF and the record cap mean the same thing in each.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import AnyStr


def lines(data: AnyStr, limit: int | None = None) -> Iterator[tuple[int, AnyStr]]:
    """The non-blank lines of `data` with their 1-based line numbers, trailing CRs removed.

    With `limit`, framing stops after `limit + 1` lines: enough for the caller to refuse a
    body over its cap without splitting the rest into records it will never read.
    """
    newline = "\n" if isinstance(data, str) else b"\n"
    cr = "\r" if isinstance(data, str) else b"\r"
    found = 0
    for n, line in enumerate(data.split(newline), 1):
        if not line.strip():
            continue
        yield n, line.rstrip(cr)
        found += 1
        if limit is not None and found > limit:
            return
