"""Dynatrace log ingest (seed 002): `POST /api/v2/logs/ingest`, `Authorization: Api-Token <key>`.

Full success is `204` with no body; when some events were dropped, `200` with the
SuccessEnvelope `{"details": {"message": ..., "code": 200}}` naming them; when every
event was dropped, `400` naming them. Errors use
Dynatrace's ErrorEnvelope `{"error": {"code": <status>, "message": ...}}`.
"""

from __future__ import annotations

from aiohttp import web

from formats import Parsed
from gateway.dialects.base import Dialect, Problem, json_response
from millrace.keys import SCOPE_LOGS

_SHOWN = 20  # dropped events named in a partial-success message


def _token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("api-token", "bearer") and value.strip():
        return value.strip()
    # Dynatrace also takes the token as a query parameter.
    return request.query.get("api-token") or request.query.get("Api-Token") or None


def _success(parsed: Parsed, received_at_ns: int) -> web.Response:
    if not parsed.rejected:
        return web.Response(status=204)
    dropped = "; ".join(f"event {r.index}: {r.reason}" for r in parsed.rejected[:_SHOWN])
    more = f" (and {len(parsed.rejected) - _SHOWN} more)" if len(parsed.rejected) > _SHOWN else ""
    if not parsed.rows:
        # Nothing ingested is no partial success: the input is invalid.
        message = f"no event ingested, {len(parsed.rejected)} dropped: {dropped}{more}"
        return _error(Problem(400, "invalid_events", message))
    message = f"{len(parsed.rows)} event(s) ingested, {len(parsed.rejected)} dropped: {dropped}{more}"
    return json_response(200, {"details": {"message": message, "code": 200}})


def _error(problem: Problem) -> web.Response:
    error: dict[str, object] = {"code": problem.status, "message": problem.message}
    if problem.details:
        error["constraintViolations"] = problem.details
    return json_response(problem.status, {"error": error}, problem.retry_after)


DYNATRACE = Dialect(
    name="dynatrace",
    scope=SCOPE_LOGS,
    token=_token,
    success=_success,
    error=_error,
    statuses={"request_too_large": 413, "too_many_events": 413},
)
