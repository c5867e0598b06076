"""Timberlogs (seed 004): `POST /v1/logs` in six formats, `Authorization: Bearer` or `X-API-Key`.

`200 {"success": true, "count": n, "timestamp": <ms>}`; `400 {"error": ..., "code": "PARSE_ERROR"}`
(with the validation `issues` for JSON); `401 {"error": "Invalid API key"}`;
`429 {"error": "Rate limit exceeded", "retryAfter": s}`.
"""

from __future__ import annotations

from aiohttp import web

from formats import Parsed
from gateway.dialects.base import Dialect, Problem, bearer, json_response
from millrace.keys import SCOPE_LOGS


def _token(request: web.Request) -> str | None:
    # Its published Python SDK sends X-API-Key; the HTTP docs show Bearer.
    return bearer(request) or request.headers.get("X-API-Key", "").strip() or None


def _success(parsed: Parsed, received_at_ns: int) -> web.Response:
    return json_response(
        200, {"success": True, "count": len(parsed.rows), "timestamp": received_at_ns // 1_000_000}
    )


def _error(problem: Problem) -> web.Response:
    if problem.status == 401:
        return json_response(401, {"error": "Invalid API key"})
    if problem.status == 429:
        retry = problem.retry_after or 1
        return json_response(429, {"error": "Rate limit exceeded", "retryAfter": retry}, retry)
    body: dict[str, object] = {"error": problem.message, "code": _code(problem)}
    if problem.details:
        body["issues"] = problem.details
    return json_response(problem.status, body, problem.retry_after)


def _code(problem: Problem) -> str:
    if problem.status == 400:
        return problem.code if problem.code in ("PARSE_ERROR", "VALIDATION_ERROR") else "PARSE_ERROR"
    return {403: "FORBIDDEN", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_ENCODING", 503: "UNAVAILABLE"}.get(
        problem.status, "ERROR"
    )


TIMBERLOGS = Dialect(name="timberlogs", scope=SCOPE_LOGS, token=_token, success=_success, error=_error)
