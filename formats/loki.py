"""Loki push (`POST /loki/api/v1/push`): JSON streams, or a snappy-compressed `PushRequest` protobuf.

Which decoding, as Loki itself chooses: `application/json` is JSON; `application/x-protobuf`
is protobuf; no or another Content-Type is JSON when the body opens with `{`, else protobuf.

    JSON  {"streams": [{"stream": {<labels>}, "values": [[<ts ns>, <line>], [<ts>, <line>, {<metadata>}]]}]}
          the legacy shape too (python-logging-loki's default): {"streams": [{"labels": "{a=\"b\"}",
          "entries": [{"ts": <RFC 3339>, "line": ...}]}]}; unknown keys of a stream are ignored
    proto logproto.PushRequest: streams { labels: '{a="b"}', entries { timestamp, line, structuredMetadata } }

Mapping (input -> column):

    line                                              -> message (verbatim)
    timestamp (ns since the epoch)                    -> timestamp; out of 1970..2100 = the entry is rejected
    every label and structured metadata pair          -> attributes[<name>] (metadata wins a clash)
    service_name / service / app / application / job  -> service (the first present)
    level / detected_level / severity / lvl           -> level (normalized), severity_text (as sent)
    host / hostname, env / environment                -> host, environment
    trace_id / span_id (either side)                  -> trace_id / span_id
    X-Scope-OrgID header                              -> attributes["scope_org_id"] (never the tenant)

A stream whose labels cannot be read, or a body that is no push request at all, refuses the
whole request (Loki answers 400 too); an entry with a bad time or line is a `Rejection`, the
others are kept.
"""

from __future__ import annotations

import re
from typing import Any, Final

import cramjam
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.message import DecodeError, Message

from formats.base import ParseContext, Parsed, ParseError, Rejection
from formats.common import json_body, level_fields, media_type, parse_timestamp, put_attribute

ORG_ID_HEADER: Final = "X-Scope-OrgID"
# Decompressed snappy may not exceed this (the default MILLRACE_MAX_DECOMPRESSED_BYTES): the
# gateway's caps cannot see inside snappy, whose header states the decompressed length,
# checked before anything is allocated.
MAX_DECOMPRESSED: Final = 20 * 1024 * 1024
MAX_LABELS_LENGTH: Final = 64 * 1024

_MAX_NS: Final = 4_102_444_800 * 10**9  # 2100, as the other parsers
_SERVICE_LABELS: Final[tuple[str, ...]] = ("service_name", "service", "app", "application", "job")
_LEVEL_LABELS: Final[tuple[str, ...]] = ("level", "detected_level", "severity", "lvl")
_COLUMN_LABELS: Final = {
    "host": "host",
    "hostname": "host",
    "env": "environment",
    "environment": "environment",
    "trace_id": "trace_id",
    "span_id": "span_id",
}
_LABEL: Final = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.:]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})', re.S)
_ESCAPES: Final = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
_ESCAPE: Final = re.compile(r"\\(.)", re.S)


def _push_request_class() -> type[Message]:
    """Loki's `logproto.PushRequest`, declared through the protobuf runtime (no generated code)."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="millrace_loki_push.proto", package="millrace.loki")
    file.syntax = "proto3"

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            added = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name

    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message("Timestamp", ("seconds", 1, f.TYPE_INT64, one, ""), ("nanos", 2, f.TYPE_INT32, one, ""))
    message("LabelPair", ("name", 1, f.TYPE_STRING, one, ""), ("value", 2, f.TYPE_STRING, one, ""))
    message(
        "Entry",
        ("timestamp", 1, f.TYPE_MESSAGE, one, ".millrace.loki.Timestamp"),
        ("line", 2, f.TYPE_STRING, one, ""),
        ("structuredMetadata", 3, f.TYPE_MESSAGE, many, ".millrace.loki.LabelPair"),
    )
    message(
        "Stream",
        ("labels", 1, f.TYPE_STRING, one, ""),
        ("entries", 2, f.TYPE_MESSAGE, many, ".millrace.loki.Entry"),
        ("hash", 3, f.TYPE_UINT64, one, ""),
    )
    message("PushRequest", ("streams", 1, f.TYPE_MESSAGE, many, ".millrace.loki.Stream"))
    push_request: type[Message] = message_factory.GetMessages([file])["millrace.loki.PushRequest"]
    return push_request


PushRequest: Final = _push_request_class()


def parse(body: bytes, ctx: ParseContext) -> Parsed:
    kind = media_type(ctx.content_type)
    org_id = ctx.headers.get(ORG_ID_HEADER, "")
    if kind == "application/json" or (kind != "application/x-protobuf" and body.lstrip()[:1] == b"{"):
        return _from_json(json_body(body, ctx), org_id)
    return _from_protobuf(body, org_id)


# -- JSON ----------------------------------------------------------------------------------------


def _from_json(doc: Any, org_id: str) -> Parsed:
    if not isinstance(doc, dict) or not isinstance(doc.get("streams"), list):
        raise ParseError("the body must be a JSON object with a 'streams' array", code="invalid_shape")
    out = _Out(org_id)
    for s, stream in enumerate(doc["streams"]):
        if not isinstance(stream, dict):
            raise ParseError(f"streams[{s}] must be an object", code="invalid_shape")
        if "values" in stream or "stream" in stream:
            labels = _json_labels(stream.get("stream"), s)
            values = stream.get("values", [])
            if not isinstance(values, list):
                raise ParseError(f"streams[{s}].values must be an array", code="invalid_shape")
            for v, value in enumerate(values):
                out.add(f"streams[{s}].values[{v}]", labels, *_json_value(value))
        else:  # the legacy shape: a label string and entries with RFC 3339 times
            text = stream.get("labels")
            if not isinstance(text, str):
                raise ParseError(f"streams[{s}] needs 'stream' labels and 'values'", code="invalid_shape")
            labels = parse_labels(text, s)
            entries = stream.get("entries", [])
            if not isinstance(entries, list):
                raise ParseError(f"streams[{s}].entries must be an array", code="invalid_shape")
            for e, entry in enumerate(entries):
                where = f"streams[{s}].entries[{e}]"
                if not isinstance(entry, dict):
                    out.reject(where, "must be an object")
                    continue
                ts = parse_timestamp(entry.get("ts"))
                out.add(where, labels, ts if ts else None, entry.get("line"), None)
    return out.parsed()


def _json_labels(value: Any, s: int) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ParseError(f"streams[{s}].stream must be an object of string labels", code="invalid_labels")
    return value


def _json_value(value: Any) -> tuple[int | None, Any, Any]:
    """(time in ns or None, line, structured metadata) of one `[ts, line(, metadata)]`."""
    if not isinstance(value, list) or len(value) not in (2, 3):
        return None, None, "must be [timestamp, line] or [timestamp, line, {metadata}]"
    ts = value[0]
    ns: int | None = None
    if isinstance(ts, str) and ts.isascii() and ts.isdigit() and len(ts) <= 20:
        ns = int(ts)
    elif isinstance(ts, int) and not isinstance(ts, bool):
        ns = ts
    return ns, value[1], value[2] if len(value) == 3 else None


# -- protobuf ------------------------------------------------------------------------------------


def _from_protobuf(body: bytes, org_id: str) -> Parsed:
    if not body:
        raise ParseError("the body is empty; send a snappy-compressed PushRequest", code="empty_body")
    try:
        size = cramjam.snappy.decompress_raw_len(body)
    except Exception:  # cramjam raises its own DecompressionError, or ValueError for a bad header
        raise ParseError(
            "the body is not snappy-compressed protobuf or JSON", code="invalid_snappy"
        ) from None
    if size > MAX_DECOMPRESSED:
        raise ParseError(
            f"the body decompresses to {size} bytes; the limit is {MAX_DECOMPRESSED}",
            code="request_too_large",
        )
    try:
        raw = bytes(cramjam.snappy.decompress_raw(body))
    except Exception:
        raise ParseError("the body is not valid snappy (block format)", code="invalid_snappy") from None
    request = PushRequest()
    try:
        request.ParseFromString(raw)
    except (DecodeError, RecursionError) as exc:
        raise ParseError(f"the body is not a Loki PushRequest: {exc}", code="invalid_protobuf") from None
    out = _Out(org_id)
    for s, stream in enumerate(request.streams):
        labels = parse_labels(stream.labels, s)
        for e, entry in enumerate(stream.entries):
            ts = entry.timestamp.seconds * 10**9 + entry.timestamp.nanos
            metadata = {pair.name: pair.value for pair in entry.structuredMetadata}
            out.add(f"streams[{s}].entries[{e}]", labels, ts, entry.line, metadata or None)
    return out.parsed()


def parse_labels(text: str, s: int) -> dict[str, str]:
    """A Prometheus label set, `{job="api", level="info"}`, as a dict; ParseError when it is not one."""
    text = text.strip()
    if len(text) > MAX_LABELS_LENGTH:
        raise ParseError(
            f"streams[{s}] labels are longer than {MAX_LABELS_LENGTH} bytes", code="invalid_labels"
        )
    if not text.startswith("{"):
        raise ParseError(
            f'streams[{s}] labels {text[:80]!r} must look like {{name="value"}}', code="invalid_labels"
        )
    labels: dict[str, str] = {}
    pos, end = 1, len(text)
    if text[1:].strip() == "}":
        return labels
    while pos < end:
        m = _LABEL.match(text, pos)
        if m is None:
            raise ParseError(
                f"streams[{s}] labels {text[:80]!r} are not a label set at offset {pos}",
                code="invalid_labels",
            )
        labels[m.group(1)] = _ESCAPE.sub(lambda e: _ESCAPES.get(e.group(1), e.group(0)), m.group(2))
        pos = m.end()
        if m.group(3) == "}":
            if text[pos:].strip():
                raise ParseError(f"streams[{s}] labels have text after '}}'", code="invalid_labels")
            return labels
    raise ParseError(f"streams[{s}] labels {text[:80]!r} are not closed by '}}'", code="invalid_labels")


# -- rows ----------------------------------------------------------------------------------------


class _Out:
    """Rows and rejections of one request; entries are numbered across streams, in order."""

    def __init__(self, org_id: str) -> None:
        self.rows: list[dict[str, Any]] = []
        self.rejected: list[Rejection] = []
        self.index = 0
        self.org_id = org_id

    def reject(self, where: str, reason: str) -> None:
        self.rejected.append(Rejection(self.index, f"{where} {reason}"))
        self.index += 1

    def add(self, where: str, labels: dict[str, str], ns: int | None, line: Any, metadata: Any) -> None:
        if isinstance(metadata, str):  # _json_value's word on a malformed value
            self.reject(where, metadata)
            return
        if ns is None or not 0 < ns <= _MAX_NS:
            self.reject(where, "has no timestamp in nanoseconds since the epoch (1970..2100)")
            return
        if not isinstance(line, str):
            self.reject(where, "line must be a string")
            return
        if metadata is not None and (
            not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
        ):
            self.reject(where, "structured metadata must be an object of strings")
            return
        try:
            self.rows.append(self._row(labels, ns, line, metadata))
        except ParseError as exc:  # too many attributes in this one entry
            self.reject(where, exc.message)
            return
        self.index += 1

    def _row(
        self, labels: dict[str, str], ns: int, line: str, metadata: dict[str, str] | None
    ) -> dict[str, Any]:
        pairs = {**labels, **metadata} if metadata else labels
        attributes: dict[str, str] = {}
        for name, value in pairs.items():
            put_attribute(attributes, name, value)
        if self.org_id:
            attributes["scope_org_id"] = self.org_id
        row: dict[str, Any] = {"timestamp": ns, "message": line}
        level_text = next((pairs[k] for k in _LEVEL_LABELS if pairs.get(k)), None)
        row["level"], row["severity_number"], row["severity_text"] = level_fields(level_text)
        service = next((pairs[k] for k in _SERVICE_LABELS if pairs.get(k)), None)
        if service is not None:
            row["service"] = service
        for name, column in _COLUMN_LABELS.items():
            if column not in row and pairs.get(name):
                row[column] = pairs[name]
        row["attributes"] = attributes
        return row

    def parsed(self) -> Parsed:
        return Parsed(rows=self.rows, rejected=self.rejected)
