"""Elasticsearch `_bulk` (`POST`/`PUT` `/_bulk`, `/<index>/_bulk`): NDJSON action and document lines.

Each `index` or `create` action is followed by its document; `update` (followed by a line too)
and `delete` (alone) are answered per item as not supported, never stored. The answer lists
every action in order, so `Parsed.answer` carries one `BulkItem` per action; a refused item is
also a `Rejection` (indexed by its action number).

Mapping of a document (nested objects flattened to dotted keys first, ECS style):

    @timestamp (RFC 3339, or epoch ms/s)        -> timestamp; absent = receive time, unreadable = item refused
    message / log / msg (the first string)      -> message
    log.level / level / severity                -> level (normalized), severity_text (as sent)
    service.name, host.name / host.hostname     -> service, host
    service.environment / deployment.environment / environment -> environment
    trace.id / span.id / transaction.id         -> trace_id / span_id / request_id
    the action's _index (else the path's index) -> dataset
    the action's _id                            -> attributes["_id"]
    everything else                             -> attributes (dotted keys), so nothing is dropped

A line that is not a JSON object where an action must be, an unknown action, a missing
document, or an action without any index refuse the whole request, as Elasticsearch does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from formats.base import ParseContext, Parsed, ParseError, Rejection
from formats.common import MAX_DEPTH, flatten, level_fields, time_or_received, to_text

SUPPORTED: Final = frozenset({"index", "create"})
UNSUPPORTED: Final = frozenset({"update", "delete"})
_MESSAGE_KEYS: Final[tuple[str, ...]] = ("message", "log", "msg")
_LEVEL_KEYS: Final[tuple[str, ...]] = ("log.level", "level", "severity")
_COLUMN_KEYS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("service", ("service.name",)),
    ("host", ("host.name", "host.hostname")),
    ("environment", ("service.environment", "deployment.environment", "environment")),
    ("trace_id", ("trace.id",)),
    ("span_id", ("span.id",)),
    ("request_id", ("transaction.id",)),
)


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One action as the answer names it; `error` is None when its document was taken."""

    op: str
    index: str
    id: str | None
    status: int
    error_type: str = ""
    error: str | None = None


def index_of_path(path: str) -> str:
    """`/logs-app/_bulk` -> `logs-app`; `/_bulk` -> ''."""
    head = path.strip("/").split("/")
    return head[0] if len(head) == 2 and head[1] == "_bulk" else ""


def parse(body: bytes, ctx: ParseContext) -> Parsed:
    default_index = index_of_path(ctx.path)
    # `startswith` first: it is compiled to a direct call, `strip` is a method looked up each time.
    lines = [line for line in body.split(b"\n") if line.startswith(b"{") or line.strip()]
    if not lines:
        raise ParseError("request body is required", code="empty_body")
    rows: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    items: list[BulkItem] = []
    # Shippers repeat one action line: each distinct line is read (and checked) once, at its
    # first occurrence, which is where a bad one refuses the request.
    actions: dict[bytes, _Action] = {}
    count = len(lines)
    n = 0
    while n < count:
        line = bytes(lines[n])  # the line itself when the body is bytes; a hashable copy of a buffer's
        action = actions.get(line)
        if action is None:
            action = actions[line] = _action(line, n, default_index)
        op, index, doc_id, created = action
        if op == "delete":
            n += 1
            _refuse(
                items,
                rejected,
                BulkItem(op, index, doc_id, 400, "illegal_argument_exception", "delete is not supported"),
            )
            continue
        if n + 1 >= count:
            raise ParseError(
                f"the bulk request's last action [{op}] has no document line", code="invalid_action"
            )
        source, n = lines[n + 1], n + 2
        if op == "update":
            _refuse(
                items,
                rejected,
                BulkItem(op, index, doc_id, 400, "illegal_argument_exception", "update is not supported"),
            )
            continue
        row = _row(source, index, doc_id, ctx)
        if isinstance(row, str):
            _refuse(items, rejected, BulkItem(op, index, doc_id, 400, "document_parsing_exception", row))
            continue
        rows.append(row)
        items.append(created)
    return Parsed(rows=rows, rejected=rejected, answer=items)


def _refuse(items: list[BulkItem], rejected: list[Rejection], item: BulkItem) -> None:
    rejected.append(Rejection(len(items), item.error or item.error_type))
    items.append(item)


# An action line as read: its op, index, document id, and the item answered when its document
# is stored (one immutable instance for every document after that line).
_Action = tuple[str, str, str | None, BulkItem]


def _action(line: bytes, n: int, default_index: str) -> _Action:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"Malformed action/metadata line [{n + 1}]: {exc}", code="invalid_action") from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise ParseError(
            f"Malformed action/metadata line [{n + 1}], expected an object with one action",
            code="invalid_action",
        )
    ((op, meta),) = doc.items()
    if op not in SUPPORTED and op not in UNSUPPORTED:
        raise ParseError(
            f"Malformed action/metadata line [{n + 1}], expected one of [create, delete, index, update]"
            f" but found [{op}]",
            code="invalid_action",
        )
    if not isinstance(meta, dict):
        raise ParseError(
            f"Malformed action/metadata line [{n + 1}], the [{op}] value must be an object",
            code="invalid_action",
        )
    index = meta.get("_index", default_index)
    if not isinstance(index, str) or not index:
        raise ParseError(
            f"Validation Failed: 1: index is missing for action [{n + 1}];", code="invalid_action"
        )
    raw_id = meta.get("_id")
    doc_id = None if raw_id is None else to_text(raw_id)
    return op, index, doc_id, BulkItem(op, index, doc_id, 201)


def _row(source: bytes, index: str, doc_id: str | None, ctx: ParseContext) -> dict[str, Any] | str:
    """The document's row, or why it is refused."""
    try:
        loaded = orjson.loads(source)
    except orjson.JSONDecodeError as exc:
        return f"failed to parse the document: {exc}"
    if not isinstance(loaded, dict):
        return "the document must be a JSON object"
    doc: dict[str, Any] = loaded  # typed, so the compiled parser calls dict methods directly
    # `get` and `del`, not `pop`: the compiler has no direct call for dict.pop (a method lookup
    # per call, several per document).
    stamp = None
    if "@timestamp" in doc:
        stamp = doc["@timestamp"]
        del doc["@timestamp"]
    ns = time_or_received(stamp, ctx)
    if ns is None:
        return f"failed to parse field [@timestamp] of type [date]: {to_text(stamp)[:100]}"
    fields: dict[str, str] = {}
    message = ""
    for key in _MESSAGE_KEYS:
        text = doc.get(key)
        if isinstance(text, str):
            message = text
            del doc[key]
            break
    try:
        flatten(doc, "", fields)
    except ParseError as exc:  # too deep, too many fields: this document alone
        return exc.message
    except RecursionError:
        return f"the document is nested deeper than {MAX_DEPTH} levels"
    level_text = None
    for key in _LEVEL_KEYS:
        level_text = fields.get(key)  # attribute values are never None
        if level_text is not None:
            del fields[key]
            break
    level, number, severity_text = level_fields(level_text)
    row: dict[str, Any] = {
        "timestamp": ns,
        "message": message,
        "level": level,
        "severity_number": number,
        "severity_text": severity_text,
        "dataset": index,
    }
    for column, keys in _COLUMN_KEYS:
        for key in keys:
            value = fields.get(key)
            if value:
                row[column] = value
                del fields[key]
                break
    if doc_id is not None:
        fields["_id"] = doc_id
    row["attributes"] = fields
    return row
