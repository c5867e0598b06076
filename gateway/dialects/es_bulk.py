"""Elasticsearch `_bulk`: `POST`/`PUT` `/_bulk` and `/<index>/_bulk`, and the probes shippers send first.

Answers are Elasticsearch's: `200 {"took", "errors", "items": [...]}` with one item per action
in action order (`201` for a stored document, `400` with an `error` object for a refused
one), errors as `{"error": {"root_cause", "type", "reason"}, "status"}`, and every answer
carries `X-Elastic-Product: Elasticsearch` (the official clients refuse a reply without it).
The key: `ApiKey <base64 id:key>` (the key part; an unencoded key is taken too), Basic
(the password), or Bearer.

Over the key's log rate, the documents that still fit are stored and the rest are answered
`429` item by item inside a `200` with `errors: true`, as Elasticsearch does when its write
queue is full, so `helpers.streaming_bulk(max_retries=...)` resends only those. A request
refused before its body is read (over the request rate, or no log token left at all) is a
whole-request `429`, which the client retries whole.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Final

import orjson
from aiohttp import web

from formats import Parsed, Rejection
from formats.es_bulk import BulkItem
from gateway.dialects.base import Dialect, Problem, basic_key, decoded_base64, json_response
from millrace.keys import SCOPE_LOGS

PRODUCT_HEADER: Final = {"X-Elastic-Product": "Elasticsearch"}
VERSION: Final = "8.17.0"  # what the probes report: the shippers in docs/shippers.md accept 8.x
_TYPES: Final = {
    401: "security_exception",
    403: "security_exception",
    413: "content_too_long_exception",
    415: "media_type_header_exception",
    429: "es_rejected_execution_exception",
    503: "unavailable_shards_exception",
}


def token(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if not value:
        return None
    if scheme == "bearer":
        return value
    if scheme == "apikey":
        decoded = decoded_base64(value)
        if decoded is not None and ":" in decoded:
            return decoded.partition(":")[2] or None
        return value
    if scheme == "basic":
        return basic_key(value)
    return None


def _with_product(response: web.Response) -> web.Response:
    response.headers.update(PRODUCT_HEADER)
    return response


def _item(item: BulkItem, position: int, received_at_ns: int) -> dict[str, Any]:
    body: dict[str, Any] = {"_index": item.index, "status": item.status}
    if item.error is None:
        body["_id"] = item.id if item.id is not None else f"{received_at_ns:x}-{position}"
        body.update(
            _version=1,
            result="created",
            _shards={"total": 1, "successful": 1, "failed": 0},
            _seq_no=position,
            _primary_term=1,
        )
    else:
        body["_id"] = item.id
        body["error"] = {"type": item.error_type, "reason": item.error}
    return {item.op: body}


def _success(parsed: Parsed, received_at_ns: int) -> web.Response:
    """`{"took", "errors", "items"}`: a stored item's JSON is `_item`'s, written from a template
    cut once per (op, index, status) around the two values that vary by position, without a dict
    per item; the other items via `_item`."""
    items: list[BulkItem] = parsed.answer or []
    took = max(0, (time.time_ns() - received_at_ns) // 1_000_000)
    templates: dict[tuple[str, str, int], tuple[bytes, bytes, bytes]] = {}
    parts: list[bytes] = []
    for position, item in enumerate(items):
        if item.error is None and item.id is None:
            key = (item.op, item.index, item.status)
            template = templates.get(key)
            if template is None:
                template = templates[key] = _stored_template(item, position, received_at_ns)
            head, middle, end = template
            parts.append(b"%s%x-%d%s%d%s" % (head, received_at_ns, position, middle, position, end))
        else:
            parts.append(orjson.dumps(_item(item, position, received_at_ns)))
    head = b'{"took":%d,"errors":%s,"items":[' % (took, b"true" if parsed.rejected else b"false")
    body = b"".join((head, b",".join(parts), b"]}"))
    return _with_product(web.Response(status=200, body=body, content_type="application/json"))


def _stored_template(item: BulkItem, position: int, received_at_ns: int) -> tuple[bytes, bytes, bytes]:
    """`_item`'s JSON of a stored document with no id of its own, cut around its generated id and
    its `_seq_no` (both vary by position): what comes before the id, between them, and after.
    The cuts hold: a quote inside a string value is escaped, so `"_id":"` is only the key."""
    rendered = orjson.dumps(_item(item, position, received_at_ns))
    before, _, after = rendered.partition(b'"_id":"%x-%d"' % (received_at_ns, position))
    between, _, end = after.rpartition(b'"_seq_no":%d' % position)
    return before + b'"_id":"', b'"' + between + b'"_seq_no":', end


def _split(parsed: Parsed, admitted: int, problem: Problem) -> Parsed:
    """Keep the first `admitted` stored documents; answer the later ones `429`, in action order."""
    items: list[BulkItem] = list(parsed.answer or [])
    rejected = list(parsed.rejected)
    kept = 0
    for position, item in enumerate(items):
        if item.error is not None:
            continue  # refused for itself: a retry would not help, its own answer stands
        if kept < admitted:
            kept += 1
            continue
        items[position] = replace(
            item, status=429, error_type=_TYPES[429], error=f"rejected execution: {problem.message}"
        )
        rejected.append(Rejection(position, "rate_limited"))
    rejected.sort(key=lambda r: r.index)
    return Parsed(rows=parsed.rows[:admitted], rejected=rejected, table=parsed.table, answer=items)


def _error(problem: Problem) -> web.Response:
    kind = _TYPES.get(problem.status, "illegal_argument_exception")
    cause = {"type": kind, "reason": problem.message}
    response = json_response(
        problem.status,
        {"error": {"root_cause": [cause], **cause}, "status": problem.status},
        problem.retry_after,
    )
    if problem.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="security", ApiKey'
    return _with_product(response)


ES_BULK = Dialect(
    name="es_bulk",
    scope=SCOPE_LOGS,
    token=token,
    success=_success,
    error=_error,
    statuses={"request_too_large": 413},
    split=_split,
)


def probe(request: web.Request) -> web.Response:
    """The answer to a shipper's probe, once its key was admitted (the paths docs/shippers.md lists)."""
    path = request.path.rstrip("/")
    if path == "":
        major = int(VERSION.split(".")[0])
        body: dict[str, Any] = {
            "name": "millrace",
            "cluster_name": "millrace",
            "cluster_uuid": "millrace",
            "version": {
                "number": VERSION,
                "build_flavor": "default",
                "build_type": "tar",
                "lucene_version": "9.12.0",
                "minimum_wire_compatibility_version": f"{major - 1}.18.0",
                "minimum_index_compatibility_version": f"{major - 1}.0.0",
            },
            "tagline": "You Know, for Search",
        }
        if request.method == "HEAD":
            return _with_product(web.Response(status=200, content_type="application/json"))
    elif path == "/_license":
        body = {"license": {"status": "active", "uid": "millrace", "type": "basic", "issued_to": "millrace"}}
    else:  # /_cluster/health
        body = {"cluster_name": "millrace", "status": "green", "timed_out": False, "number_of_nodes": 1}
    return _with_product(json_response(200, body))
