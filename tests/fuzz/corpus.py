"""Seed-like request bodies for every parser, and a JSON writer that can plant bytes JSON cannot say.

The templates are valid requests of each dialect (written here, shaped after the seed documents),
so a mutation of one field leaves the rest of the request good and the parser has to get past
the envelope to meet the bad value. `Raw` marks a spot where `dumps` writes bytes verbatim:
invalid UTF-8 inside a string, a raw NUL, `NaN`, `1e400`, a 400-digit integer, 5,000 brackets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cramjam
import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from formats.base import ParseContext
from formats.loki import PushRequest

RECEIVED_AT_NS = 1_705_320_000 * 10**9  # 2024-01-15T12:00:00Z, near the templates' own times


@dataclass(frozen=True)
class Raw:
    """Bytes written into the JSON text as they are (a value, or a key when they are a string token)."""

    data: bytes


@dataclass(frozen=True)
class Template:
    parser: str  # key of formats.PARSERS
    content_type: str
    doc: Any = None  # a JSON document, or None when `text` is the body
    text: bytes = b""
    query: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def body(self) -> bytes:
        return self.text if self.doc is None else dumps(self.doc)

    def ctx(self, received_at_ns: int = RECEIVED_AT_NS) -> ParseContext:
        return ParseContext(
            received_at_ns=received_at_ns, path=self.path, content_type=self.content_type, query=self.query
        )


def dumps(doc: Any) -> bytes:
    """orjson, except that every `Raw` (as a value or a dict key) is written verbatim, as are huge ints."""
    planted: list[bytes] = []

    def swap(value: Any) -> Any:
        if isinstance(value, int) and not -(2**63) <= value < 2**64:  # past what orjson writes
            value = Raw(str(value).encode())
        if isinstance(value, Raw):
            planted.append(value.data)
            return f"\u2063raw{len(planted) - 1}\u2063"
        if isinstance(value, dict):
            return {swap(k) if isinstance(k, Raw) else k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = orjson.dumps(swap(doc))
    for n, data in enumerate(planted):
        text = text.replace(orjson.dumps(f"\u2063raw{n}\u2063"), data, 1)
    return text


def loki_push_body(*entries: tuple[str, int, str]) -> bytes:
    """A snappy-compressed Loki PushRequest of one entry per stream: (labels, ns, line)."""
    request = PushRequest()
    for labels, ns, line in entries:
        entry = request.streams.add(labels=labels).entries.add(line=line)
        entry.timestamp.seconds, entry.timestamp.nanos = divmod(ns, 10**9)
        entry.structuredMetadata.add(name="trace_id", value="4bf92f35")
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def otlp_protobuf_body() -> bytes:
    """An ExportLogsServiceRequest of two records, as the SDK's protobuf exporter sends it."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name").value.string_value = "api"
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "app"
    first = scope_logs.log_records.add(time_unix_nano=1_705_312_200 * 10**9, severity_number=13)
    first.body.string_value = "disk 91% full"
    first.trace_id, first.span_id = bytes(range(16)), bytes(range(8))
    first.attributes.add(key="disk").value.kvlist_value.values.add(key="free").value.int_value = 9
    second = scope_logs.log_records.add(observed_time_unix_nano=1_705_312_201 * 10**9, severity_text="info")
    second.body.array_value.values.add().bytes_value = b"\x00\xff"
    return request.SerializeToString()


JSON = "application/json"
IDS = {"doubleValue": 1.5}
KV = {"key": "k", "value": {"stringValue": "v"}}
PROD = {"environment": "production"}

TEMPLATES: tuple[Template, ...] = (
    Template(
        "astralog",
        JSON,
        {
            "logs": [
                {
                    "project_id": "org-xyz",
                    "timestamp": "2024-05-31T15:30:45Z",
                    "level": "info",
                    "service": "api-gateway",
                    "message": "User logged in",
                    "metadata": {"user_id": 123, "ip": "1.1.1.1", "geo": {"country": "DE"}},
                },
                {
                    "project_id": "org-xyz",
                    "timestamp": 1717169445250,
                    "level": "ERROR",
                    "service": "billing",
                    "message": "card declined",
                },
            ]
        },
        path="/v1/drain",
    ),
    Template(
        "tg2g",
        JSON,
        {
            "source": "checkout-service",
            "entity": {"name": "checkout", "kind": "service", "tags": ["payments"], "team": "core"},
            "logs": [
                {
                    "message": "Payment processed",
                    "timestamp": "2024-01-15T10:30:00.123Z",
                    "level": "info",
                    "requestId": "req-1",
                    "traceId": "t-1",
                    "tags": ["pay"],
                    "region": "eu-west-1",
                    "amount": 12.5,
                },
                {"message": "retrying", "level": 40, "service": "worker", "extra": {"try": 2}},
            ],
        },
        path="/v1/logs",
    ),
    Template(
        "dynatrace",
        JSON,
        [
            {
                "content": "Exception: disk full",
                "log.source": "/var/log/syslog",
                "timestamp": "2022-01-17T22:12:31.0000",
                "severity": "error",
                "service.name": "api",
                "custom.attribute": "value",
            },
            {"message": "plain", "@timestamp": 1705312200000, "status": "WARN", "k8s": {"pod": "a"}},
        ],
        path="/api/v2/logs/ingest",
    ),
    Template(
        "dynatrace",
        "application/x-ndjson",
        None,
        b'{"content": "one", "timestamp": "Jan 15 10:30:00", "loglevel": "info"}\n'
        b'{"payload": {"a": 1}, "host.name": "h1"}\n',
        path="/api/v2/logs/ingest",
    ),
    Template(
        "dynatrace", "text/plain", None, b"2024-01-15 ERROR something broke\r\n", path="/api/v2/logs/ingest"
    ),
    Template(
        "goodlogs_logs",
        JSON,
        {
            "batch": [
                {
                    "severity": "error",
                    "message": "Checkout failed",
                    "timestamp": "2024-01-15T10:30:00Z",
                    "properties": {"service": "shop", "userId": "u1", "cart": {"items": 3}, "tags": ["a"]},
                },
                {"severity": "info", "message": "ok", "metadata": {"env": "prod"}, "context": {"x": 1}},
            ]
        },
        path="/v1/logs",
    ),
    Template(
        "goodlogs_events",
        JSON,
        {
            "batch": [
                {
                    "event": "signup",
                    "distinctId": "user_1",
                    "timestamp": "2024-01-15T10:30:00Z",
                    "properties": {"plan": "pro", "utm": {"source": "ad"}},
                },
                {"event": "page_view", "distinctId": 42, "path": "/home"},
            ]
        },
        path="/v1/events",
    ),
    Template(
        "timberlogs",
        JSON,
        {
            "logs": [
                {
                    "level": "info",
                    "message": "User signed in",
                    "source": "auth-service",
                    "environment": "production",
                    "userId": "user_123",
                    "data": {"method": "oauth", "nested": {"a": [1, 2]}},
                    "tags": ["auth", "login"],
                    "timestamp": 1705312200000,
                    "stepIndex": 3,
                },
                {
                    "level": "error",
                    "message": "db down",
                    "source": "api",
                    "environment": "staging",
                    "errorName": "ConnectionError",
                    "errorStack": "at connect (db.js:42)",
                },
            ]
        },
        path="/v1/logs",
    ),
    Template(
        "timberlogs",
        JSON,
        {
            "format": "open-board-log-0.1",
            "user_id": "user_abc",
            "source": "aac-app",
            "sessions": [
                {
                    "id": "sess_1",
                    "type": "log",
                    "started": "2024-01-15T10:00:00Z",
                    "events": [
                        {"id": "e1", "timestamp": "2024-01-15T10:05:00Z", "type": "button", "label": "I"},
                        {"id": "e2", "type": "utterance", "text": "I want juice", "buttons": [{"id": 1}]},
                        {"id": "e3", "type": "note", "text": "n", "author_name": "x"},
                    ],
                }
            ],
        },
        query=PROD,
        path="/v1/logs",
    ),
    Template(
        "timberlogs",
        "application/x-ndjson",
        None,
        b'{"level":"error","message":"Connection refused","source":"api","environment":"production"}\n'
        b'{"level":"info","message":"Request completed","source":"api","environment":"production"}',
        path="/v1/logs",
    ),
    Template(
        "timberlogs",
        "application/x-www-form-urlencoded",
        None,
        b'<165>1 2024-01-15T10:30:00.000Z myhost api 1234 ID47 [sd@1 k="v" q="a\\"b"] Connection refused\n'
        b"<34>Jan 15 10:30:00 myhost api[1234]: Connection refused\n"
        b"<14>2024-01-15T10:30:01Z host2 cron: tick",
        query={"format": "syslog", **PROD},
        path="/v1/logs",
    ),
    Template(
        "timberlogs",
        "text/plain",
        None,
        b"2024-01-15 10:30:00 ERROR Connection refused to database\n"
        b"2024-01-15T10:30:00.250Z [warning] Disk 91% full\n"
        b"01/15/2024 10:30:00 info: Retrying\nDEBUG cache miss\njust a message",
        query={"source": "nginx", **PROD},
        path="/v1/logs",
    ),
    Template(
        "timberlogs",
        "text/csv",
        None,
        b'level,message,source,timestamp,tags,data\nerror,"Connection refused, twice",api,1705312200000,'
        b'"a,b","{""k"": 1}"\ninfo,Request completed,api,1705312201000,,\n',
        query=PROD,
        path="/v1/logs",
    ),
    Template(
        "loki",
        JSON,
        {
            "streams": [
                {
                    "stream": {"service_name": "api", "level": "error", "env": "prod", "pod": "api-7"},
                    "values": [
                        ["1705312200000000000", "Connection refused"],
                        ["1705312201000000001", "retrying", {"trace_id": "abc", "attempt": "2"}],
                    ],
                },
                {
                    "labels": '{application="shop", severity="warning"}',
                    "entries": [{"ts": "2024-01-15T10:30:00.123456Z", "line": "legacy shape"}],
                },
            ]
        },
        path="/loki/api/v1/push",
    ),
    Template(
        "loki",
        "application/x-protobuf",
        None,
        loki_push_body(
            (
                '{job="varlogs", detected_level="warn", filename="/var/log/app.log"}',
                1705312200 * 10**9,
                "disk 91% full",
            ),
            ('{app="api"}', 1705312201 * 10**9 + 7, "ok"),
        ),
        path="/loki/api/v1/push",
    ),
    Template(
        "es_bulk",
        "application/x-ndjson",
        None,
        b'{"index": {"_index": "logs-app", "_id": "1"}}\n'
        b'{"@timestamp": "2024-01-15T10:30:00.123Z", "message": "Connection refused",'
        b' "log": {"level": "error", "logger": "db"}, "service": {"name": "api"},'
        b' "host": {"name": "h1"}, "user": {"id": 7}}\n'
        b'{"create": {}}\n'
        b'{"@timestamp": 1705312200000, "msg": "retrying", "level": "warn", "tags": ["a"]}\n',
        path="/logs-app/_bulk",
    ),
    Template(
        "hec_event",
        "",
        None,
        b'{"time": 1705312200.25, "host": "web-3", "source": "app.py", "sourcetype": "_json",'
        b' "index": "main", "event": "Connection refused"}'
        b'{"event": {"message": "retrying", "log_level": "WARNING", "try": 2},'
        b' "fields": {"service": "api", "region": "eu"}}\n{"time": "1705312201", "event": {"k": [1, 2]}}',
        path="/services/collector/event",
    ),
    Template(
        "hec_raw",
        "text/plain",
        None,
        b"2024-01-15 10:30:00 ERROR Connection refused\r\nsecond line\n",
        query={"sourcetype": "syslog", "host": "h1", "index": "main"},
        path="/services/collector/raw",
    ),
    Template(
        "otlp",
        JSON,
        {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [
                            {"key": "service.name", "value": {"stringValue": "api"}},
                            {"key": "host.name", "value": {"stringValue": "h1"}},
                            {
                                "key": "k8s",
                                "value": {
                                    "kvlistValue": {
                                        "values": [{"key": "pod", "value": {"stringValue": "api-7"}}]
                                    }
                                },
                            },
                        ]
                    },
                    "scopeLogs": [
                        {
                            "scope": {"name": "app.db", "version": "1.2"},
                            "logRecords": [
                                {
                                    "timeUnixNano": "1705312200000000000",
                                    "severityNumber": 17,
                                    "severityText": "ERROR",
                                    "body": {"stringValue": "Connection refused"},
                                    "traceId": "5b8efff798038103d269b633813fc60c",
                                    "spanId": "eee19b7ec3c1b174",
                                    "attributes": [
                                        {"key": "attempt", "value": {"intValue": "2"}},
                                        {"key": "ok", "value": {"boolValue": False}},
                                        {
                                            "key": "ids",
                                            "value": {"arrayValue": {"values": [{"doubleValue": 1.5}]}},
                                        },
                                    ],
                                },
                                {
                                    "observedTimeUnixNano": 1705312201000000000,
                                    "severityText": "warn",
                                    "body": {
                                        "kvlistValue": {
                                            "values": [{"key": "k", "value": {"stringValue": "v"}}]
                                        }
                                    },
                                },
                            ],
                        }
                    ],
                }
            ]
        },
        path="/v1/logs",
    ),
    Template("otlp", "application/x-protobuf", None, otlp_protobuf_body(), path="/v1/logs"),
)

# Values that have broken (or could break) a parser somewhere: wrong types, extremes, odd times.
NASTY_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    1e308,
    -1e-308,
    0.5,
    [],
    {},
    [None],
    {"": None},
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ufeff",
    "²",
    "١٢٣",
    "😀",
    "\u202e",
    "{}",
    "[]",
    "null",
    "NaN",
    "-",
)
NASTY_RAW: tuple[bytes, ...] = (
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"1" + b"0" * 400,
    b"-0",
    b"0.0000000000000000000000000001",
    b'"\xff\xfe"',
    b'"\xc3"',
    b'"\xed\xa0\x80"',  # a UTF-8-encoded surrogate
    b'"\\ud800"',
    b'"a\x00b"',
    b'"\\u0000"',
    b'"\x1f"',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 300 + b"1" + b"}" * 300,
)
ODD_TIMES: tuple[Any, ...] = (
    0,
    1,
    -1,
    1705312200,
    1705312200.5,
    1705312200123,
    1705312200123456,
    1705312200123456789,
    99999999999,
    100000000000,
    10**17,
    10**19,
    2**63 - 1,
    4_102_444_800_000,
    4_102_444_800_001,
    1e20,
    -1e-300,
    "0",
    "-5",
    "1705312200000",
    "1705312200.5",
    "1e12",
    "0x10",
    "2024-02-30T00:00:00Z",
    "2024-01-15T10:30:00+25:00",
    "2024-01-15T10:30:00.1234567890Z",
    "2024-01-15T24:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00",
    "1969-12-31T23:59:59.999999Z",
    "2100-01-01T00:00:00.000001Z",
    "2024-W03-1",
    "2024-015",
    "20240115T103000Z",
    "Jan 15 10:30:00",
    "Feb 29 10:30:00",
    "Jan 32 25:61:61",
    "01/15/2024 10:30:00",
    "13/45/2024 99:99:99",
    "¹⁷⁰⁵³¹²²⁰⁰",
    "١٧٠٥٣١٢٢٠٠",
    " 2024-01-15T10:30:00Z ",
    "2024-01-15T10:30:00Z\x00",
)
