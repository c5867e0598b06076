"""AstraLog (seed 001): `POST /v1/drain`, the raw token in `Authorization`, 200 `{"status":"accepted"}`.

The seed documents no error body, so errors keep the success body's shape:
`{"status": "error", "code": ..., "error": ...}`.
"""

from __future__ import annotations

from aiohttp import web

from formats import Parsed
from gateway.dialects.base import Dialect, Problem, json_response
from millrace.keys import SCOPE_LOGS

_ACCEPTED = b'{"status":"accepted"}'


def _token(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "").strip()
    # The seed's prose says "Bearer token" while its example sends the bare token: take both.
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def _success(parsed: Parsed, received_at_ns: int) -> web.Response:
    return web.Response(status=200, body=_ACCEPTED, content_type="application/json")


def _error(problem: Problem) -> web.Response:
    body = {"status": "error", "code": problem.code, "error": problem.message}
    return json_response(problem.status, body, problem.retry_after)


ASTRALOG = Dialect(name="astralog", scope=SCOPE_LOGS, token=_token, success=_success, error=_error)
