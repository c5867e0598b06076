"""GoodLogs (seed 003): `POST /v1/logs` (secret keys) and `POST /v1/events` (any key), Bearer auth.

`202 {"accepted": n, "rejected": m}`; errors are `{"error": {"code": ..., "message": ...}}`
with the codes of the seed's table. A public key (events only) on `/v1/logs` is 403.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from formats import Parsed
from gateway.dialects.base import Dialect, Problem, bearer, json_response
from millrace.keys import SCOPE_EVENTS, SCOPE_LOGS

MAX_BODY = 2 * 1024 * 1024  # the seed's "Max request body: 2 MB"

_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    402: "QUOTA_EXCEEDED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    413: "PAYLOAD_TOO_LARGE",
    415: "VALIDATION_ERROR",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "UNAVAILABLE",
}


def _success(parsed: Parsed, received_at_ns: int) -> web.Response:
    return json_response(202, {"accepted": len(parsed.rows), "rejected": len(parsed.rejected)})


def _error(problem: Problem) -> web.Response:
    code = _CODES.get(problem.status, "INTERNAL_ERROR")
    return json_response(
        problem.status, {"error": {"code": code, "message": problem.message}}, problem.retry_after
    )


GOODLOGS_LOGS = Dialect(
    name="goodlogs_logs",
    scope=SCOPE_LOGS,
    token=bearer,
    success=_success,
    error=_error,
    max_body=MAX_BODY,
    statuses={"PAYLOAD_TOO_LARGE": 413},
)
# The same wire manners; the public key's scope.
GOODLOGS_EVENTS = replace(GOODLOGS_LOGS, name="goodlogs_events", scope=SCOPE_EVENTS)
