"""TG2G IngestAPI (seed 000): `POST /v1/logs` with `X-TG2G-Api-Key`.

The seed documents no response, so Millrace answers what a batch API should:
`202 {"accepted": n, "rejected": m, "errors": [{"index": i, "reason": ...}]}` (records
without a `message` are refused one by one, the rest stored), and errors as
`{"error": {"code": ..., "message": ...}}`.
"""

from __future__ import annotations

from aiohttp import web

from formats import Parsed
from gateway.dialects.base import Dialect, Problem, json_response
from millrace.keys import SCOPE_LOGS

HEADER = "X-TG2G-Api-Key"


def _token(request: web.Request) -> str | None:
    return request.headers.get(HEADER, "").strip() or None


def _success(parsed: Parsed, received_at_ns: int) -> web.Response:
    body: dict[str, object] = {"accepted": len(parsed.rows), "rejected": len(parsed.rejected)}
    if parsed.rejected:
        body["errors"] = [{"index": r.index, "reason": r.reason} for r in parsed.rejected[:100]]
    return json_response(202, body)


def _error(problem: Problem) -> web.Response:
    return json_response(
        problem.status, {"error": {"code": problem.code, "message": problem.message}}, problem.retry_after
    )


TG2G = Dialect(name="tg2g", scope=SCOPE_LOGS, token=_token, success=_success, error=_error)
