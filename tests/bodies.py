"""AstraLog test data: one valid record, and `/v1/drain` bodies of such records, fields set per test."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson


def astralog_record(**fields: Any) -> dict[str, Any]:
    """A record every AstraLog parser path accepts, with `fields` set or replaced."""
    return {
        "project_id": "p",
        "timestamp": "2024-05-31T15:30:45Z",
        "level": "info",
        "service": "s",
        "message": "m",
        **fields,
    }


def drain_body(messages: Iterable[str], **fields: Any) -> bytes:
    """One record per message; `fields` apply to every record (and win over the message)."""
    return orjson.dumps({"logs": [{**astralog_record(message=m), **fields} for m in messages]})
