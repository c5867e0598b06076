"""Timberlogs JSON: `{"logs": [...]}`, a bare array of logs, or one log object.

An object is the `{"logs": [...]}` envelope when it has `logs` and no `message` (a log may
well carry a field named `logs`). Other envelope fields apply to every log that lacks them,
so nothing sent is dropped. (An OBL document sent as JSON is routed to `obl` by the package.)
"""

from __future__ import annotations

from typing import Any

from formats.timberlogs.schema import fail


def from_doc(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict):
        fail(
            "Invalid request: expected a JSON object or an array of logs",
            [{"path": [], "message": "Expected object"}],
        )
    if "logs" not in doc or "message" in doc:
        return [doc]
    logs = doc["logs"]
    if not isinstance(logs, list):
        fail("Invalid request: 'logs' must be an array", [{"path": ["logs"], "message": "Expected array"}])
    extras = {k: v for k, v in doc.items() if k != "logs"}
    if not extras:
        return logs
    return [{**extras, **log} if isinstance(log, dict) else log for log in logs]
