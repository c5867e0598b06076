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

A `filter_path` query parameter cuts a successful answer down as Elasticsearch's response
filtering does (`answering`, `probe`): Logstash asks every `_bulk` for
`errors,items.*.error,items.*.status`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache, partial
from typing import Any, Final

import orjson
import structlog
from aiohttp import web

from formats import Parsed, Rejection
from formats.es_bulk import BulkItem
from gateway.dialects.base import Dialect, Problem, basic_key, decoded_base64, json_response
from millrace.keys import SCOPE_LOGS

log = structlog.get_logger()

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


def _success(
    parsed: Parsed, received_at_ns: int, include: _Paths | None = None, exclude: _Paths | None = None
) -> web.Response:
    """`{"took", "errors", "items"}`, one item per action (`_rendered_items`), cut down to the
    request's `filter_path` when `answering` gave one (`_filtered_bulk`)."""
    took = max(0, (time.time_ns() - received_at_ns) // 1_000_000)
    items: list[BulkItem] = parsed.answer or []
    errors = bool(parsed.rejected)
    body = None
    if include is not None or exclude is not None:
        try:
            body = _filtered_bulk(took, errors, items, received_at_ns, include, exclude)
        # The documents are stored: the whole answer beats a 500 the shipper would resend on.
        except Exception:
            log.exception("filter_path_failed")
    if body is None:
        head = b'{"took":%d,"errors":%s,"items":[' % (took, b"true" if errors else b"false")
        body = b"".join((head, b",".join(_rendered_items(items, received_at_ns, None)), b"]}"))
    return _with_product(web.Response(status=200, body=body, content_type="application/json"))


# An item's JSON-ready dict -> what a filter keeps of it (`_GONE`: nothing).
_ItemFilter = Callable[[dict[str, Any]], Any]
_GONE: Final = object()
# A position no answer reaches: a filtered item whose JSON shows it depends on its position
# (a chance match elsewhere only sends those items down the slower per-item path).
_PROBE: Final = 987_654_321_987


def _rendered_items(items: list[BulkItem], received_at_ns: int, keep: _ItemFilter | None) -> list[bytes]:
    """Each item's JSON (`_item`'s), less what `keep` leaves out; an item it leaves nothing of is
    left out. A stored item without an id of its own is written from what its (op, index, status)
    renders once, without a dict per item: cut around the id and `_seq_no` (they vary by
    position), or, filtered, the same bytes for each when what is kept does not vary. The
    items of one action line are one object, so a run of them looks its template up once."""
    templates: dict[tuple[str, str, int], tuple[bytes, bytes, bytes] | bytes | None] = {}
    parts: list[bytes] = []
    previous: BulkItem | None = None
    template: tuple[bytes, bytes, bytes] | bytes | None = None
    for position, item in enumerate(items):
        if item.error is None and item.id is None:
            if item is not previous:
                previous, key = item, (item.op, item.index, item.status)
                if key not in templates:
                    templates[key] = _template(item, received_at_ns, keep)
                template = templates[key]
                if isinstance(template, tuple):  # the receive time is the same in every id
                    template = (template[0] + b"%x-" % received_at_ns, template[1], template[2])
            if isinstance(template, tuple):
                head, middle, end = template
                parts.append(b"%s%d%s%d%s" % (head, position, middle, position, end))
                continue
            if isinstance(template, bytes):
                if template:
                    parts.append(template)
                continue
        document = _item(item, position, received_at_ns)
        if keep is None:
            parts.append(orjson.dumps(document))
        elif (kept := keep(document)) is not _GONE:
            parts.append(orjson.dumps(kept))
    return parts


def _template(
    item: BulkItem, received_at_ns: int, keep: _ItemFilter | None
) -> tuple[bytes, bytes, bytes] | bytes | None:
    """How `_rendered_items` writes a stored item without an id: cuts around the id and `_seq_no`
    (unfiltered), the bytes every such item is filtered to (b"" when nothing is kept), or None when
    what is kept varies by position."""
    if keep is None:
        return _stored_template(item, _PROBE, received_at_ns)
    kept = keep(_item(item, _PROBE, received_at_ns))
    if kept is _GONE:
        return b""
    rendered = orjson.dumps(kept)
    return None if b"%d" % _PROBE in rendered else rendered


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


def probe(request: web.Request, filters: _Filters) -> web.Response:
    """The answer to a shipper's probe, once its key was admitted (the paths docs/shippers.md
    lists), cut down to its `filter_path` (`request_filters`)."""
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
    kept = _filtered(body, *filters)
    return _with_product(json_response(200, {} if kept is _GONE else kept))


# -- filter_path ---------------------------------------------------------------------------------
# Elasticsearch's response filtering: comma-separated dotted paths, `*` for any part of one
# name, `**` for one or more levels, arrays passed through to their elements, `-path` to
# leave a path out (applied before the others). An inclusive filter keeps only what a path
# reaches, and an object or array left with nothing is left out whole; when nothing is
# reached the answer is `{}`. An exclusion leaves out an object or array it empties. Error
# answers are never filtered (Elasticsearch does not).

MAX_FILTER_CHARS: Final = 2048
MAX_FILTER_PATHS: Final = 64
MAX_FILTER_DEPTH: Final = 16  # names in one path: deeper than any answer here
_MAX_STEPS: Final = 256  # field names remembered per filter state; our answers use a few dozen

_Path = tuple[str, ...]  # names: plain, with `*` in them, or "**"


class FilterPathError(ValueError):
    """A `filter_path` past the bounds above: answered 400 before the body is read."""


def _glob(pattern: str, name: str) -> bool:
    """`name` matches `pattern`, where `*` stands for any run of characters: the leftmost match of
    each literal piece in turn, which is linear in the name (no backtracking)."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return pattern == name
    first, last = pieces[0], pieces[-1]
    if len(name) < len(first) + len(last) or not name.startswith(first) or not name.endswith(last):
        return False
    at, stop = len(first), len(name) - len(last)
    for piece in pieces[1:-1]:
        at = name.find(piece, at, stop)
        if at < 0:
            return False
        at += len(piece)
    return True


def _step(paths: tuple[_Path, ...], name: str) -> tuple[bool, tuple[_Path, ...]]:
    """Whether a path ends at the field `name` (the field is reached whole), and the paths that go
    on below it, each once."""
    whole = False
    below: dict[_Path, None] = {}
    for path in paths:
        head = path[0]
        if head == "**":  # this level and maybe more: below, `**` goes on or the rest starts
            if len(path) == 1:
                return True, ()
            below[path] = None
            below[path[1:]] = None
        elif head == "*" or _glob(head, name):
            if len(path) == 1:
                whole = True
            else:
                below[path[1:]] = None
    return whole, tuple(below)


class _Paths:
    """Where a filter stands at one level of a document: the paths still to follow. Each field
    name's step is worked out once and remembered (an answer repeats the same few names)."""

    __slots__ = ("_steps", "paths")

    def __init__(self, paths: tuple[_Path, ...]) -> None:
        self.paths = paths
        self._steps: dict[str, tuple[bool, _Paths | None]] = {}

    def step(self, name: str) -> tuple[bool, _Paths | None]:
        """`_step` at the field `name`: (reached whole, where the paths stand below; None: none)."""
        known = self._steps.get(name)
        if known is None:
            whole, below = _step(self.paths, name)
            known = (whole, _Paths(below) if below and not whole else None)
            if len(self._steps) < _MAX_STEPS:
                self._steps[name] = known
        return known


_Filters = tuple[_Paths | None, _Paths | None]  # (inclusive, exclusive) paths


@lru_cache(maxsize=64)  # a shipper sends the same filter with every request
def _filters(expression: str) -> _Filters:
    """(inclusive, exclusive) paths of a `filter_path` value, None where there are none. Raises
    `FilterPathError` past the bounds."""
    if len(expression) > MAX_FILTER_CHARS:
        raise FilterPathError(f"filter_path is longer than {MAX_FILTER_CHARS} characters")
    include: dict[_Path, None] = {}
    exclude: dict[_Path, None] = {}
    for text in expression.split(","):
        text = text.strip()
        exclusive = text.startswith("-")
        names = text[1:].strip() if exclusive else text
        if not names:
            continue
        # `**.**` is `**`, and a run of `*` one `*`: fewer paths to follow, the same matches.
        path = tuple(re.sub(r"\*{2,}", "*", n) if n != "**" else n for n in names.split("."))
        path = tuple(n for i, n in enumerate(path) if n != "**" or i == 0 or path[i - 1] != "**")
        if len(path) > MAX_FILTER_DEPTH:
            raise FilterPathError(f"a filter_path path has more than {MAX_FILTER_DEPTH} names")
        (exclude if exclusive else include)[path] = None
    if len(include) + len(exclude) > MAX_FILTER_PATHS:
        raise FilterPathError(f"filter_path has more than {MAX_FILTER_PATHS} paths")
    return (_Paths(tuple(include)) if include else None), (_Paths(tuple(exclude)) if exclude else None)


# `type(x) is dict` below, not isinstance: the answers are plain JSON values from orjson or ours.


def _kept(value: Any, paths: _Paths) -> tuple[bool, Any]:
    """(anything reached, what the inclusive `paths` keep of `value`)."""
    if type(value) is dict:
        out: dict[str, Any] = {}
        for name, inner in value.items():
            whole, below = paths.step(name)
            if whole:
                out[name] = inner
            elif below is not None:
                found, kept = _kept(inner, below)
                if found:
                    out[name] = kept
        return bool(out), out
    if type(value) is list:
        items = []
        for inner in value:
            found, kept = _kept(inner, paths)
            if found:
                items.append(kept)
        return bool(items), items
    return False, value  # a scalar where a path wanted more levels


def _without(value: Any, paths: _Paths) -> Any:
    """`value` less what the exclusive `paths` reach; an object or array they empty goes too
    (`_GONE`)."""
    if type(value) is dict:
        out: dict[str, Any] = {}
        for name, inner in value.items():
            whole, below = paths.step(name)
            if whole:
                continue
            kept = inner if below is None else _without(inner, below)
            if kept is not _GONE:
                out[name] = kept
        return out if out or not value else _GONE
    if type(value) is list:
        items = [kept for inner in value if (kept := _without(inner, paths)) is not _GONE]
        return items if items or not value else _GONE
    return value


def _filtered(document: Any, include: _Paths | None, exclude: _Paths | None) -> Any:
    """`document` less what `exclude` reaches, then only what `include` reaches (`_GONE`: nothing)."""
    if exclude is not None:
        document = _without(document, exclude)
        if document is _GONE:
            return _GONE
    if include is not None:
        found, document = _kept(document, include)
        if not found:
            return _GONE
    return document


def filter_answer(document: Any, expression: str) -> Any:
    """`document` as Elasticsearch answers it with `filter_path=expression`."""
    kept = _filtered(document, *_filters(expression))
    return {} if kept is _GONE else kept


def request_filters(request: web.Request) -> _Filters | Problem:
    """The request's `filter_path` (both None without one), or the refusal of one past the bounds,
    before anything is stored (a failure once the documents are stored would make the shipper
    send them again)."""
    try:
        return _filters(request.query.get("filter_path", ""))
    except FilterPathError as exc:
        return Problem(400, "invalid_filter_path", str(exc))


def _filtered_bulk(
    took: int,
    errors: bool,
    items: list[BulkItem],
    received_at_ns: int,
    include: _Paths | None,
    exclude: _Paths | None,
) -> bytes:
    """`filter_answer` of the `_bulk` answer, written from the items, not from its JSON: the items'
    filter is where the paths stand at `items` (an array passes them on to its elements)."""
    kept = _filtered({"took": took, "errors": errors}, include, exclude)
    head = {} if kept is _GONE else kept
    dropped, except_below = exclude.step("items") if exclude is not None else (False, None)
    whole, below = include.step("items") if include is not None else (True, None)
    if dropped or (not whole and below is None):
        return orjson.dumps(head)
    keep: _ItemFilter | None = None
    if except_below is not None or not whole:
        keep = partial(_filtered, include=None if whole else below, exclude=except_below)
    parts = _rendered_items(items, received_at_ns, keep)
    if not parts and (not whole or (items and except_below is not None)):
        return orjson.dumps(head)  # no item kept anything, or an exclusion emptied them all: no `items`
    rendered = orjson.dumps(head)
    return b"".join((rendered[:-1], b"," if head else b"", b'"items":[', b",".join(parts), b"]}"))


def answering(filters: _Filters) -> Dialect:
    """`ES_BULK`, its successful answers cut down to `filters` (`request_filters`) when there are any."""
    include, exclude = filters
    if include is None and exclude is None:
        return ES_BULK
    return replace(ES_BULK, success=partial(_success, include=include, exclude=exclude))
