"""Helpers for the parser tests: a fixed receive time, contexts, and times as ns.

Parser tests are pure (bytes in, rows out): no broker, no ClickHouse, no fixtures of the
integration suite are used here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from formats.base import ParseContext, Parsed

# 2024-01-15T12:00:00Z: a receive time near the seed examples' own times.
RECEIVED_AT_NS = 1_705_320_000 * 10**9


def make_ctx(
    content_type: str = "application/json",
    query: Mapping[str, str] | None = None,
    received_at_ns: int = RECEIVED_AT_NS,
    path: str = "",
) -> ParseContext:
    return ParseContext(
        received_at_ns=received_at_ns, path=path, content_type=content_type, query=dict(query or {})
    )


def utc_ns(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> int:
    """A UTC wall time as ns since the epoch, computed independently of the parsers."""
    whole = int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())
    return whole * 10**9 + micro * 1000


def deep_arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth):
        value = {"k": value}
    return value


def shape(parsed: Parsed) -> tuple[Any, ...]:
    """What a parse gave, to compare two parses: rows with each value's type and the attributes'
    key order, the refusals, the answer and the table."""

    def typed(value: Any) -> Any:
        if isinstance(value, dict):
            return [(k, typed(v)) for k, v in value.items()]
        return (type(value).__name__, value)

    return [typed(row) for row in parsed.rows], parsed.rejected, parsed.answer, parsed.table
