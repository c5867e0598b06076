"""Loki push: `POST /loki/api/v1/push`, key as Basic password (Grafana Cloud's way) or Bearer.

Loki answers a push with `204` and no body, and errors as a plain-text line, which is what
its clients (Promtail, Alloy, the logging handlers) print. An entry Millrace refuses (no
usable time, a line that is not a string) is named in a `400` while the request's other
entries are stored, as Loki itself does with entries it refuses: a `400` is never retried.
"""

from __future__ import annotations

from aiohttp import web

from formats import Parsed
from formats.loki import ORG_ID_HEADER
from gateway.dialects.base import Dialect, Problem, basic_key
from millrace.keys import SCOPE_LOGS

_SHOWN = 20  # refused entries named in a 400


def _token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() != "basic":
        return None
    return basic_key(value)


def _success(parsed: Parsed, received_at_ns: int) -> web.Response:
    if not parsed.rejected:
        return web.Response(status=204)
    named = "; ".join(r.reason for r in parsed.rejected[:_SHOWN])
    more = f" (and {len(parsed.rejected) - _SHOWN} more)" if len(parsed.rejected) > _SHOWN else ""
    stored = len(parsed.rows)
    return _error(
        Problem(
            400, "invalid_entries", f"{stored} entries stored, {len(parsed.rejected)} refused: {named}{more}"
        )
    )


def _error(problem: Problem) -> web.Response:
    headers = {"Retry-After": str(problem.retry_after)} if problem.retry_after is not None else None
    return web.Response(status=problem.status, text=problem.message + "\n", headers=headers)


LOKI = Dialect(
    name="loki",
    scope=SCOPE_LOGS,
    token=_token,
    success=_success,
    error=_error,
    statuses={"request_too_large": 413},
    headers=(ORG_ID_HEADER,),
)
