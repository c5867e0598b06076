"""Timberlogs JSONL: one JSON object per line; blank lines skipped; a bad line names its number."""

from __future__ import annotations

from typing import Any

import orjson

from formats.base import ParseContext
from formats.timberlogs.schema import MAX_LOGS, fail


def entries(body: bytes, ctx: ParseContext) -> list[Any]:
    out: list[Any] = []
    for n, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            fail(f"Failed to parse line {n}: invalid JSON")
        if not isinstance(item, dict):
            fail(f"Failed to parse line {n}: expected a JSON object")
        out.append(item)
        if len(out) > MAX_LOGS:  # already too many: the batch check refuses it, skip parsing the rest
            break
    return out
