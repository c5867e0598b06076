"""Splunk HTTP Event Collector: `/services/collector[/event|/raw]` and `GET /services/collector/health`.

Answers are HEC's `{"text": ..., "code": n}`: `200 {"text":"Success","code":0}`; `400`
code 5 (no data), 6 (invalid data format), 12/13 (event field required / blank) with
`invalid-event-number` naming the event that stopped the request (the ones before it are
stored, as HEC does); `401` code 2 (no token) and 3 (a malformed Authorization header);
`403` code 4 (a token Millrace does not know, or one without `logs:write`); `503` code 9
"Server is busy" with `Retry-After` for both a rate refusal and Kafka being away.
The token: `Authorization: Splunk <key>` (or Basic with the key as password, or `?token=`).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from formats import Parsed
from formats.hec import EVENT_BLANK, EVENT_REQUIRED, INVALID_FORMAT, NO_DATA
from gateway.dialects.base import Dialect, Problem, basic_key, json_response
from millrace.keys import SCOPE_LOGS

_CODES: Final = {NO_DATA: 5, INVALID_FORMAT: 6, EVENT_REQUIRED: 12, EVENT_BLANK: 13}
_PARSE_CODES: Final = {"no_data": 5, "invalid_format": 6}


def token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "splunk" and value:
        return value
    if scheme == "basic" and value:
        return basic_key(value)
    if "Authorization" not in request.headers:
        return request.query.get("token") or None
    return None


def precheck(request: web.Request) -> web.Response | None:
    """HEC's own 401s, which tell a missing token (2) from a malformed header (3)."""
    if token(request) is not None:
        return None
    if "Authorization" not in request.headers:
        return _reply(401, "Token is required", 2)
    return _reply(401, "Invalid authorization", 3)


def _reply(status: int, text: str, code: int, retry_after: int | None = None, **extra: Any) -> web.Response:
    return json_response(status, {"text": text, "code": code, **extra}, retry_after)


def _success(parsed: Parsed, received_at_ns: int) -> web.Response:
    if not parsed.rejected:
        return _reply(200, "Success", 0)
    stop = parsed.rejected[0]
    text = stop.reason.partition(":")[0]
    return _reply(400, stop.reason, _CODES.get(text, 6), **{"invalid-event-number": stop.index})


def _error(problem: Problem) -> web.Response:
    if problem.status == 401:
        return _reply(403, "Invalid token", 4)
    if problem.status == 403:
        return _reply(403, problem.message, 4)
    if problem.status in (429, 503):
        return _reply(503, "Server is busy", 9, problem.retry_after or 1)
    code = _PARSE_CODES.get(problem.code, 6)
    return _reply(problem.status, problem.message, code)


async def health(request: web.Request) -> web.Response:
    return _reply(200, "HEC is healthy", 17)


HEC_EVENT = Dialect(name="hec_event", scope=SCOPE_LOGS, token=token, success=_success, error=_error)
HEC_RAW = Dialect(name="hec_raw", scope=SCOPE_LOGS, token=token, success=_success, error=_error)
