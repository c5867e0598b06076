"""OTLP protobuf has two readers (formats/otlp.py): the wire reader (formats/otlp_wire.py) for
the bodies it takes, upb's generated messages for every other. For any body, `parse` must give
what the upb walk alone gives: the same rows (values, their types, the attributes' key order),
the same refusals and answer, or the same ParseError.

The bodies: the generated requests of test_otlp_proto_walk.py (every AnyValue kind, nesting
past the limit, too many attributes, odd severities, ids and times), the same broken (cut, bad
UTF-8, unknown fields, garbage), and hand-written wire edges no serializer writes (unknown
fields of every wire type at every level, a message sent twice, a known field of the wrong
wire type, groups, field number 0, overlong varints). Each check also counts the bodies the
wire reader took: a reader that refused everything would only compare upb with itself.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from formats import otlp
from formats.base import Parsed, ParseError
from formats.common import MAX_DEPTH
from formats.otlp_wire import Unread, read_request
from tests.formats.conftest import shape
from tests.formats.test_otlp_proto_walk import CTX, NOW_NS, Requests, break_bytes, kvlist, nested


def outcome(body: bytes) -> tuple[Any, ...]:
    try:
        parsed = otlp.parse(body, CTX)
    except ParseError as exc:
        return ("error", exc.code, exc.message, exc.position, exc.details)
    return ("parsed", *shape(parsed))


def upb_outcome(body: bytes) -> tuple[Any, ...]:
    """What the upb walk alone gives (`parse` before the wire reader)."""
    try:
        request = ExportLogsServiceRequest.FromString(body)
    except DecodeError as exc:
        message = f"the body is not an ExportLogsServiceRequest: {exc}"
        return ("error", "invalid_protobuf", message, None, None)
    found = otlp._proto_rows(request, NOW_NS)
    return ("parsed", *shape(Parsed(rows=found.rows, rejected=found.rejected, answer="protobuf")))


def taken(body: bytes) -> bool:
    try:
        read_request(body)
    except Unread:
        return False
    return True


def assert_same(bodies: list[bytes]) -> int:
    """Both readers agree on every body; how many the wire reader took."""
    count = 0
    for body in bodies:
        assert outcome(body) == upb_outcome(body), body[:2000]
        count += taken(body)
    return count


@pytest.mark.parametrize("seed", range(8))
def test_generated_requests_give_the_same_outcome_on_both_readers(seed: int) -> None:
    requests = Requests(seed)
    clean = [requests.request() for _ in range(120)]
    # A negative severity or a value nested past 16 anywhere leaves a clean body to upb, and
    # most of these requests hold one of their records.
    assert assert_same(clean) >= len(clean) // 4
    broken = [break_bytes(requests.rng, body) for body in clean[:80] if body]
    assert 0 < assert_same(broken) < len(broken)


def test_the_bench_requests_are_read_by_the_wire_reader() -> None:
    from bench import payloads

    bodies = payloads.bodies(payloads.DIALECTS["otlp_protobuf"], 50, 4)
    assert assert_same(bodies) == len(bodies)


# -- hand-written wire --------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, wire: int, value: bytes) -> bytes:
    """A field's key and its value as written (a length-delimited value gets its length)."""
    if wire == 2:
        value = varint(len(value)) + value
    return varint(number << 3 | wire) + value


UNKNOWN = (
    field(100, 0, varint(300))
    + field(101, 1, bytes(8))
    + field(102, 2, b"\xff\xfe not text")
    + field(103, 5, bytes(4))
    + field(2**29 - 1, 0, b"\x01")
)


def request(*resource_logs: bytes) -> bytes:
    return b"".join(field(1, 2, r) for r in resource_logs)


def resource_logs(*parts: bytes) -> bytes:
    return b"".join(parts)


def scope_logs(*records: bytes, scope: bytes = b"") -> bytes:
    return (field(1, 2, scope) if scope else b"") + b"".join(field(2, 2, r) for r in records)


RECORD = LogRecord(
    time_unix_nano=NOW_NS,
    severity_number=9,  # type: ignore[arg-type]
    severity_text="INFO",
    body=AnyValue(string_value="hello"),
    attributes=[
        KeyValue(key="a", value=AnyValue(int_value=-5)),
        KeyValue(key="h", value=kvlist(("m", AnyValue(string_value="GET")), ("s", AnyValue(int_value=200)))),
        KeyValue(key="l", value=AnyValue(array_value={"values": [AnyValue(double_value=1.5), AnyValue()]})),
        KeyValue(key="b", value=AnyValue(bytes_value=b"\x00\x01")),
        KeyValue(key="t", value=AnyValue(bool_value=True)),
    ],
    flags=1,
    trace_id=bytes(range(16)),
    span_id=bytes(range(8)),
    event_name="done",
).SerializeToString()
KV = KeyValue(key="k", value=AnyValue(string_value="v")).SerializeToString()
SCOPE = InstrumentationScope(name="app", version="1.0").SerializeToString()
RESOURCE = Resource(
    attributes=[KeyValue(key="service.name", value=AnyValue(string_value="api"))]
).SerializeToString()


def one(record: bytes) -> bytes:
    return request(resource_logs(field(1, 2, RESOURCE), field(2, 2, scope_logs(record, scope=SCOPE))))


def with_attribute(value: bytes) -> bytes:
    """RECORD with one more attribute "x" whose AnyValue is `value` as written."""
    return RECORD + field(6, 2, field(1, 2, b"x") + field(2, 2, value))


TAKEN: list[tuple[str, bytes]] = [
    ("a record", one(RECORD)),
    ("unknown fields in the request", request(resource_logs(field(2, 2, scope_logs(RECORD)))) + UNKNOWN),
    ("unknown fields in resource logs", request(resource_logs(UNKNOWN, field(2, 2, scope_logs(RECORD))))),
    ("unknown fields in a resource", request(resource_logs(field(1, 2, RESOURCE + UNKNOWN)))),
    ("unknown fields in scope logs", request(resource_logs(field(2, 2, scope_logs(RECORD) + UNKNOWN)))),
    (
        "unknown fields in a scope",
        request(resource_logs(field(2, 2, scope_logs(RECORD, scope=SCOPE + UNKNOWN)))),
    ),
    ("unknown fields in a record", one(RECORD + UNKNOWN)),
    ("unknown fields in a key-value", one(RECORD + field(6, 2, KV + UNKNOWN))),
    ("unknown fields in an AnyValue", one(with_attribute(field(1, 2, b"v") + UNKNOWN))),
    ("unknown fields in a kvlist", one(with_attribute(field(6, 2, field(1, 2, KV) + UNKNOWN)))),
    ("unknown fields in an array", one(with_attribute(field(5, 2, field(1, 2, b"") + UNKNOWN)))),
    (
        "a scope sent twice merges",
        request(
            resource_logs(field(2, 2, scope_logs(RECORD, scope=SCOPE) + field(1, 2, field(2, 2, b"2.0"))))
        ),
    ),
    (
        "a resource sent twice merges",
        request(
            resource_logs(
                field(1, 2, RESOURCE),
                field(1, 2, RESOURCE.replace(b"api", b"web")),
                field(2, 2, scope_logs(RECORD)),
            )
        ),
    ),
    (
        "a scalar field twice: the last",
        one(RECORD + field(3, 2, b"WARN") + field(1, 1, (NOW_NS - 5).to_bytes(8, "little"))),
    ),
    (
        "a oneof's members in turn: the last",
        one(with_attribute(field(1, 2, b"s") + field(3, 0, varint(7)) + field(2, 0, b"\x01"))),
    ),
    (
        "a kvlist then a string: the string",
        one(with_attribute(field(6, 2, field(1, 2, KV)) + field(1, 2, b"s"))),
    ),
    ("an empty AnyValue", one(with_attribute(b""))),
    ("a key-value without a value", one(RECORD + field(6, 2, field(1, 2, b"novalue")))),
    ("an int64 of ten bytes", one(with_attribute(field(3, 0, varint(2**64 - 1))))),
    ("a severity past 24", one(RECORD + field(2, 0, varint(2**31 - 1)))),
    ("no time: the receive time", one(LogRecord(body=AnyValue(string_value="x")).SerializeToString())),
    (
        "records in two scopes and two resources",
        request(
            resource_logs(field(2, 2, scope_logs(RECORD, RECORD)), field(2, 2, scope_logs(RECORD))),
            resource_logs(field(1, 2, RESOURCE), field(2, 2, scope_logs(RECORD))),
        ),
    ),
    ("an empty request", b""),
    ("a resource without scopes", request(resource_logs(field(1, 2, RESOURCE)))),
]
UPB: list[tuple[str, bytes]] = [
    ("a body sent twice", one(RECORD + field(5, 2, field(1, 2, b"again")))),
    ("a value sent twice", one(RECORD + field(6, 2, KV + field(2, 2, field(3, 0, b"\x01"))))),
    (
        "a kvlist sent twice in a value",
        one(with_attribute(field(6, 2, field(1, 2, KV)) + field(6, 2, field(1, 2, KV)))),
    ),
    ("a time as a varint", one(RECORD + field(1, 0, varint(NOW_NS)))),
    ("a string value as a varint", one(with_attribute(field(1, 0, b"\x01")))),
    ("a record as a varint", request(resource_logs(field(2, 2, field(2, 0, b"\x01"))))),
    ("a negative severity", one(RECORD + field(2, 0, varint(2**64 - 1)))),
    ("a group", one(RECORD + varint(100 << 3 | 3) + varint(100 << 3 | 4))),
    ("field number 0", one(RECORD + field(0, 0, b"\x01"))),
    ("wire type 7", one(RECORD + varint(100 << 3 | 7))),
    ("an overlong varint", one(RECORD + field(7, 0, b"\xff" * 10 + b"\x01"))),
    ("a truncated record", one(RECORD)[:-3]),
    ("a length past the end", request(b"\x0a\x7f")),
    ("bad UTF-8 in a key", one(RECORD + field(6, 2, field(1, 2, b"\xc3\x28")))),
    (
        "bad UTF-8 in a scope's name",
        request(resource_logs(field(2, 2, scope_logs(RECORD, scope=field(1, 2, b"\xff"))))),
    ),
    (
        "a value nested past the limit",
        one(RECORD + field(6, 2, KeyValue(key="d", value=nested(MAX_DEPTH + 1)).SerializeToString())),
    ),
]


@pytest.mark.parametrize("name, body", TAKEN, ids=[name for name, _ in TAKEN])
def test_wire_edges_the_reader_takes_give_what_upb_gives(name: str, body: bytes) -> None:
    assert assert_same([body]) == 1


@pytest.mark.parametrize("name, body", UPB, ids=[name for name, _ in UPB])
def test_wire_edges_the_reader_leaves_to_upb_give_what_upb_gives(name: str, body: bytes) -> None:
    assert assert_same([body]) == 0


def test_a_record_read_off_the_wire_has_every_field() -> None:
    """One row spelled out, so the comparison above cannot pass on two readers wrong alike."""
    (row,) = otlp.parse(one(RECORD), CTX).rows
    assert row == {
        "timestamp": NOW_NS,
        "message": "hello",
        "level": "info",
        "severity_number": 9,
        "severity_text": "INFO",
        "service": "api",
        "trace_id": bytes(range(16)).hex(),
        "span_id": bytes(range(8)).hex(),
        "attributes": {
            "scope.name": "app",
            "scope.version": "1.0",
            "a": "-5",
            "h.m": "GET",
            "h.s": "200",
            "l": "[1.5,null]",
            "b": "AAE=",
            "t": "true",
            "flags": "1",
            "event.name": "done",
        },
    }


def test_random_bytes_never_raise_anything_but_a_parse_error() -> None:
    rng = random.Random(7)
    bodies = [bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) for _ in range(2000)]
    bodies += [one(RECORD)[: rng.randint(0, len(one(RECORD)))] for _ in range(200)]
    assert_same(bodies)
