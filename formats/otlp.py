"""OTLP/HTTP logs (`POST /v1/logs`): an `ExportLogsServiceRequest`, protobuf or OTLP JSON.

Protobuf when the Content-Type is `application/x-protobuf`, else OTLP JSON (lowerCamelCase
keys, 64-bit integers as strings or numbers, trace and span ids in hex). Decoding uses the
generated messages of `opentelemetry-proto`; the JSON walk mirrors the protobuf one.

Mapping (input -> column):

    resource attribute service.name                      -> service
    deployment.environment.name / deployment.environment -> environment
    host.name                                            -> host
    every other resource attribute                       -> attributes["resource.<key>"]
    scope name / version                                 -> attributes["scope.name"], ["scope.version"]
    timeUnixNano, else observedTimeUnixNano              -> timestamp (neither: the receive time;
                                                            outside 1970..2100: the record is refused)
    severityNumber (1-24, the OTel ranges), else severityText -> level; severityText as sent
    body: a string, or any other AnyValue as JSON        -> message
    attributes (kvlists flattened to dotted keys)        -> attributes
    traceId / spanId (hex)                               -> trace_id / span_id
    flags, eventName                                     -> attributes["flags"], ["event.name"]

A refused record is a `Rejection` (the answer's `partial_success.rejected_log_records`).
`Parsed.answer` is the request's encoding, `"protobuf"` or `"json"`, for the answer.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from typing import Any, Final

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from formats.base import ParseContext, Parsed, ParseError, Rejection
from formats.common import MAX_ATTRIBUTE_KEYS, MAX_DEPTH, json_body, level_fields, media_type, to_text

PROTOBUF: Final = "application/x-protobuf"
_MAX_NS: Final = 4_102_444_800 * 10**9
_SEVERITY_RANGES: Final = (
    (21, "fatal"),
    (17, "error"),
    (13, "warn"),
    (9, "info"),
    (5, "debug"),
    (1, "trace"),
)
_RESOURCE_COLUMNS: Final = {
    "service.name": "service",
    "deployment.environment.name": "environment",
    "deployment.environment": "environment",
    "host.name": "host",
}


class _Refused(Exception):
    """One record cannot be stored; the reason goes to partial_success."""


def parse(body: bytes, ctx: ParseContext) -> Parsed:
    if media_type(ctx.content_type) == PROTOBUF:
        try:
            request = ExportLogsServiceRequest.FromString(body)
        except (DecodeError, RecursionError) as exc:
            raise ParseError(
                f"the body is not an ExportLogsServiceRequest: {exc}", code="invalid_protobuf"
            ) from None
        return _collect(_proto_records(request), ctx, "protobuf")
    doc = json_body(body, ctx)
    if not isinstance(doc, dict):
        raise ParseError("the body must be an OTLP JSON object with 'resourceLogs'", code="invalid_shape")
    resource_logs = doc.get("resourceLogs", [])
    if not isinstance(resource_logs, list):
        raise ParseError("'resourceLogs' must be an array", code="invalid_shape")
    return _collect(_json_records(resource_logs), ctx, "json")


# Each walker yields, per log record, a function that builds its row (or raises _Refused):
# a malformed record is refused alone, wherever in the request it is.
_Builder = Callable[[int], dict[str, Any]]


def _collect(records: Iterator[_Builder], ctx: ParseContext, encoding: str) -> Parsed:
    rows: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    for i, build in enumerate(records):
        try:
            rows.append(build(ctx.received_at_ns))
        except _Refused as exc:
            rejected.append(Rejection(i, f"log record {i}: {exc}"))
        except ParseError as exc:
            rejected.append(Rejection(i, f"log record {i}: {exc.message}"))
    return Parsed(rows=rows, rejected=rejected, answer=encoding)


def _row(
    received_at_ns: int,
    base: dict[str, Any],
    time_ns: int,
    observed_ns: int,
    severity_number: int,
    severity_text: str,
    message: str,
    attributes: dict[str, str],
    trace_id: str,
    span_id: str,
) -> dict[str, Any]:
    ns = time_ns or observed_ns or received_at_ns
    if not 0 < ns <= _MAX_NS:
        raise _Refused(f"timeUnixNano {ns} is outside 1970..2100")
    row: dict[str, Any] = {"timestamp": ns, "message": message}
    if 1 <= severity_number <= 24:
        level = next(name for low, name in _SEVERITY_RANGES if severity_number >= low)
        row["level"], row["severity_number"], row["severity_text"] = level, severity_number, severity_text
    else:
        row["level"], row["severity_number"], row["severity_text"] = level_fields(severity_text or None)
    for column, value in base.items():
        if column != "attributes":
            row[column] = value
    if trace_id:
        row["trace_id"] = trace_id
    if span_id:
        row["span_id"] = span_id
    merged = {**base["attributes"], **attributes}
    if len(merged) > MAX_ATTRIBUTE_KEYS:
        raise _Refused(f"more than {MAX_ATTRIBUTE_KEYS} attributes")
    row["attributes"] = merged
    return row


def _resource_base(pairs: list[tuple[str, Any]], scope_name: str, scope_version: str) -> dict[str, Any]:
    base: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    for key, value in pairs:
        column = _RESOURCE_COLUMNS.get(key)
        if column is not None and column not in base and isinstance(value, str):
            base[column] = value
        else:
            _put(attributes, f"resource.{key}", value)
    if scope_name:
        attributes["scope.name"] = scope_name
    if scope_version:
        attributes["scope.version"] = scope_version
    base["attributes"] = attributes
    return base


def _once(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """The resource's columns, worked out for the first record of a scope and shared by the rest
    (a resource that cannot be read refuses each of its records: a failure is not kept)."""
    kept: list[dict[str, Any]] = []

    def base() -> dict[str, Any]:
        if not kept:
            kept.append(build())
        return kept[0]

    return base


def _put(out: dict[str, str], key: str, value: Any, depth: int = 0) -> None:
    """An attribute value (already plain Python) into `out`: kvlists (dicts) dotted, the rest as text."""
    if depth > MAX_DEPTH:
        raise _Refused(f"attribute '{key}' is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            _put(out, f"{key}.{k}", v, depth + 1)
    else:
        if len(out) >= MAX_ATTRIBUTE_KEYS:
            raise _Refused(f"more than {MAX_ATTRIBUTE_KEYS} attributes")
        out[key] = value if isinstance(value, str) else to_text(value)


def _message(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else to_text(value))


# -- protobuf ------------------------------------------------------------------------------------


def _proto_value(value: Any, depth: int = 0) -> Any:
    """An AnyValue message as a plain Python value (kvlist -> dict, array -> list, bytes -> base64)."""
    if depth > MAX_DEPTH:
        raise _Refused(f"a value is nested deeper than {MAX_DEPTH} levels")
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_proto_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _proto_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _proto_records(request: Any) -> Iterator[_Builder]:
    for resource_logs in request.resource_logs:
        pairs = [(kv.key, kv.value) for kv in resource_logs.resource.attributes]
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope

            def base_of(pairs: list[tuple[str, Any]] = pairs, scope: Any = scope) -> dict[str, Any]:
                plain = [(k, _proto_value(v)) for k, v in pairs]
                return _resource_base(plain, scope.name, scope.version)

            shared = _once(base_of)
            for record in scope_logs.log_records:
                yield _proto_builder(record, shared)


def _proto_builder(record: Any, base_of: Callable[[], dict[str, Any]]) -> _Builder:
    def build(received_at_ns: int) -> dict[str, Any]:
        attributes: dict[str, str] = {}
        for kv in record.attributes:
            _put(attributes, kv.key, _proto_value(kv.value))
        if record.flags:
            attributes["flags"] = str(record.flags)
        if record.event_name:
            attributes["event.name"] = record.event_name
        body = _proto_value(record.body) if record.HasField("body") else None
        return _row(
            received_at_ns,
            base_of(),
            record.time_unix_nano,
            record.observed_time_unix_nano,
            record.severity_number,
            record.severity_text,
            _message(body),
            attributes,
            record.trace_id.hex(),
            record.span_id.hex(),
        )

    return build


# -- OTLP JSON -----------------------------------------------------------------------------------


def _json_value(value: Any, depth: int = 0) -> Any:
    """An OTLP JSON AnyValue (`{"stringValue": ...}`) as a plain Python value."""
    if depth > MAX_DEPTH:
        raise _Refused(f"a value is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(value, dict) or not value:
        return None
    if "stringValue" in value:
        return (
            value["stringValue"] if isinstance(value["stringValue"], str) else to_text(value["stringValue"])
        )
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return _int(value["intValue"], "intValue")
    if "doubleValue" in value:
        number = value["doubleValue"]
        return number if isinstance(number, int | float) else to_text(number)
    if "arrayValue" in value:
        return [_json_value(v, depth + 1) for v in _kvs_or_values(value["arrayValue"])]
    if "kvlistValue" in value:
        return {
            str(kv.get("key", "")): _json_value(kv.get("value"), depth + 1)
            for kv in _kvs(value["kvlistValue"])
        }
    if "bytesValue" in value:
        return to_text(value["bytesValue"])
    return to_text(value)


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Refused("an array was expected")
    return value


def _kvs_or_values(holder: Any) -> list[Any]:
    return _list(holder.get("values") if isinstance(holder, dict) else None)


def _kvs(holder: Any) -> list[dict[str, Any]]:
    values = _list(holder.get("values") if isinstance(holder, dict) else None)
    return [kv for kv in values if isinstance(kv, dict)]


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise _Refused(f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) <= 40:
        return int(value)
    raise _Refused(f"{name} {to_text(value)[:40]} is not an integer")


def _hex_id(value: Any, name: str) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise _Refused(f"{name} must be a hex string")
    try:
        return bytes.fromhex(value).hex()
    except ValueError:
        try:  # some senders use proto3's JSON mapping (base64) for ids
            return base64.b64decode(value, validate=True).hex()
        except (binascii.Error, ValueError):
            raise _Refused(f"{name} {value[:40]!r} is neither hex nor base64") from None


def _json_records(resource_logs: list[Any]) -> Iterator[_Builder]:
    for rl in resource_logs:
        if not isinstance(rl, dict):
            yield _refuse("a resourceLogs entry must be an object")
            continue
        raw_resource = rl.get("resource")
        resource: dict[str, Any] = raw_resource if isinstance(raw_resource, dict) else {}
        pairs = [(str(kv.get("key", "")), kv.get("value")) for kv in _safe_kvs(resource.get("attributes"))]
        for sl in _safe_list(rl.get("scopeLogs")):
            if not isinstance(sl, dict):
                yield _refuse("a scopeLogs entry must be an object")
                continue
            raw_scope = sl.get("scope")
            scope: dict[str, Any] = raw_scope if isinstance(raw_scope, dict) else {}

            def base_of(
                pairs: list[tuple[str, Any]] = pairs, scope: dict[str, Any] = scope
            ) -> dict[str, Any]:
                plain = [(k, _json_value(v)) for k, v in pairs]
                return _resource_base(plain, _message(scope.get("name")), _message(scope.get("version")))

            shared = _once(base_of)
            for record in _safe_list(sl.get("logRecords")):
                yield _json_builder(record, shared)


def _safe_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _safe_kvs(value: Any) -> list[dict[str, Any]]:
    return [kv for kv in _safe_list(value) if isinstance(kv, dict)]


def _refuse(reason: str) -> _Builder:
    def build(received_at_ns: int) -> dict[str, Any]:
        raise _Refused(reason)

    return build


def _json_builder(record: Any, base_of: Callable[[], dict[str, Any]]) -> _Builder:
    def build(received_at_ns: int) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise _Refused("a log record must be an object")
        attributes: dict[str, str] = {}
        for kv in _safe_kvs(record.get("attributes")):
            _put(attributes, str(kv.get("key", "")), _json_value(kv.get("value")))
        flags = _int(record.get("flags", 0), "flags")
        if flags:
            attributes["flags"] = str(flags)
        if record.get("eventName"):
            attributes["event.name"] = _message(record["eventName"])
        severity_text = record.get("severityText") or ""
        return _row(
            received_at_ns,
            base_of(),
            _int(record.get("timeUnixNano", 0), "timeUnixNano"),
            _int(record.get("observedTimeUnixNano", 0), "observedTimeUnixNano"),
            _int(record.get("severityNumber", 0), "severityNumber"),
            severity_text if isinstance(severity_text, str) else to_text(severity_text),
            _message(_json_value(record.get("body"))),
            attributes,
            _hex_id(record.get("traceId"), "traceId"),
            _hex_id(record.get("spanId"), "spanId"),
        )

    return build
