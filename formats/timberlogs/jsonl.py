"""Timberlogs JSONL: one JSON object per line; blank lines skipped; a bad line names its number."""

from __future__ import annotations

from typing import Any

import orjson

from formats import framing
from formats.base import ParseContext
from formats.timberlogs.schema import MAX_LOGS, fail


def entries(body: bytes, ctx: ParseContext) -> list[Any]:
    out: list[Any] = []
    for n, line in framing.lines(body, MAX_LOGS):
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            fail(f"Failed to parse line {n}: invalid JSON")
        if not isinstance(item, dict):
            fail(f"Failed to parse line {n}: expected a JSON object")
        out.append(item)  # at most MAX_LOGS + 1: the batch check refuses that many
    return out
