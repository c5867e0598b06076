"""OTLP JSON has two walkers (formats/otlp.py): the typed one (msgspec Structs) for the usual
body, the dict one (orjson) for every other. For any body, `parse` must give what the dict
walk alone gives: the same rows (values, their types, the key order of the attributes), the
same refusals and answer, or the same ParseError (code, message, position).

The bodies are generated from fixed seeds: the shapes the OTel JSON exporter sends, then
broken in many ways (nulls, unknown and snake_case keys, wrong types, two kinds in one
AnyValue, huge ints, bad ids and times, duplicate keys, bad UTF-8, truncation, deep nesting,
too many attributes). Each check also counts the bodies the typed walk took: a typed walk
that refused everything would only compare the dict walk with itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest

from formats import otlp
from formats.base import ParseError
from formats.common import MAX_ATTRIBUTE_KEYS, MAX_DEPTH
from tests.formats.conftest import make_ctx, shape

CTX = make_ctx()
NOW_NS = CTX.received_at_ns

TEXTS = ["GET", "", "ünïcode ✓", "line\nbreak", 'quote "q"', "\u0000nul", "a" * 300]
KEYS = ["service.name", "host.name", "deployment.environment", "deployment.environment.name"]
KEYS += ["http", "user.id", "dup", "dup", "a.b", "", "ключ", "flags", "event.name"]
# Each list of values: what the typed walk takes (str oddities included: they are refusals),
# then the values only the dict walk takes (null, a float for an int, ints past int64, ...).
INTS: list[Any] = ["42", 42, "-7", -7, "0", 0, "007", " 12", "12x", "²", "--1", "", 2**63 - 1, -(2**63)]
ODD_INTS: list[Any] = [1.5, True, None, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, [1]]
DOUBLES: list[Any] = [2.5, 5, 0, -0.0, 0.1, 1e16, 1e300, 123456789.125, -(2**63)]
ODD_DOUBLES: list[Any] = ["NaN", "Infinity", "2.5", 2**64 + 1, None, True]
TIMES: list[Any] = [str(NOW_NS), NOW_NS, str(NOW_NS - 1234), "0", 0, "99999999999999999999"]
TIMES += ["-5", "soon", str(4_102_444_800 * 10**9 + 1), "1705320000", -1]
ODD_TIMES: list[Any] = [1.7e18, 2**63 + 5, None, False]
SEVERITIES: list[Any] = [9, 17, 0, 1, 24, 25, -1, "9", "SEVERITY_NUMBER_INFO", 2**40]
ODD_SEVERITIES: list[Any] = [9.0, None, "9.5"]
IDS: list[Any] = ["5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "", "zz", "0123456789ABCDEF"]
IDS += ["AAECAwQFBgcICQoLDA0ODw=="]
ODD_IDS: list[Any] = [5, None, ["ab"]]
CAMEL = [
    ("resourceLogs", "resource_logs"),
    ("scopeLogs", "scope_logs"),
    ("logRecords", "log_records"),
    ("timeUnixNano", "time_unix_nano"),
    ("stringValue", "string_value"),
    ("kvlistValue", "kvlist_value"),
    ("severityNumber", "severity_number"),
    ("traceId", "trace_id"),
]


def dumps(doc: Any) -> bytes:
    """Compact JSON, ints past 64 bits included (orjson refuses to write them)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


class Bodies:
    """OTLP JSON documents from a seed; `odd` is how often a value only the dict walk takes
    (null, a float for an int, ...) is picked instead of a usual one."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.odd = 0.0

    def pick(self, usual: list[Any], odd: list[Any]) -> Any:
        return self.rng.choice(odd if odd and self.rng.random() < self.odd else usual)

    def maybe(
        self, out: dict[str, Any], key: str, p: float, usual: list[Any], odd: list[Any] | None = None
    ) -> None:
        if self.rng.random() < p:
            out[key] = self.pick(usual, odd or [])

    def any_value(self, depth: int = 0) -> Any:
        rng = self.rng
        kind = rng.choice(["string", "string", "int", "double", "bool", "bytes", "empty", "array", "kvlist"])
        if kind in ("array", "kvlist") and depth >= 3:
            kind = "string"
        if kind == "string":
            return {"stringValue": rng.choice(TEXTS)}
        if kind == "int":
            usual = str(rng.randint(-(10**6), 10**12))
            return {"intValue": self.pick(INTS, ODD_INTS) if rng.random() < 0.3 else usual}
        if kind == "double":
            return {
                "doubleValue": self.pick(DOUBLES, ODD_DOUBLES) if rng.random() < 0.4 else rng.random() * 100
            }
        if kind == "bool":
            return {"boolValue": rng.random() < 0.5}
        if kind == "bytes":
            return {"bytesValue": rng.choice(["AAE=", "", "not base64"])}
        if kind == "empty":
            return {}
        if kind == "array":
            return {"arrayValue": {"values": [self.any_value(depth + 1) for _ in range(rng.randint(0, 3))]}}
        return {"kvlistValue": {"values": [self.key_value(depth + 1) for _ in range(rng.randint(0, 4))]}}

    def key_value(self, depth: int = 0) -> dict[str, Any]:
        kv: dict[str, Any] = {"key": self.rng.choice(KEYS), "value": self.any_value(depth)}
        if self.rng.random() < 0.03:
            del kv["value"]
        return kv

    def log_record(self) -> dict[str, Any]:
        rng = self.rng
        record: dict[str, Any] = {}
        if rng.random() < 0.8:
            usual = str(NOW_NS - rng.randint(0, 10**12))
            record["timeUnixNano"] = usual if rng.random() < 0.7 else self.pick(TIMES, ODD_TIMES)
        self.maybe(record, "observedTimeUnixNano", 0.5, TIMES, ODD_TIMES)
        self.maybe(record, "severityNumber", 0.8, SEVERITIES, ODD_SEVERITIES)
        self.maybe(record, "severityText", 0.6, ["INFO", "ERROR", "warning", "", "nonsense"], [None, 5])
        if rng.random() < 0.9:
            record["body"] = self.any_value()
        if rng.random() < 0.9:
            record["attributes"] = [self.key_value() for _ in range(rng.randint(0, 8))]
        self.maybe(record, "droppedAttributesCount", 0.1, [0, 3])
        self.maybe(record, "flags", 0.4, [0, 1, 3, 257, "1", "x", "", -1], ODD_INTS)
        self.maybe(record, "traceId", 0.4, IDS, ODD_IDS)
        self.maybe(record, "spanId", 0.4, IDS, ODD_IDS)
        self.maybe(record, "eventName", 0.2, ["login", "", "ünï"], [None, 7])
        return record

    def request(self) -> dict[str, Any]:
        rng, schema = self.rng, ["https://opentelemetry.io/schemas/1.21.0"]
        resource_logs = []
        for _ in range(rng.randint(0, 3)):
            resource: dict[str, Any] = {"attributes": [self.key_value() for _ in range(rng.randint(0, 5))]}
            self.maybe(resource, "droppedAttributesCount", 0.1, [0, 2])
            scope_logs = []
            for _ in range(rng.randint(0, 3)):
                scope: dict[str, Any] = {}
                self.maybe(scope, "name", 0.6, ["checkout.logger", "", "ünï"], [None, 3])
                self.maybe(scope, "version", 0.3, ["1.2.0", ""])
                self.maybe(scope, "attributes", 0.1, [[], [{"key": "a", "value": {"stringValue": "b"}}]])
                entry: dict[str, Any] = {"logRecords": [self.log_record() for _ in range(rng.randint(0, 5))]}
                if rng.random() < 0.9:
                    entry["scope"] = scope
                self.maybe(entry, "schemaUrl", 0.2, schema)
                scope_logs.append(entry)
            entry = {"scopeLogs": scope_logs}
            if rng.random() < 0.9:
                entry["resource"] = resource
            self.maybe(entry, "schemaUrl", 0.2, schema)
            resource_logs.append(entry)
        return {"resourceLogs": resource_logs}


def places(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) inside a decoded document."""
    if isinstance(node, dict):
        for key in list(node):
            yield node, key
            yield from places(node[key])
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield node, index
            yield from places(item)


def break_document(rng: random.Random, doc: dict[str, Any]) -> None:
    """One change in the document's tree: a null, a wrong type, an unknown or a snake_case key,
    a second kind in an AnyValue."""
    spots = list(places(doc))
    if not spots:
        return
    container, key = rng.choice(spots)
    change = rng.choice(["null", "wrong type", "unknown key", "snake_case", "two kinds", "list item"])
    if change == "null":
        container[key] = None
    elif change == "wrong type":
        old = container[key]
        container[key] = rng.choice([[], {}, "text", 5, 2.5, True, [old], {"values": old}])
    elif change == "unknown key" and isinstance(container, dict):
        container["someExtra"] = rng.choice([1, None, {"x": 1}])
    elif change == "snake_case" and isinstance(container, dict):
        renames = dict(CAMEL)
        if key in renames:
            container[renames[key]] = container.pop(key)
    elif change == "two kinds" and isinstance(container, dict) and key == "value":
        value = container[key]
        if isinstance(value, dict):
            value.update(rng.choice([{"intValue": "5"}, {"boolValue": False}, {"stringValue": "s"}]))
            value.update(rng.choice([{"doubleValue": 1.5}, {"bytesValue": "AAE="}, {"kvlistValue": {}}]))
    elif change == "list item" and isinstance(container, list):
        container.append(rng.choice([None, 5, "x", [], {}]))


def break_bytes(rng: random.Random, body: bytes) -> bytes:
    """One change in the encoded body: duplicate keys, bad UTF-8 or escapes, truncation,
    literals orjson and msgspec may read differently."""
    change = rng.choice(
        ["duplicate", "duplicate record key", "bad utf-8", "surrogate", "truncate", "bom", "trailing",
         "whitespace", "nan", "big literal", "float literal", "exponent"]
    )  # fmt: skip
    if change == "duplicate":
        return body.replace(b'{"key":', b'{"key":"dup","key":', 1)
    if change == "duplicate record key":
        return body.replace(b'"timeUnixNano":', b'"timeUnixNano":"1","timeUnixNano":', 1)
    if change == "bad utf-8":
        return body.replace(b'"stringValue":"', b'"stringValue":"\xff\xfe', 1)
    if change == "surrogate":
        return body.replace(b'"stringValue":"', b'"stringValue":"\\ud800', 1)
    if change == "truncate":
        return body[: rng.randint(0, len(body))]
    if change == "bom":
        return b"\xef\xbb\xbf" + body
    if change == "trailing":
        return body + rng.choice([b" ", b"\n", b"x", b"{}", b"\x00"])
    if change == "whitespace":
        return body.replace(b",", b" ,\n\t", 3).replace(b":", b" : ", 3)
    if change == "nan":
        return body.replace(b'"doubleValue":', b'"doubleValue":NaN,"x":', 1)
    if change == "big literal":
        return body.replace(b'"severityNumber":', b'"severityNumber":123456789012345678901234567890,"x":', 1)
    if change == "float literal":
        return body.replace(b'"intValue":"', b'"intValue":1.0,"x":"', 1)
    return body.replace(b'"doubleValue":', b'"doubleValue":1e400,"x":', 1)


def outcome(body: bytes, typed: bool) -> tuple[Any, ...]:
    """What `parse` gives, as comparable data: rows with their key order and value types.

    The dict walk is the one `parse` takes for a body the router already decoded (`ctx.document`,
    as `POST /v1/logs` does): a call, not a patched function, because the compiled parser
    (formats/native.py) calls its own functions directly. A body orjson cannot decode takes no
    typed walk either (msgspec refuses it too), so it goes as it is.
    """
    ctx = CTX
    if not typed:
        with contextlib.suppress(orjson.JSONDecodeError):
            ctx = replace(CTX, document=orjson.loads(body))
    try:
        parsed = otlp.parse(body, ctx)
    except ParseError as exc:
        return ("error", exc.code, exc.message, exc.position, exc.details)
    return ("parsed", *shape(parsed))


def taken_by_typed_walk(body: bytes) -> bool:
    return otlp._typed_json_rows(body, NOW_NS) is not None


def assert_same(bodies: list[bytes]) -> int:
    """Both walks agree on every body; how many bodies the typed walk took."""
    taken = 0
    for body in bodies:
        assert outcome(body, True) == outcome(body, False), body[:2000]
        taken += taken_by_typed_walk(body)
    return taken


@pytest.mark.parametrize("seed", range(8))
def test_generated_bodies_give_the_same_rows_refusals_and_errors_on_both_walks(seed: int) -> None:
    bodies = Bodies(seed)
    rng = bodies.rng
    clean = [dumps(bodies.request()) for _ in range(60)]
    broken = []
    bodies.odd = 0.05
    for _ in range(200):
        doc = bodies.request()
        for _ in range(rng.randint(1, 2)):
            break_document(rng, doc)
        body = dumps(doc)
        broken.append(break_bytes(rng, body) if rng.random() < 0.4 else body)
    assert assert_same(clean) == len(clean)  # the typed types admit every clean shape
    taken = assert_same(broken)
    assert 0 < taken < len(broken)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


def nested_text(depth: int) -> bytes:
    """A record whose body is a kvlist `depth` deep, written out (orjson writes 255 levels at most)."""
    opening, closing = b'{"kvlistValue":{"values":[{"key":"k","value":', b"}]}}"
    value = opening * depth + b'{"stringValue":"leaf"}' + closing * depth
    return b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + value + b"}]}]}]}"


def one_record(**fields: Any) -> bytes:
    record = {"timeUnixNano": str(NOW_NS), "body": {"stringValue": "m"}, **fields}
    ok = {"body": {"stringValue": "ok"}}
    return dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record, ok]}]}]})


def raw_record(field: bytes) -> bytes:
    """A one-record body with `field` written as is (bytes no JSON encoder writes)."""
    return b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{' + field + b"}]}]}]}"


# Text and numbers the two decoders must read alike: each takes or refuses the same ones.
RAW_TEXT = [b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xe0\x80\x80", b"\x80", b"\xc3", b"\xef\xbf\xbf", b"\x7f"]
RAW_TEXT += [b"\\u00", b"\\uD834\\uDD1E", b"\\udd1e\\ud834", b"\\ud800", b"\\u0000", b"a\tb"]
RAW_NUMBERS = [b"1.", b"-", b".5", b"1e", b"+1", b"0x10", b"1E+2", b"-0.0e-0", b"1e-400", b"00", b"1e400"]
RAW = [(f"text {t!r}", raw_record(b'"body":{"stringValue":"' + t + b'"}')) for t in RAW_TEXT]
RAW += [(f"number {n!r}", raw_record(b'"body":{"doubleValue":' + n + b"}")) for n in RAW_NUMBERS]

many = [{"key": f"k{i}", "value": {"intValue": str(i)}} for i in range(MAX_ATTRIBUTE_KEYS + 1)]
HANDWRITTEN: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("blank", b"  \n"),
    ("null", b"null"),
    ("array", b"[]"),
    ("empty object", b"{}"),
    ("resourceLogs null", b'{"resourceLogs": null}'),
    ("resourceLogs object", b'{"resourceLogs": {}}'),
    ("duplicate resourceLogs", b'{"resourceLogs": 5, "resourceLogs": []}'),
    ("deep value at the limit", one_record(attributes=[{"key": "d", "value": nested(MAX_DEPTH)}])),
    ("deep value past the limit", one_record(attributes=[{"key": "d", "value": nested(MAX_DEPTH + 1)}])),
    ("deep body", one_record(body=nested(MAX_DEPTH + 2))),
    ("deep, within both decoders", nested_text(240)),
    ("deeper than msgspec goes", nested_text(250)),
    ("deeper than both decoders go", nested_text(300)),
    ("too many attributes", one_record(attributes=many)),
    ("exactly the most attributes", one_record(attributes=many[:MAX_ATTRIBUTE_KEYS])),
    ("most attributes and flags", one_record(attributes=many[:MAX_ATTRIBUTE_KEYS], flags=1)),
    ("most attributes and a kvlist", one_record(attributes=[*many[:999], {"key": "h", "value": nested(1)}])),
    (
        "most attributes and a repeated kvlist key",
        one_record(
            attributes=[
                *many[:999],
                {
                    "key": "h",
                    "value": {
                        "kvlistValue": {
                            "values": [
                                {"key": "a", "value": {"intValue": "1"}},
                                {"key": "a", "value": {"intValue": "2"}},
                            ]
                        }
                    },
                },
            ]
        ),
    ),
    (
        "resource attributes past the most",
        dumps(
            {
                "resourceLogs": [
                    {
                        "resource": {"attributes": many},
                        "scopeLogs": [{"logRecords": [{"body": {"stringValue": "m"}}]}],
                    }
                ]
            }
        ),
    ),
    ("hex ids", one_record(traceId="5B8EFFF798038103D269B633813FC60C", spanId="eee19b7ec3c1b174")),
    ("base64 ids", one_record(traceId="W47/95gDgQPSabYzgT/GDA==", spanId="7uGbfsPBsXQ=")),
    ("bad id", one_record(traceId="not an id")),
    ("time past 2100", one_record(timeUnixNano=str(4_102_444_800 * 10**9 + 1))),
    ("negative time", one_record(timeUnixNano="-1")),
    ("double 5", one_record(attributes=[{"key": "d", "value": {"doubleValue": 5}}])),
    ("double body", one_record(body={"doubleValue": 5})),
    ("two kinds", one_record(body={"intValue": "5", "stringValue": "s"})),
    ("null kind", one_record(body={"stringValue": None, "intValue": "5"})),
    ("uint64 max", one_record(body={"intValue": 2**64 - 1})),
    ("past uint64", one_record(body={"intValue": 2**64})),
    *RAW,
]


@pytest.mark.parametrize("name, body", HANDWRITTEN, ids=[name for name, _ in HANDWRITTEN])
def test_handwritten_edges_give_the_same_outcome_on_both_walks(name: str, body: bytes) -> None:
    assert assert_same([body]) in (0, 1)


def exporter_body() -> bytes:
    """A body as the OpenTelemetry SDK's OTLP JSON exporter sends it (its own encoder), of records from
    the logging handler of `opentelemetry-instrumentation-logging` and the Logs API."""
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.exporter.otlp.json.common._log_encoder import encode_logs
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    resource: dict[str, Any] = {"service.name": "checkout", "team": "pay", "replicas": 3, "tags": ["a", "b"]}
    provider = LoggerProvider(resource=Resource.create(resource))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("tests.otlp-typed")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        with TracerProvider().get_tracer("tests").start_as_current_span("charge"):
            extra = {"order.id": 42, "retry": True, "ratio": 2.5, "blob": b"\x00\x01", "ids": [1, 2]}
            logger.error("charge failed", extra=extra)
        # A structured body: the handler sends a message as text, so through the Logs API itself.
        provider.get_logger("tests.otlp-typed").emit(
            severity_number=SeverityNumber.WARN, body={"structured": {"a": 1, "b": [True, None]}}
        )
        logger.info("plain")
    finally:
        logger.removeHandler(handler)
    body: bytes = encode_logs(exporter.get_finished_logs()).to_json().encode()
    return body


def test_the_otel_exporters_body_takes_the_typed_walk_with_the_same_rows() -> None:
    body = exporter_body()
    assert assert_same([body]) == 1
    rows = otlp.parse(body, CTX).rows
    structured = '{"structured":{"a":1,"b":[true,null]}}'
    # The Logs API's record has a scope of its own, so the records come grouped by scope.
    assert sorted(row["message"] for row in rows) == sorted(["charge failed", structured, "plain"])
    (failed,) = (row for row in rows if row["message"] == "charge failed")
    assert failed["attributes"]["order.id"] == "42" and failed["attributes"]["blob"] == "AAE="
