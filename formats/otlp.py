"""OTLP/HTTP logs (`POST /v1/logs`): an `ExportLogsServiceRequest`, protobuf or OTLP JSON.

Protobuf when the Content-Type is `application/x-protobuf`, else OTLP JSON (lowerCamelCase
keys, 64-bit integers as strings or numbers, trace and span ids in hex). Decoding uses the
generated messages of `opentelemetry-proto`; the JSON walk mirrors the protobuf one.

OTLP JSON has two walkers, for cost. The usual body (what the OTel exporters send) is decoded
by msgspec into strict typed Structs, which is half the cost of orjson's dicts and cheaper to
walk and to free. Every other body (a null, an unknown or snake_case key, an int past int64,
an odd type, invalid JSON) fails that decode and is decoded again by orjson and walked as
dicts, which holds every refusal and error rule. Both walkers share the rules below them
(`_row`, `_put`, `_int`, ...) and read values alike, so a body gets the same rows, refusals
and errors whichever walks it (tests/formats/test_otlp_typed.py compares them). The router
hands over a document it decoded (`ctx.document`); only the dict walker takes it.

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
import math
from collections.abc import Callable, Iterable
from typing import Any, Final

import msgspec
from google.protobuf.message import DecodeError
from msgspec import UNSET, UnsetType
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from formats.base import ParseContext, Parsed, ParseError, Rejection
from formats.common import MAX_ATTRIBUTE_KEYS, MAX_DEPTH, json_body, level_fields, media_type, to_text
from formats.otlp_json import DECODER as _DECODER
from formats.otlp_json import Record as _Record
from formats.otlp_json import Scope as _Scope
from formats.otlp_json import Value as _Value

PROTOBUF: Final = "application/x-protobuf"
_MAX_NS: Final = 4_102_444_800 * 10**9
_SEVERITY_LEVELS: Final[tuple[str, ...]] = (
    "",
    *("trace",) * 4,
    *("debug",) * 4,
    *("info",) * 4,
    *("warn",) * 4,
    *("error",) * 4,
    *("fatal",) * 4,
)  # by severityNumber, 1..24
_RESOURCE_COLUMNS: Final = {
    "service.name": "service",
    "deployment.environment.name": "environment",
    "deployment.environment": "environment",
    "host.name": "host",
}


_TOO_DEEP: Final = f"a value is nested deeper than {MAX_DEPTH} levels"
_TOO_MANY: Final = f"more than {MAX_ATTRIBUTE_KEYS} attributes"


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
        found = _proto_rows(request, ctx.received_at_ns)
        return Parsed(rows=found.rows, rejected=found.rejected, answer="protobuf")
    if ctx.document is None and (typed := _typed_json_rows(body, ctx.received_at_ns)) is not None:
        return Parsed(rows=typed.rows, rejected=typed.rejected, answer="json")
    doc = json_body(body, ctx)
    if not isinstance(doc, dict):
        raise ParseError("the body must be an OTLP JSON object with 'resourceLogs'", code="invalid_shape")
    resource_logs = doc.get("resourceLogs", [])
    if not isinstance(resource_logs, list):
        raise ParseError("'resourceLogs' must be an array", code="invalid_shape")
    found = _json_rows(resource_logs, ctx.received_at_ns)
    return Parsed(rows=found.rows, rejected=found.rejected, answer="json")


# A malformed record is refused alone, wherever in the request it is: the walkers below build
# each record's row inside its own try, numbering records as the answer counts them.


class _Rows:
    """The rows and refusals of one request, record by record."""

    __slots__ = ("rejected", "rows")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.rejected: list[Rejection] = []

    def refuse(self, i: int, reason: str) -> None:
        self.rejected.append(Rejection(i, f"log record {i}: {reason}"))

    def take(
        self,
        records: Iterable[Any],
        row: Callable[[Any, Callable[[], _Base], int], dict[str, Any]],
        base_of: Callable[[], _Base],
        received_at_ns: int,
        i: int,
    ) -> int:
        """One scope's records as rows (`row`, protobuf or JSON), each refused alone; the index
        of the next record."""
        for record in records:
            try:
                self.rows.append(row(record, base_of, received_at_ns))
            except _Refused as exc:
                self.refuse(i, str(exc))
            except ParseError as exc:
                self.refuse(i, exc.message)
            i += 1
        return i


def _row(
    received_at_ns: int,
    base: tuple[tuple[tuple[str, Any], ...], dict[str, str]],
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
        row["level"], row["severity_number"], row["severity_text"] = (
            _SEVERITY_LEVELS[severity_number],
            severity_number,
            severity_text,
        )
    else:
        row["level"], row["severity_number"], row["severity_text"] = level_fields(severity_text or None)
    columns, resource_attributes = base
    for column, value in columns:
        row[column] = value
    if trace_id:
        row["trace_id"] = trace_id
    if span_id:
        row["span_id"] = span_id
    if resource_attributes:
        merged = resource_attributes.copy()
        merged.update(attributes)  # a record's own attribute wins over the resource's of that name
    else:
        merged = attributes
    if len(merged) > MAX_ATTRIBUTE_KEYS:
        raise _Refused(_TOO_MANY)
    row["attributes"] = merged
    return row


_Base = tuple[tuple[tuple[str, Any], ...], dict[str, str]]  # (resource columns, resource attributes)


def _resource_base(pairs: list[tuple[str, Any]], scope_name: str, scope_version: str) -> _Base:
    columns: dict[str, Any] = {}
    attributes: dict[str, str] = {}
    for key, value in pairs:
        column = _RESOURCE_COLUMNS.get(key)
        if column is not None and column not in columns and isinstance(value, str):
            columns[column] = value
        else:
            _put(attributes, f"resource.{key}", value)
    if scope_name:
        attributes["scope.name"] = scope_name
    if scope_version:
        attributes["scope.version"] = scope_version
    return tuple(columns.items()), attributes


def _once(build: Callable[[], _Base]) -> Callable[[], _Base]:
    """The resource's columns, worked out for the first record of a scope and shared by the rest
    (a resource that cannot be read refuses each of its records: a failure is not kept)."""
    kept: list[_Base] = []

    def base() -> _Base:
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
            raise _Refused(_TOO_MANY)
        out[key] = value if isinstance(value, str) else to_text(value)


def _add(out: dict[str, str], key: str, text: str) -> None:
    """One stored text into `out`, as `_put` stores a string."""
    if len(out) >= MAX_ATTRIBUTE_KEYS:
        raise _Refused(_TOO_MANY)
    out[key] = text


def _put_flat(out: dict[str, str], key: str, texts: dict[str, str] | None) -> bool:
    """A kvlist of scalars under `key.`, as `_put` flattens its plain dict; False when there is none."""
    if texts is None:
        return False
    for k, text in texts.items():
        _add(out, f"{key}.{k}", text)
    return True


def _message(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else to_text(value))


# -- protobuf ------------------------------------------------------------------------------------


def _proto_value(value: Any, depth: int = 0) -> Any:
    """An AnyValue message as a plain Python value (kvlist -> dict, array -> list, bytes -> base64)."""
    if depth > MAX_DEPTH:
        raise _Refused(_TOO_DEEP)
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


# Reading a field of a upb message costs ~30-90 ns and WhichOneof ~100 ns, so the walk below reads
# the likely member first: a oneof member that is not its default (a non-empty string, a non-zero
# int) is the set one, and only a default or another kind asks WhichOneof.


def _proto_scalar(value: Any) -> tuple[str | None, str | None]:
    """A scalar AnyValue's stored text, as `_put(_proto_value(value))` stores it (None for any other
    kind), and the kind when it had to be asked (None when the likely member answered)."""
    text: str = value.string_value
    if text:
        return text, None
    number = value.int_value
    if number:
        return str(number), None  # what to_text writes for any int
    kind = value.WhichOneof("value")
    if kind == "double_value":
        return to_text(value.double_value), kind
    if kind == "string_value":
        return "", kind
    if kind == "int_value":
        return "0", kind
    if kind == "bool_value":
        return ("true" if value.bool_value else "false"), kind
    return None, kind


def _proto_rows(request: Any, received_at_ns: int) -> _Rows:
    out = _Rows()
    i = 0
    for resource_logs in request.resource_logs:
        pairs = [(kv.key, kv.value) for kv in resource_logs.resource.attributes]
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope

            def base_of(pairs: list[tuple[str, Any]] = pairs, scope: Any = scope) -> _Base:
                plain = [(k, _proto_value(v)) for k, v in pairs]
                return _resource_base(plain, scope.name, scope.version)

            i = out.take(scope_logs.log_records, _proto_row, _once(base_of), received_at_ns, i)
    return out


def _proto_texts(value: Any) -> dict[str, str] | None:
    """A kvlist of scalars as {key: text} (a repeated key: its first place, its last value, as the
    plain dict has it); None when some value is not a scalar."""
    texts: dict[str, str] = {}
    for inner in value.kvlist_value.values:
        text, _ = _proto_scalar(inner.value)
        if text is None:
            return None
        texts[inner.key] = text
    return texts


def _proto_row(record: Any, base_of: Callable[[], _Base], received_at_ns: int) -> dict[str, Any]:
    attributes: dict[str, str] = {}
    for kv in record.attributes:
        value = kv.value
        text, kind = _proto_scalar(value)
        if text is not None:
            _add(attributes, kv.key, text)
        elif kind != "kvlist_value" or not _put_flat(attributes, kv.key, _proto_texts(value)):
            _put(attributes, kv.key, _proto_value(value))
    flags = record.flags
    if flags:
        attributes["flags"] = str(flags)
    event_name = record.event_name
    if event_name:
        attributes["event.name"] = event_name
    body = record.body
    message = body.string_value
    if not message and record.HasField("body") and body.WhichOneof("value") != "string_value":
        message = _message(_proto_value(body))
    trace_id = record.trace_id
    span_id = record.span_id
    return _row(
        received_at_ns,
        base_of(),
        record.time_unix_nano,
        record.observed_time_unix_nano,
        record.severity_number,
        record.severity_text,
        message,
        attributes,
        trace_id.hex() if trace_id else "",
        span_id.hex() if span_id else "",
    )


# -- OTLP JSON -----------------------------------------------------------------------------------


_NON_FINITE: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_value(value: Any, depth: int = 0) -> Any:
    """An OTLP JSON AnyValue (`{"stringValue": ...}`) as a plain Python value."""
    if depth > MAX_DEPTH:
        raise _Refused(_TOO_DEEP)
    if not isinstance(value, dict) or not value:
        return None
    if len(value) == 1:  # the usual shape: one kind, so the precedence below does not matter
        ((kind, held),) = value.items()
        if kind == "stringValue" and type(held) is str:
            return held
        if kind == "intValue":
            return _int(held, "intValue")
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
        if isinstance(number, int | float):
            return number
        # proto3's JSON mapping spells the non-finite doubles as strings: the same value as in protobuf.
        return (
            _NON_FINITE.get(number) if isinstance(number, str) and number in _NON_FINITE else to_text(number)
        )
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


def _json_scalar(value: Any) -> str | None:
    """The stored text of a one-kind scalar AnyValue, as `_put(_json_value(value))` would store
    it, without the plain copy; None for anything else (kvlists, arrays, odd shapes)."""
    if type(value) is not dict or len(value) != 1:
        return None
    ((kind, held),) = value.items()
    if kind == "stringValue":
        return held if type(held) is str else None
    if kind == "intValue":
        return str(_int(held, "intValue"))  # what to_text writes for any int
    if kind == "doubleValue":
        return to_text(held) if type(held) is float else None
    if kind == "boolValue":
        return "true" if held else "false"
    return None


def _json_texts(value: Any) -> dict[str, str] | None:
    """A one-kind kvlistValue of scalars as {key: text}, as `_json_value` and `_put` would store
    it; None for anything else."""
    if type(value) is not dict or len(value) != 1:
        return None
    holder = value.get("kvlistValue")
    if type(holder) is not dict:
        return None
    listed = holder.get("values")
    if type(listed) is not list:
        return None
    texts: dict[str, str] = {}
    for kv in listed:
        if type(kv) is not dict:
            if isinstance(kv, dict):
                return None
            continue  # skipped, as _kvs skips it
        key = kv.get("key", "")
        text = _json_scalar(kv.get("value"))
        if text is None:
            return None
        texts[key if type(key) is str else str(key)] = text
    return texts


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
    if type(value) is int:  # the common cases first: a JSON integer, or its digits as a string
        return value
    if type(value) is str and value.isdigit() and value.isascii() and len(value) <= 40:
        return int(value)
    if isinstance(value, bool):
        raise _Refused(f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) <= 40:
        try:
            return int(value)
        except ValueError:  # '--1', or digits int() does not take ('²'): refused like any non-integer
            pass
    raise _Refused(f"{name} {to_text(value)[:40]} is not an integer")


def _hex_id(value: Any, name: str) -> str:
    if value is None or value == "":
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


def _json_rows(resource_logs: list[Any], received_at_ns: int) -> _Rows:
    out = _Rows()
    i = 0
    for rl in resource_logs:
        if not isinstance(rl, dict):
            out.refuse(i, "a resourceLogs entry must be an object")
            i += 1
            continue
        raw_resource = rl.get("resource")
        resource: dict[str, Any] = raw_resource if isinstance(raw_resource, dict) else {}
        pairs = [(str(kv.get("key", "")), kv.get("value")) for kv in _safe_kvs(resource.get("attributes"))]
        for sl in _safe_list(rl.get("scopeLogs")):
            if not isinstance(sl, dict):
                out.refuse(i, "a scopeLogs entry must be an object")
                i += 1
                continue
            raw_scope = sl.get("scope")
            scope: dict[str, Any] = raw_scope if isinstance(raw_scope, dict) else {}

            def base_of(pairs: list[tuple[str, Any]] = pairs, scope: dict[str, Any] = scope) -> _Base:
                plain = [(k, _json_value(v)) for k, v in pairs]
                return _resource_base(plain, _message(scope.get("name")), _message(scope.get("version")))

            i = out.take(_safe_list(sl.get("logRecords")), _json_row, _once(base_of), received_at_ns, i)
    return out


def _safe_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _safe_kvs(value: Any) -> list[dict[str, Any]]:
    return [kv for kv in _safe_list(value) if isinstance(kv, dict)]


def _put_flags(attributes: dict[str, str], flags: Any) -> None:
    if flags or type(flags) is not int:  # 0 is the usual value: no call for it
        flags = _int(flags, "flags")
        if flags:
            attributes["flags"] = str(flags)


def _json_row(record: Any, base_of: Callable[[], _Base], received_at_ns: int) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise _Refused("a log record must be an object")
    attributes: dict[str, str] = {}
    listed = record.get("attributes")
    if isinstance(listed, list):
        for kv in listed:
            if not isinstance(kv, dict):
                continue
            key = kv.get("key", "")
            if type(key) is not str:
                key = str(key)
            value = kv.get("value")
            text = _json_scalar(value)
            if text is not None:
                _add(attributes, key, text)
            elif not _put_flat(attributes, key, _json_texts(value)):
                _put(attributes, key, _json_value(value))
    _put_flags(attributes, record.get("flags", 0))
    if record.get("eventName"):
        attributes["event.name"] = _message(record["eventName"])
    severity_text = record.get("severityText") or ""
    if not isinstance(severity_text, str):
        severity_text = to_text(severity_text)
    base = base_of()
    time_ns = _int(record.get("timeUnixNano", 0), "timeUnixNano")
    observed_ns = _int(record.get("observedTimeUnixNano", 0), "observedTimeUnixNano")
    severity_number = _int(record.get("severityNumber", 0), "severityNumber")
    body = record.get("body")
    # Not `text` again: that name holds `str | None` above, and the compiled parser checks it.
    if type(body) is dict and type(string := body.get("stringValue")) is str:
        message = string
    else:
        message = _message(_json_value(body))
    return _row(
        received_at_ns,
        base,
        time_ns,
        observed_ns,
        severity_number,
        severity_text,
        message,
        attributes,
        "" if (trace_id := record.get("traceId")) is None else _hex_id(trace_id, "traceId"),
        "" if (span_id := record.get("spanId")) is None else _hex_id(span_id, "spanId"),
    )


# -- OTLP JSON, typed ----------------------------------------------------------------------------
# The usual body decoded by msgspec into the Structs of formats/otlp_json.py, in one C pass, and
# walked into rows by the functions below, which read each kind as the dict walk above reads it.
# The types are strict (no null where a value goes, no unknown or snake_case key, no int past
# int64, no float for an int): a body they do not describe fails the decode and takes the dict walk.


def _typed_json_rows(body: bytes, received_at_ns: int) -> _Rows | None:
    """The rows of a body the typed decode takes; None for any other (the dict walk's)."""
    try:
        request = _DECODER.decode(body)
    except (msgspec.MsgspecError, RecursionError):
        return None
    out = _Rows()
    i = 0
    for rl in request.resourceLogs:
        pairs = [(kv.key, kv.value) for kv in rl.resource.attributes]
        for sl in rl.scopeLogs:

            def base_of(pairs: list[tuple[str, Any]] = pairs, scope: _Scope = sl.scope) -> _Base:
                plain = [(k, _typed_value(v)) for k, v in pairs]
                return _resource_base(plain, scope.name, scope.version)

            i = out.take(sl.logRecords, _typed_row, _once(base_of), received_at_ns, i)
    return out


# A value with two kinds gives what the dict walk gives: the first of string, bool, int,
# double, array, kvlist, bytes (`_json_value`'s order).


def _typed_value(value: _Value | UnsetType, depth: int = 0) -> Any:
    """A typed AnyValue as the plain Python value `_json_value` makes of its JSON."""
    if depth > MAX_DEPTH:
        raise _Refused(_TOO_DEEP)
    if value is UNSET:
        return None
    if value.stringValue is not UNSET:
        return value.stringValue
    if value.boolValue is not UNSET:
        return value.boolValue
    if value.intValue is not UNSET:
        return _int(value.intValue, "intValue")
    if value.doubleValue is not UNSET:
        return value.doubleValue
    if value.arrayValue is not UNSET:
        return [_typed_value(v, depth + 1) for v in value.arrayValue.values]
    if value.kvlistValue is not UNSET:
        return {kv.key: _typed_value(kv.value, depth + 1) for kv in value.kvlistValue.values}
    if value.bytesValue is not UNSET:
        return value.bytesValue
    return None


def _typed_text(value: _Value | UnsetType) -> str | None:
    """A scalar's stored text, as `_put(_typed_value(value))` stores it; None otherwise."""
    if value is UNSET:
        return None
    if (text := value.stringValue) is not UNSET:
        return text
    if (flag := value.boolValue) is not UNSET:
        return "true" if flag else "false"
    if (number := value.intValue) is not UNSET:
        return str(number if type(number) is int else _int(number, "intValue"))  # as to_text writes it
    if (double := value.doubleValue) is not UNSET:
        return to_text(double)
    return None


def _typed_texts(value: _Value | UnsetType) -> dict[str, str] | None:
    """A kvlist of scalars as {key: text}, as `_json_texts` has it; None otherwise."""
    if value is UNSET or value.arrayValue is not UNSET or value.kvlistValue is UNSET:
        return None
    texts: dict[str, str] = {}
    for kv in value.kvlistValue.values:
        text = _typed_text(kv.value)
        if text is None:
            return None
        texts[kv.key] = text
    return texts


def _typed_row(record: _Record, base_of: Callable[[], _Base], received_at_ns: int) -> dict[str, Any]:
    """`_json_row` for a typed record: the same steps in the same order (so the same refusal)."""
    attributes: dict[str, str] = {}
    for kv in record.attributes:
        value = kv.value
        text: str | None
        if value is not UNSET and (string := value.stringValue) is not UNSET:  # the usual value
            text = string
        else:
            text = _typed_text(value)
        if text is not None:
            _add(attributes, kv.key, text)
        elif not _put_flat(attributes, kv.key, _typed_texts(value)):
            _put(attributes, kv.key, _typed_value(value))
    if record.flags != 0:
        _put_flags(attributes, record.flags)
    if record.eventName:
        attributes["event.name"] = record.eventName
    base = base_of()
    # An int is what `_int` returns as it is: the call only for text.
    time_ns = n if type(n := record.timeUnixNano) is int else _int(n, "timeUnixNano")
    observed_ns = n if type(n := record.observedTimeUnixNano) is int else _int(n, "observedTimeUnixNano")
    severity_number = n if type(n := record.severityNumber) is int else _int(n, "severityNumber")
    body = record.body
    if body is UNSET:
        message = ""
    elif (string := body.stringValue) is not UNSET:
        message = string
    else:
        message = _message(_typed_value(body))
    return _row(
        received_at_ns,
        base,
        time_ns,
        observed_ns,
        severity_number,
        record.severityText,
        message,
        attributes,
        _hex_id(record.traceId, "traceId") if record.traceId else "",
        _hex_id(record.spanId, "spanId") if record.spanId else "",
    )
