"""Splunk HTTP Event Collector: `/services/collector[/event|/raw]` and `GET /services/collector/health`.

Answers are HEC's `{"text": ..., "code": n}`: `200 {"text":"Success","code":0}`; `400`
code 5 (no data), 6 (invalid data format), 12/13 (event field required / blank) with
`invalid-event-number` naming the event that stopped the request (the ones before it are
stored, as HEC does); `401` code 2 (no token) and 3 (a malformed Authorization header);
`403` code 4 (a token Millrace does not know, or one without `logs:write`); `503` code 9
"Server is busy" with `Retry-After` for both a rate refusal and Kafka being away.
The token: `Authorization: Splunk <key>` (or Basic with the key as password, or `?token=`).

Indexer acknowledgment: a request that names a channel (`X-Splunk-Request-Channel`, or
`?channel=`) is answered with an `ackId` too, and `POST /services/collector/ack` tells, per
`ackId`, whether its events are stored and readable. An `ackId` is where Kafka put the
request (its partition and offset, `ack_id`), so any gateway process answers for any other,
across restarts, with no state of its own: the id is acknowledged once the worker's
watermark for that partition has reached its offset (`reads.query.stored_offsets`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import orjson
from aiohttp import web

from formats import Parsed
from formats.hec import EVENT_BLANK, EVENT_REQUIRED, INVALID_FORMAT, NO_DATA
from gateway.body import BodyError
from gateway.dialects.base import Dialect, Problem, basic_key, json_response
from gateway.ingest import PRODUCED_AT, Ingestor
from gateway.read import ReadBackend, ReadUnavailable
from millrace.keys import SCOPE_LOGS
from reads.query import QueryError
from reads.slots import ReadsBusy

_CODES: Final = {NO_DATA: 5, INVALID_FORMAT: 6, EVENT_REQUIRED: 12, EVENT_BLANK: 13}
_PARSE_CODES: Final = {"no_data": 5, "invalid_format": 6}
CHANNEL_HEADER: Final = "X-Splunk-Request-Channel"
# An ackId is `offset << PARTITION_BITS | partition`: up to 65,536 partitions, and offsets up to
# 2**47 (an integer a client's 64-bit ackId holds).
PARTITION_BITS: Final = 16
MAX_ACKS: Final = 10_000  # ids in one status query


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


def channel(request: web.Request) -> str:
    """The request's HEC channel ('' when it names none)."""
    return request.headers.get(CHANNEL_HEADER) or request.query.get("channel") or ""


def ack_id(partition: int, offset: int) -> int | None:
    """The ackId of a request Kafka put at (partition, offset); None past what one can number."""
    if partition >> PARTITION_BITS or offset >> (63 - PARTITION_BITS):
        return None
    return offset << PARTITION_BITS | partition


def acking(dialect: Dialect, request: web.Request) -> Dialect:
    """`dialect`, answering a success with the request's ackId (HEC indexer acknowledgment)."""

    def success(parsed: Parsed, received_at_ns: int) -> web.Response:
        if parsed.rejected or PRODUCED_AT not in request:
            return _success(parsed, received_at_ns)
        number = ack_id(*request[PRODUCED_AT])
        if number is None:
            return _success(parsed, received_at_ns)
        return _reply(200, "Success", 0, ackId=number)

    return dataclasses.replace(dialect, success=success)


async def acks(request: web.Request, ingestor: Ingestor, store: ReadBackend) -> web.Response:
    """`POST /services/collector/ack` with `{"acks": [ackId, ...]}`: `{"acks": {"<ackId>": true|false}}`,
    true once that request's events are stored. HEC's codes: 10 when no channel is named, 6 for
    a body that is not such a list, 9 (503) while the store cannot be asked."""
    if (early := precheck(request)) is not None:
        return early
    admitted = ingestor.admit(token(request), SCOPE_LOGS)
    if isinstance(admitted, Problem):
        return _error(admitted)
    if not channel(request):
        return _reply(400, "Data channel is missing", 10)
    try:
        body = await ingestor.read(request)
    except BodyError as exc:
        return _error(Problem(exc.status, exc.code, exc.message))
    try:
        asked = orjson.loads(body)["acks"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        asked = None
    if (
        not isinstance(asked, list)
        or len(asked) > MAX_ACKS
        or not all(type(n) is int and 0 <= n < 1 << 63 for n in asked)
    ):
        return _reply(400, f'Invalid data format: expected {{"acks": [up to {MAX_ACKS} ackIds]}}', 6)
    try:
        stored = await store.call(
            "stored_offsets", {"project": admitted.project, "topic": ingestor.settings.topic}
        )
    except (ReadUnavailable, ReadsBusy, QueryError):
        return _reply(503, "Server is busy", 9, 1)
    mask = (1 << PARTITION_BITS) - 1
    answer = {}
    for n in asked:
        reached = stored.get(str(n & mask))
        answer[str(n)] = reached is not None and n >> PARTITION_BITS <= reached
    return json_response(200, {"acks": answer})


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
