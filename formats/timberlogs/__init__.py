"""Timberlogs (`POST /v1/logs`): JSON, JSONL, syslog, text, CSV or OBL bodies, all-or-nothing.

The format is resolved as the dialect documents, by priority:

1. `?format=` (json, jsonl, syslog, text, csv, obl; any other value is a 400);
2. `Content-Type`: application/json, application/x-ndjson (and application/jsonl,
   application/x-jsonlines), application/x-syslog, text/plain, text/csv, application/x-obl
   (and application/obl);
3. sniffing, for any other or no Content-Type (curl's form default included): a leading
   `/*` is OBL; `{`/`[` is JSON (OBL when its `format` says `open-board-log-`, JSONL when the
   whole body is not one JSON document but has several lines); `<digits>` is syslog; a first
   line of comma- or tab-separated field names including `message` is CSV; else text.

Each format module turns the body into log entries of the JSON shape; `schema` then applies
the query defaults (`source`, `environment`, `level`, `dataset`), checks the Log Entry Schema
on every entry and the 1..100 batch limit, and maps them to rows (mapping table there).
Every refusal is a 400 `ParseError` with code `PARSE_ERROR`, the only code the dialect
documents for a 400; schema violations list their issues in `details`.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from formats.base import ParseContext, Parsed
from formats.common import media_type
from formats.timberlogs import csv_, json_, jsonl, obl, syslog, text
from formats.timberlogs.schema import FIELDS, build_rows, fail, loads

FORMATS: Final = ("json", "jsonl", "syslog", "text", "csv", "obl")
MEDIA_TYPES: Final = {
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/x-syslog": "syslog",
    "text/plain": "text",
    "text/csv": "csv",
    "application/x-obl": "obl",
    "application/obl": "obl",
}
_BOM: Final = b"\xef\xbb\xbf"
_UNSET: Any = object()
_FIELD_NAMES: Final = frozenset(name.lower() for name in FIELDS)


def parse(body: bytes, ctx: ParseContext) -> Parsed:
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    if not body.strip():
        fail("Request body is empty")
    fmt, doc = resolve_format(body, ctx)
    if fmt == "syslog":
        entries, severities = syslog.entries(body, ctx)
        rows = build_rows(entries, ctx, severity_texts=severities)
        for row, entry in zip(rows, entries, strict=True):
            hostname = entry["data"].get("hostname")
            if hostname is not None:
                row["host"] = hostname
        return Parsed(rows=rows)
    if fmt == "text":
        entries, written = text.entries(body, ctx)
        return Parsed(rows=build_rows(entries, ctx, implicit_level="info", severity_texts=written))
    if fmt == "json" and doc is _UNSET:
        # The router's decoding of this very body, when it had one (POST /v1/logs).
        doc = ctx.document if ctx.document is not None else loads(body)
        # An OBL document says what it is more surely than a Content-Type header does.
        fmt = "obl" if obl.is_obl(doc) else fmt
    if fmt == "obl":
        entries = obl.from_doc(doc, ctx) if doc is not _UNSET else obl.entries(body, ctx)
        return Parsed(rows=build_rows(entries, ctx, implicit_level="info"))
    if fmt == "json":
        return Parsed(rows=build_rows(json_.from_doc(doc), ctx))
    entries = jsonl.entries(body, ctx) if fmt == "jsonl" else csv_.entries(body, ctx)
    return Parsed(rows=build_rows(entries, ctx))


def resolve_format(body: bytes, ctx: ParseContext) -> tuple[str, Any]:
    """The format name, and the decoded JSON document when sniffing already decoded it."""
    requested = ctx.query.get("format")
    if requested:
        fmt = requested.strip().lower()
        if fmt not in FORMATS:
            fail(f"Unsupported format '{requested}': use one of {', '.join(FORMATS)}")
        return fmt, _UNSET
    by_type = MEDIA_TYPES.get(media_type(ctx.content_type))
    if by_type is not None:
        return by_type, _UNSET
    return sniff(body, ctx.document)


def sniff(body: bytes, document: Any = None) -> tuple[str, Any]:
    """The format from the body's look; `document`: the body as JSON, when already decoded."""
    head = body.lstrip()
    first = head[:1]
    if head.startswith(b"/*"):
        return "obl", _UNSET
    if first in (b"{", b"["):
        try:
            doc = orjson.loads(body) if document is None else document
        except orjson.JSONDecodeError:
            # Several JSON objects, one per line, are not one JSON document.
            return ("jsonl" if first == b"{" and b"\n" in head.rstrip() else "json"), _UNSET
        return ("obl" if obl.is_obl(doc) else "json"), doc
    if first == b"<" and head[1:2].isdigit():
        return "syslog", _UNSET
    if _looks_like_csv_header(head.partition(b"\n")[0]):
        return "csv", _UNSET
    return "text", _UNSET


def _looks_like_csv_header(line: bytes) -> bool:
    delimiter = b"\t" if line.count(b"\t") > line.count(b",") else b","
    if delimiter not in line:
        return False
    names = [name.strip().strip(b'"').decode("utf-8", "replace").lower() for name in line.split(delimiter)]
    return "message" in names and all(name in _FIELD_NAMES for name in names)
