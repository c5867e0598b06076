"""The OTLP JSON request as msgspec Structs: what formats/otlp.py decodes the usual body into.

A module of its own because these stay Python classes (msgspec builds them) while the parser
that walks them is compiled (formats/native.py). Strict: no null where a value goes, no
unknown or snake_case key, no int past int64, no float for an int; a body they do not
describe fails the decode, and formats/otlp.py then walks it as dicts.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from msgspec import UNSET, UnsetType

# Within int64 (msgspec bounds go no further); orjson keeps up to 2**64 - 1 as an int and makes
# a float of anything beyond: such a body takes the dict walk.
Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Strict(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """Untracked by the GC (no cycles), and no key the Struct does not name."""


class Value(Strict):
    stringValue: str | UnsetType = UNSET
    boolValue: bool | UnsetType = UNSET
    intValue: Int | str | UnsetType = UNSET
    doubleValue: Int | float | UnsetType = UNSET  # a JSON 5 stays an int, as orjson has it
    arrayValue: Array | UnsetType = UNSET
    kvlistValue: KeyValues | UnsetType = UNSET
    bytesValue: str | UnsetType = UNSET


class KeyValue(Strict):
    key: str = ""
    value: Value | UnsetType = UNSET


class Array(Strict):
    values: list[Value] = []


class KeyValues(Strict):
    values: list[KeyValue] = []


class Record(Strict):
    timeUnixNano: Int | str = 0
    observedTimeUnixNano: Int | str = 0
    severityNumber: Int | str = 0
    severityText: str = ""
    body: Value | UnsetType = UNSET
    attributes: list[KeyValue] = []
    droppedAttributesCount: Int = 0
    flags: Int | str = 0
    traceId: str = ""
    spanId: str = ""
    eventName: str = ""


class Scope(Strict):
    name: str = ""
    version: str = ""
    attributes: list[KeyValue] = []
    droppedAttributesCount: Int = 0


class ScopeLogs(Strict):
    scope: Scope = msgspec.field(default_factory=Scope)
    logRecords: list[Record] = []
    schemaUrl: str = ""


class Resource(Strict):
    attributes: list[KeyValue] = []
    droppedAttributesCount: Int = 0


class ResourceLogs(Strict):
    resource: Resource = msgspec.field(default_factory=Resource)
    scopeLogs: list[ScopeLogs] = []
    schemaUrl: str = ""


class Request(Strict):
    resourceLogs: list[ResourceLogs] = []


DECODER: Final = msgspec.json.Decoder(Request)
