"""An OTLP `ExportLogsServiceRequest` read straight from its protobuf wire format, compiled.

formats/otlp.py reads the usual protobuf body with this instead of the generated upb messages:
reading a field of a upb message builds a Python object each time (30-100 ns), and a log
record is a dozen of them, where this reader makes only the values the rows keep. It takes a
body the way upb's parser would read it, or raises `Unread`; formats/otlp.py then parses that
body with upb, which holds every error rule (a truncated body, invalid UTF-8, a group, ...). So
this reader need not know every rule, only refuse what it does not: a known field of an
unexpected wire type, a singular message sent twice (upb merges the two), a negative enum,
AnyValues nested more than 16 deep (upb's depth limit and the walk's `MAX_DEPTH` refusal lie
past that). Unknown fields are skipped, as upb skips them. tests/formats/test_otlp_wire.py
compares the two readers.

What it returns is plain Python, as `_proto_value` in formats/otlp.py makes it: an AnyValue
is a str, bool, int, float, None (no value set), list (an ArrayValue), dict (a KeyValueList:
a repeated key keeps its first place and its last value) or, for bytes, their base64 text.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Final

# Wire types.
_VARINT: Final = 0
_I64: Final = 1
_LEN: Final = 2
_I32: Final = 5

_DOUBLE: Final = struct.Struct("<d")
_INT63: Final = 1 << 63
_INT64: Final = 1 << 64
_INT31: Final = 1 << 31
_MAX_KEY: Final = 1 << 32  # field numbers end at 2**29 - 1
# AnyValues nested deeper are left to upb. Its parser refuses a body nested past 100 messages
# (a kvlist level is three: AnyValue, KeyValueList, KeyValue; the record itself is four deep),
# which a kvlist ~31 levels down reaches, and the walk refuses a record past MAX_DEPTH (32):
# both rules are upb's to apply, so this reader stops well short of either.
_DEEPEST: Final = 16


class Unread(Exception):
    """A body this reader does not take as it is; upb reads it instead."""


# One log record as read: time_unix_nano, observed_time_unix_nano, severity_number,
# severity_text, body (an AnyValue as plain Python, None when absent or unset), attributes
# ((key, plain value) in order), flags, event_name, trace_id, span_id.
Record = tuple[int, int, int, str, Any, list[tuple[str, Any]], int, str, bytes, bytes]
# A scope's name and version and its records.
Scope = tuple[str, str, list[Record]]
# A resource's attributes and its scopes.
Resource = tuple[list[tuple[str, Any]], list[Scope]]


def read_request(data: bytes) -> list[Resource]:
    """The request's resources, scopes and records, or `Unread`."""
    resources: list[Resource] = []
    end = len(data)
    i = 0
    while i < end:
        key, i = _varint(data, i, end)
        if key == (1 << 3) | _LEN:
            start, stop = _span(data, i, end)
            resources.append(_resource_logs(data, start, stop))
            i = stop
        else:
            i = _skip(data, i, end, key)
    return resources


def _varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    """The varint at `i` and the index after it."""
    if i >= end:
        raise Unread("truncated varint")
    byte = data[i]
    if byte < 0x80:
        return byte, i + 1
    value = byte & 0x7F
    shift = 7
    i += 1
    while True:
        if i >= end or shift > 63:
            raise Unread("truncated or overlong varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >= _INT64:
                raise Unread("varint past 64 bits")
            return value, i
        shift += 7


def _span(data: bytes, i: int, end: int) -> tuple[int, int]:
    """The bounds of the length-delimited value whose length is at `i`."""
    length, start = _varint(data, i, end)
    stop = start + length
    if stop > end:
        raise Unread("truncated length-delimited field")
    return start, stop


def _fixed64(data: bytes, i: int, end: int) -> int:
    if i + 8 > end:
        raise Unread("truncated fixed64")
    return int.from_bytes(data[i : i + 8], "little")


def _text(data: bytes, start: int, stop: int) -> str:
    try:
        return data[start:stop].decode()
    except UnicodeDecodeError:
        raise Unread("invalid UTF-8") from None


def _skip(data: bytes, i: int, end: int, key: int) -> int:
    """The index after an unknown field's value (`i` is where the value starts)."""
    wire = key & 7
    if key >> 3 == 0 or key >= _MAX_KEY:
        raise Unread("field number 0 or past 2**29 - 1")
    if wire == _VARINT:
        return _varint(data, i, end)[1]
    if wire == _I64:
        i += 8
    elif wire == _LEN:
        return _span(data, i, end)[1]
    elif wire == _I32:
        i += 4
    else:
        raise Unread(f"wire type {wire}")  # groups (3, 4) and the invalid 6, 7
    if i > end:
        raise Unread("truncated fixed-width field")
    return i


def _resource_logs(data: bytes, i: int, end: int) -> Resource:
    attributes: list[tuple[str, Any]] = []
    scopes: list[Scope] = []
    while i < end:
        key, i = _varint(data, i, end)
        field = key >> 3
        if field == 1 or field == 2:
            if key & 7 != _LEN:
                raise Unread("unexpected wire type")
            start, stop = _span(data, i, end)
            if field == 1:
                # A Resource sent twice merges: its repeated attributes are concatenated.
                _resource(data, start, stop, attributes)
            else:
                scopes.append(_scope_logs(data, start, stop))
            i = stop
        else:
            i = _skip(data, i, end, key)
    return attributes, scopes


def _resource(data: bytes, i: int, end: int, attributes: list[tuple[str, Any]]) -> None:
    while i < end:
        key, i = _varint(data, i, end)
        if key >> 3 == 1:
            if key & 7 != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            attributes.append(_key_value(data, start, i, 0))
        else:
            i = _skip(data, i, end, key)


def _scope_logs(data: bytes, i: int, end: int) -> Scope:
    name = ""
    version = ""
    records: list[Record] = []
    while i < end:
        key, i = _varint(data, i, end)
        field = key >> 3
        if field == 1 or field == 2:
            if key & 7 != _LEN:
                raise Unread("unexpected wire type")
            start, stop = _span(data, i, end)
            if field == 2:
                records.append(_record(data, start, stop))
            else:
                # InstrumentationScope: a second one merges into the first, field by field.
                name, version = _scope(data, start, stop, name, version)
            i = stop
        else:
            i = _skip(data, i, end, key)
    return name, version, records


def _scope(data: bytes, i: int, end: int, name: str, version: str) -> tuple[str, str]:
    while i < end:
        key, i = _varint(data, i, end)
        field = key >> 3
        if field == 1 or field == 2:
            if key & 7 != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            if field == 1:
                name = _text(data, start, i)
            else:
                version = _text(data, start, i)
        elif field == 3:  # attributes: not stored, but upb would read (and check) them
            if key & 7 != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            _key_value(data, start, i, 0)
        else:
            i = _skip(data, i, end, key)
    return name, version


def _record(data: bytes, i: int, end: int) -> Record:
    time_ns = 0
    observed_ns = 0
    severity_number = 0
    severity_text = ""
    body: Any = None
    has_body = False
    attributes: list[tuple[str, Any]] = []
    flags = 0
    event_name = ""
    trace_id = b""
    span_id = b""
    while i < end:
        key, i = _varint(data, i, end)
        field = key >> 3
        wire = key & 7
        if field == 6:
            if wire != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            attributes.append(_key_value(data, start, i, 0))
        elif field == 1 or field == 11:
            if wire != _I64:
                raise Unread("unexpected wire type")
            if field == 1:
                time_ns = _fixed64(data, i, end)
            else:
                observed_ns = _fixed64(data, i, end)
            i += 8
        elif field == 2:
            if wire != _VARINT:
                raise Unread("unexpected wire type")
            severity_number, i = _varint(data, i, end)
            if severity_number >= _INT31:
                raise Unread("enum value outside int32's positive range")
        elif field == 3 or field == 12:
            if wire != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            if field == 3:
                severity_text = _text(data, start, i)
            else:
                event_name = _text(data, start, i)
        elif field == 5:
            if wire != _LEN or has_body:
                raise Unread("unexpected wire type or a body sent twice")
            start, i = _span(data, i, end)
            body = _any_value(data, start, i, 0)
            has_body = True
        elif field == 9 or field == 10:
            if wire != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            if field == 9:
                trace_id = data[start:i]
            else:
                span_id = data[start:i]
        elif field == 8:
            if wire != _I32:
                raise Unread("unexpected wire type")
            if i + 4 > end:
                raise Unread("truncated fixed32")
            flags = int.from_bytes(data[i : i + 4], "little")
            i += 4
        else:  # 7 (dropped_attributes_count, not stored) and unknown fields
            if field == 7 and wire != _VARINT:
                raise Unread("unexpected wire type")
            i = _skip(data, i, end, key)
    return (
        time_ns,
        observed_ns,
        severity_number,
        severity_text,
        body,
        attributes,
        flags,
        event_name,
        trace_id,
        span_id,
    )


def _key_value(data: bytes, i: int, end: int, depth: int) -> tuple[str, Any]:
    name = ""
    value: Any = None
    has_value = False
    while i < end:
        key, i = _varint(data, i, end)
        field = key >> 3
        if field == 1 or field == 2:
            if key & 7 != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            if field == 1:
                name = _text(data, start, i)
            elif has_value:
                raise Unread("a value sent twice")  # upb merges the two
            else:
                value = _any_value(data, start, i, depth)
                has_value = True
        else:
            i = _skip(data, i, end, key)
    return name, value


def _any_value(data: bytes, i: int, end: int, depth: int) -> Any:
    """An AnyValue as plain Python; the last member set wins, as in a oneof."""
    if depth > _DEEPEST:
        raise Unread("nested deeper than this reader goes")
    value: Any = None
    nested = False  # an array or kvlist member seen: a second one would merge in upb
    while i < end:
        key, i = _varint(data, i, end)
        field = key >> 3
        wire = key & 7
        if field == 1 or field == 7:
            if wire != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            value = _text(data, start, i) if field == 1 else base64.b64encode(data[start:i]).decode()
        elif field == 3:
            if wire != _VARINT:
                raise Unread("unexpected wire type")
            number, i = _varint(data, i, end)
            value = number - _INT64 if number >= _INT63 else number
        elif field == 4:
            if wire != _I64:
                raise Unread("unexpected wire type")
            if i + 8 > end:
                raise Unread("truncated double")
            value = _DOUBLE.unpack_from(data, i)[0]
            i += 8
        elif field == 2:
            if wire != _VARINT:
                raise Unread("unexpected wire type")
            number, i = _varint(data, i, end)
            value = number != 0
        elif field == 5 or field == 6:
            if wire != _LEN or nested:
                raise Unread("unexpected wire type or a nested value sent twice")
            nested = True
            start, i = _span(data, i, end)
            value = _array(data, start, i, depth + 1) if field == 5 else _kvlist(data, start, i, depth + 1)
        else:
            i = _skip(data, i, end, key)
    return value


def _array(data: bytes, i: int, end: int, depth: int) -> list[Any]:
    values: list[Any] = []
    while i < end:
        key, i = _varint(data, i, end)
        if key >> 3 == 1:
            if key & 7 != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            values.append(_any_value(data, start, i, depth))
        else:
            i = _skip(data, i, end, key)
    return values


def _kvlist(data: bytes, i: int, end: int, depth: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    while i < end:
        key, i = _varint(data, i, end)
        if key >> 3 == 1:
            if key & 7 != _LEN:
                raise Unread("unexpected wire type")
            start, i = _span(data, i, end)
            name, value = _key_value(data, start, i, depth)
            values[name] = value
        else:
            i = _skip(data, i, end, key)
    return values
