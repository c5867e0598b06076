"""Bad input at scale: property tests over every parser, the body decoder, the HTTP layer and the store.

Whatever a client sends, a parser returns rows that fit their table or raises `ParseError`
(tests/fuzz/contract.py), the gateway answers below 500 in its dialect's JSON, and rows the
gateway accepted are parsed again by the worker and stored by ClickHouse (the engine, not a
model of it, decides whether a value fits a column).

Runs fast by default. `HYPOTHESIS_PROFILE=fuzz` selects the long run (`make fuzz`); add
`--hypothesis-show-statistics` to see how many inputs each test tried.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from types import FrameType
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from yarl import URL

from formats import PARSERS, ParseContext, Parsed, ParseError
from gateway.body import BodyError, decompress
from gateway.dialects.otlp import Status
from schemas import rows as row_codec
from schemas.envelope import Envelope, encode
from schemas.record import EVENTS_TABLE, LOGS_TABLE
from tests.bodies import compress
from tests.conftest import Stack, Tenant
from tests.fuzz.contract import ContractViolation, check
from tests.fuzz.corpus import (
    NASTY_RAW,
    NASTY_VALUES,
    ODD_TIMES,
    RECEIVED_AT_NS,
    TEMPLATES,
    Raw,
    Template,
    dumps,
)
from workers.steps import Decoded, TableBatch, decode_envelope, insert_table
from workers.steps.enrich import line_of

# -- profiles ------------------------------------------------------------------------------------

_COMMON: dict[str, Any] = {
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    "print_blob": True,
}
# A parser call is pure CPU on at most ~2 MB: ten seconds (on a loaded CI box) mean something loops.
settings.register_profile("fuzz-quick", max_examples=60, deadline=timedelta(seconds=10), **_COMMON)
settings.register_profile("fuzz", max_examples=1000, deadline=timedelta(seconds=10), **_COMMON)
PROFILE = "fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "fuzz-quick"
_BASE = settings.get_profile(PROFILE)
PARSER_SETTINGS = settings(_BASE)
# Through HTTP (and Kafka, and the worker) an input costs far more than a parser call.
# No "explain" phase there: it replays a failure dozens of times through the whole pipeline.
_NO_EXPLAIN = tuple(p for p in Phase if p != Phase.explain)
HTTP_SETTINGS = settings(
    _BASE, max_examples=max(30, _BASE.max_examples // 8), deadline=None, phases=_NO_EXPLAIN
)
STORE_SETTINGS = settings(
    _BASE, max_examples=max(20, _BASE.max_examples // 10), deadline=None, phases=_NO_EXPLAIN
)

NAMES = sorted(PARSERS)
HANG_S = 30


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt a call that runs away (hypothesis' deadline only judges calls that return)."""

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_parser(name: str, body: bytes, ctx: ParseContext) -> Parsed | ParseError:
    with time_limit(HANG_S):
        return check(name, body, ctx)


# -- strategies ----------------------------------------------------------------------------------

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "text/plain",
    "text/plain; charset=latin-1",
    "application/x-ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "text/csv",
    "text/tab-separated-values",
    "application/x-syslog",
    "application/x-obl",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    ";",
    "",
]
FORMATS = ["json", "jsonl", "syslog", "text", "csv", "obl", "JSON", " csv ", "xml", ""]
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
content_types = st.sampled_from(CONTENT_TYPES) | header_text
query_values = st.sampled_from([*FORMATS, "production", "staging", "info", "warn", "api"]) | st.text(
    max_size=12
)
queries = st.dictionaries(
    st.sampled_from(["format", "source", "environment", "level", "dataset", "x"]), query_values, max_size=4
)
contexts = st.builds(
    lambda ct, q, path: ParseContext(received_at_ns=RECEIVED_AT_NS, path=path, content_type=ct, query=q),
    content_types,
    queries,
    st.sampled_from(["/v1/logs", "/v1/drain", "/v1/events", "/api/v2/logs/ingest", ""]),
)

KEYS = [
    "logs", "batch", "message", "content", "severity", "level", "timestamp", "source", "service",
    "environment", "entity", "name", "kind", "tags", "properties", "metadata", "context", "event",
    "distinctId", "data", "userId", "requestId", "stepIndex", "project_id", "format", "sessions",
    "events", "type", "label", "text", "status", "service.name", "@timestamp", "log.source",
]  # fmt: skip
keys = st.sampled_from(KEYS) | st.text(max_size=10)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(NASTY_VALUES)
    | st.sampled_from(ODD_TIMES)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)


def deep(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for n in range(depth):
        value = {"k": value} if n % 2 else [value]
    return value


long_strings = st.builds(
    lambda n, ch: ch * n,
    st.sampled_from([100, 101, 1000, 10_000, 10_001, 32_769, 65_537, 200_000]),
    st.sampled_from(["x", "é", "😀", "\x00", "\n", "\\"]),
)
wide_objects = st.builds(
    lambda n, nest: {f"k{i}": ({"v": i} if nest else i) for i in range(n)},
    st.sampled_from([20, 499, 501, 1001]),
    st.booleans(),
)
# Values that break parsers: wrong types, extremes, NaN/inf and invalid UTF-8 as raw JSON text,
# deep nesting (Python objects up to orjson's 255 levels; deeper as raw brackets), long strings.
json_nasty = (  # what a JSON document can say
    st.sampled_from(NASTY_VALUES)
    | st.sampled_from(ODD_TIMES)
    | st.integers(1, 250).map(deep)
    | long_strings
    | wide_objects
    | json_values
)
nasty = json_nasty | st.sampled_from(NASTY_RAW).map(Raw)
json_nasty_keys = (
    st.sampled_from(["", " ", "a.b", "\x00", "data.k", "_event_id", "k" * 200, "é" * 40, "message", "level"])
    | keys
)
nasty_keys = json_nasty_keys | st.sampled_from([b'"\xff"', b'"\x00"', b'"\\ud83d"']).map(Raw)
TIME_KEYS = frozenset({"timestamp", "@timestamp", "time", "ts", "started", "date", "eventtime"})


def mutate(data: st.DataObject, value: Any) -> Any:
    """One edit somewhere in the document: replace, delete, add a key, repeat an item, or go deeper."""
    if isinstance(value, dict) and value:
        key = data.draw(st.sampled_from(sorted(value, key=repr)))
        action = data.draw(st.sampled_from(["replace", "delete", "add", "descend", "descend", "descend"]))
        edited = dict(value)
        if action == "replace":
            edited[key] = data.draw(st.sampled_from(ODD_TIMES) if key in TIME_KEYS else nasty)
        elif action == "delete":
            del edited[key]
        elif action == "add":
            edited[data.draw(nasty_keys)] = data.draw(nasty)
        else:
            edited[key] = mutate(data, value[key])
        return edited
    if isinstance(value, list) and value:
        i = data.draw(st.integers(0, len(value) - 1))
        action = data.draw(st.sampled_from(["replace", "delete", "repeat", "descend", "descend"]))
        out = list(value)
        if action == "replace":
            out[i] = data.draw(nasty)
        elif action == "delete":
            del out[i]
        elif action == "repeat":  # past the batch limits: 100 (Timberlogs), 500 (GoodLogs)
            times = data.draw(st.sampled_from([1, 99, 100, 499, 500]))
            # At most ~2 MB in all: 500 copies of a 200 KB string only time the JSON writer.
            out.extend([value[i]] * min(times, max(1, 2_000_000 // len(dumps(value[i])))))
        else:
            out[i] = mutate(data, value[i])
        return out
    return data.draw(nasty)


FRAGMENTS = [
    b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"\n", b"\r\n", b'"', b",", b"\t", b"<", b">",
    b"[", b"]", b"=", b"\\", b"-", b" ", b":", b"\xef\xbb\xbf", b"<191>", b"<192>", b"<9999>", b"1 ",
    b"2024-13-45 25:61:61", b"02/30/2024 10:00:00", b"Feb 29 10:30:00", b"9999-12-31T23:59:59Z",
    b'[a k="\\]"]', b"x" * 10_001, b'"' * 3, b"message,message\n",
]  # fmt: skip


def mutate_text(data: st.DataObject, body: bytes) -> bytes:
    """Bytes cut out of and spliced into a text body (syslog, text, CSV, JSON lines)."""
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body)))
        cut = data.draw(st.integers(0, 6))
        piece = data.draw(st.sampled_from(FRAGMENTS) | st.binary(max_size=8))
        body = body[:at] + piece + body[at + cut :]
    if data.draw(st.booleans()):
        lines = body.split(b"\n")
        body = b"\n".join(lines * data.draw(st.sampled_from([1, 2, 60, 101])))
    return body


def near_valid_body(data: st.DataObject, template: Template, extra_only: bool = False) -> bytes:
    """A template broken in one to three places; with `extra_only`, only odd fields added to each item.

    Every dialect keeps fields it does not know (as attributes), so the second kind is mostly
    accepted: it carries NULs, long strings, wide and deep objects and odd keys to the store.
    """
    if template.doc is None:
        return mutate_text(data, template.text)
    if extra_only:
        return dumps(with_extra_fields(data, template.doc))
    doc = template.doc
    for _ in range(data.draw(st.integers(1, 3))):
        doc = mutate(data, doc)
    return dumps(doc)


def with_extra_fields(data: st.DataObject, value: Any, in_list: bool = False) -> Any:
    if isinstance(value, dict):
        out = {k: with_extra_fields(data, v) for k, v in value.items()}
        if in_list:  # an item of a batch (a log, an event); valid JSON only, so the body stays good
            out.setdefault(data.draw(json_nasty_keys), data.draw(json_nasty))
        return out
    if isinstance(value, list):
        return [with_extra_fields(data, v, in_list=True) for v in value]
    return value


def near_valid_ctx(data: st.DataObject, template: Template) -> ParseContext:
    ctx = template.ctx()
    if data.draw(st.integers(0, 4)) == 0:
        ctx = replace(ctx, content_type=data.draw(content_types), query=data.draw(queries))
    return ctx


def templates_of(name: str) -> list[Template]:
    return [t for t in TEMPLATES if t.parser == name]


# -- parsers -------------------------------------------------------------------------------------


def test_every_parser_has_a_template() -> None:
    """The structure-aware tests below start from a valid request of every registered parser."""
    assert sorted({t.parser for t in TEMPLATES}) == NAMES
    for template in TEMPLATES:
        result = check(template.parser, template.body(), template.ctx())
        assert isinstance(result, Parsed) and result.rows and not result.rejected, template


@pytest.mark.parametrize("name", NAMES)
@PARSER_SETTINGS
@given(body=st.binary(max_size=2000), ctx=contexts)
@example(body=b"<13>1 2024-01-15T10:30:00Z h a p m [x", ctx=ParseContext(RECEIVED_AT_NS))
def test_arbitrary_bytes(name: str, body: bytes, ctx: ParseContext) -> None:
    run_parser(name, body, ctx)


@pytest.mark.parametrize("name", NAMES)
@PARSER_SETTINGS
@given(
    doc=json_values, wrap=st.sampled_from(["bare", "logs", "batch", "array", "obl", "lines"]), ctx=contexts
)
def test_arbitrary_json(name: str, doc: Any, wrap: str, ctx: ParseContext) -> None:
    wrapped = {
        "bare": doc,
        "logs": {"logs": [doc]},
        "batch": {"batch": [doc]},
        "array": [doc, doc],
        "obl": {"format": "open-board-log-0.1", "sessions": [{"events": [doc]}]},
        "lines": None,
    }[wrap]
    body = dumps(doc) + b"\n" + dumps(doc) if wrap == "lines" else dumps(wrapped)
    run_parser(name, body, ctx)


@pytest.mark.parametrize("name", NAMES)
@PARSER_SETTINGS
@given(data=st.data())
def test_near_valid_bodies(name: str, data: st.DataObject) -> None:
    """A valid request of the dialect with one to three fields broken, in every way we could think of."""
    template = data.draw(st.sampled_from(templates_of(name)))
    run_parser(name, near_valid_body(data, template), near_valid_ctx(data, template))


@pytest.mark.parametrize("name", NAMES)
@PARSER_SETTINGS
@given(data=st.data())
def test_other_dialects_bodies(name: str, data: st.DataObject) -> None:
    """Three dialects share `POST /v1/logs`: every parser meets the others' (broken) requests too."""
    template = data.draw(st.sampled_from([t for t in TEMPLATES if t.parser != name]))
    run_parser(name, near_valid_body(data, template), near_valid_ctx(data, template))


# -- the body decoder ----------------------------------------------------------------------------

ENCODINGS = ["gzip", "x-gzip", "deflate", "zlib", "zstd", "snappy", "lz4"]


def corrupt(data: st.DataObject, packed: bytes) -> bytes:
    how = data.draw(st.sampled_from(["truncate", "flip", "append", "prefix", "random"]))
    if how == "truncate":
        return packed[: data.draw(st.integers(0, max(0, len(packed) - 1)))]
    if how == "flip":
        at = data.draw(st.integers(0, len(packed) - 1))
        return packed[:at] + bytes([packed[at] ^ data.draw(st.integers(1, 255))]) + packed[at + 1 :]
    if how == "append":
        return packed + data.draw(st.binary(min_size=1, max_size=16))
    if how == "prefix":  # a valid magic number, then garbage
        return (
            data.draw(
                st.sampled_from(
                    [
                        b"\x1f\x8b\x08\x00",
                        b"\x28\xb5\x2f\xfd",
                        b"\x78\x9c",
                        b"\x04\x22\x4d\x18",
                        b"\xff\x06\x00\x00sNaPpY",
                    ]
                )
            )
            + packed
        )
    return data.draw(st.binary(max_size=64))


@PARSER_SETTINGS
@given(data=st.data(), body=st.binary(max_size=3000), encoding=st.sampled_from(ENCODINGS))
def test_decompress_gives_bytes_or_a_client_error(data: st.DataObject, body: bytes, encoding: str) -> None:
    packed = compress(body, encoding, raw_deflate=data.draw(st.booleans()))
    limit = 1000
    if data.draw(st.booleans()):
        packed = corrupt(data, packed)
    else:
        try:
            plain = decompress(packed, encoding, limit)
        except BodyError as exc:
            assert (exc.status, exc.code) == (413, "body_too_large") and len(body) > limit
        else:
            assert plain == body
        return
    with time_limit(HANG_S):
        try:
            plain = decompress(packed, encoding, limit)
        except BodyError as exc:
            assert exc.status in (400, 413) and exc.message
        else:
            assert isinstance(plain, bytes) and len(plain) <= limit


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_empty_body_compressed_is_an_empty_body(encoding: str) -> None:
    """Found by the test above: an empty gzip/deflate stream was refused as 'truncated'."""
    assert decompress(compress(b"", encoding), encoding, 1000) == b""
    # gzip members, zstd and lz4 frames and snappy streams follow one another; a zlib
    # stream (`deflate` or `zlib`) ends where it ends.
    two = decompress(compress(b"", encoding) + compress(b"ab", encoding), encoding, 1000)
    assert two == (b"" if encoding in ("deflate", "zlib") else b"ab")


# -- through the real gateway --------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    path: str
    dialects: tuple[str, ...]  # parsers whose requests are sent here
    auths: tuple[str, ...]  # how the key travels


ENDPOINTS = (
    Endpoint("/v1/drain", ("astralog",), ("raw", "bearer")),
    Endpoint("/v1/logs", ("tg2g", "goodlogs_logs", "timberlogs", "otlp"), ("tg2g", "bearer", "x-api-key")),
    Endpoint("/v1/events", ("goodlogs_events",), ("bearer",)),
    Endpoint("/api/v2/logs/ingest", ("dynatrace",), ("api-token", "bearer", "query")),
    Endpoint("/loki/api/v1/push", ("loki",), ("basic", "bearer")),
    Endpoint("/logs-app/_bulk", ("es_bulk",), ("apikey", "basic", "bearer")),
    Endpoint("/services/collector/event", ("hec_event",), ("splunk", "basic")),
    Endpoint("/services/collector/raw", ("hec_raw",), ("splunk", "basic")),
)
AUTH_OF = {
    "astralog": "raw",
    "tg2g": "tg2g",
    "goodlogs_logs": "bearer",
    "goodlogs_events": "bearer",
    "timberlogs": "x-api-key",
    "dynatrace": "api-token",
    "loki": "basic",
    "es_bulk": "apikey",
    "hec_event": "splunk",
    "hec_raw": "splunk",
    "otlp": "bearer",
}
SUCCESS = {
    "/v1/drain": {200},
    "/v1/logs": {200, 202},
    "/v1/events": {202},
    "/api/v2/logs/ingest": {200, 204},
    "/loki/api/v1/push": {204},
    "/logs-app/_bulk": {200},
    "/services/collector/event": {200},
    "/services/collector/raw": {200},
}
# Where the parser of an endpoint's 2xx cannot be told from the answer: (parser, its Content-Type).
PARSER_OF_PATH = {
    "/v1/drain": "astralog",
    "/api/v2/logs/ingest": "dynatrace",
    "/loki/api/v1/push": "loki",
    "/services/collector/event": "hec_event",
    "/services/collector/raw": "hec_raw",
    "/v1/logs": "otlp",  # the other /v1/logs APIs answer with their counts
}


def error_shape(path: str, status: int, body: Any) -> str:
    """Which dialect's error body this is ('' when it is none of the ones `path` may answer with)."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if path == "/v1/drain":
        ok = body.get("status") == "error" and isinstance(body.get("error"), str) and "code" in body
        return "astralog" if ok else ""
    if path == "/api/v2/logs/ingest":
        ok = isinstance(error, dict) and error.get("code") == status and isinstance(error.get("message"), str)
        return "dynatrace" if ok else ""
    if path == "/v1/logs" and isinstance(body.get("code"), int) and isinstance(body.get("message"), str):
        return "otlp"  # google.rpc.Status, JSON
    if path.startswith("/services/collector/"):
        ok = isinstance(body.get("text"), str) and isinstance(body.get("code"), int) and body["code"] != 0
        return "hec" if ok else ""
    if path.endswith("/_bulk"):
        ok = body.get("status") == status and isinstance(error, dict) and isinstance(error.get("reason"), str)
        return "es_bulk" if ok and isinstance(error.get("root_cause"), list) else ""
    if (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    ):
        return "tg2g/goodlogs"  # the same `{"error": {"code", "message"}}` envelope
    if path == "/v1/logs" and isinstance(error, str) and (status == 401 or isinstance(body.get("code"), str)):
        return "timberlogs"
    return ""


@dataclass(frozen=True)
class Request:
    endpoint: Endpoint
    dialect: str
    auth: str
    plain: bytes  # the body before Content-Encoding
    wire: bytes
    encoding: str | None
    intact: bool  # the wire bytes decode to `plain` (no corruption)
    content_type: str | None
    query: str  # already percent-encoded


RAW_QUERIES = ["format=%FF", "format=%ED%A0%80", "source=%00", "level=%", "format=json&format=csv", "=&&="]


@st.composite
def requests(draw: st.DrawFn) -> Request:
    endpoint = draw(st.sampled_from(ENDPOINTS))
    dialect = draw(st.sampled_from(endpoint.dialects))
    data = draw(st.data())
    kind = draw(st.sampled_from(["near-valid", "near-valid", "extra", "extra", "valid", "bytes", "json"]))
    template = draw(st.sampled_from(templates_of(dialect)))
    if kind == "valid":
        plain = template.body()
    elif kind in ("near-valid", "extra"):
        plain = near_valid_body(data, template, extra_only=kind == "extra")
    elif kind == "bytes":
        plain = draw(st.binary(max_size=500))
    else:
        plain = dumps(draw(json_values))
    own_type = draw(st.integers(0, 3)) > 0  # mostly the dialect's own (None: aiohttp's octet-stream)
    content_type = draw(st.sampled_from([template.content_type, None]) if own_type else content_types)
    pairs = dict(template.query)
    pairs.update(draw(queries) if draw(st.integers(0, 3)) == 0 else {})
    query = str(URL.build(query=pairs).raw_query_string)
    if draw(st.integers(0, 9)) == 0:
        query = "&".join(filter(None, [query, draw(st.sampled_from(RAW_QUERIES))]))
    encoding = draw(st.sampled_from([None, None, None, "identity", *ENCODINGS, "br", "gzip, zstd", "GZIP"]))
    wire, intact = plain, True
    if encoding is not None:
        wire = compress(plain, encoding.lower(), raw_deflate=draw(st.booleans()))
        if encoding.lower() in ENCODINGS and draw(st.integers(0, 2)) == 0:
            wire, intact = corrupt(data, wire), False
    # Mostly the way the dialect's own clients send the key (on /v1/logs it picks the dialect).
    auth = draw(st.sampled_from([AUTH_OF[dialect], AUTH_OF[dialect], *endpoint.auths]))
    return Request(endpoint, dialect, auth, plain, wire, encoding, intact, content_type, query)


def auth_headers(request: Request, key: str) -> tuple[dict[str, str], str]:
    """(headers, extra query) carrying `key` the way `request.auth` says."""
    return {
        "raw": ({"Authorization": key}, ""),
        "bearer": ({"Authorization": f"Bearer {key}"}, ""),
        "tg2g": ({"X-TG2G-Api-Key": key}, ""),
        "x-api-key": ({"X-API-Key": key}, ""),
        "api-token": ({"Authorization": f"Api-Token {key}"}, ""),
        "query": ({}, f"api-token={key}"),
        "basic": ({"Authorization": "Basic " + base64.b64encode(f"loki:{key}".encode()).decode()}, ""),
        "apikey": ({"Authorization": "ApiKey " + base64.b64encode(f"id:{key}".encode()).decode()}, ""),
        "splunk": ({"Authorization": f"Splunk {key}"}, ""),
    }[request.auth]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz_tenant(stack: Stack) -> Tenant:
    return await stack.tenant(f"fuzz-{uuid.uuid4().hex[:8]}")


def expected_rows(request: Request, status: int, body: Any) -> int | None:
    """How many rows the worker should store for an accepted request (None: the answer cannot say)."""
    if isinstance(body, dict) and isinstance(body.get("items"), list):  # Elasticsearch: 201 per stored item
        return sum(1 for item in body["items"] for answer in item.values() if answer.get("status") == 201)
    if isinstance(body, dict):
        for field in ("accepted", "count"):  # TG2G and GoodLogs, Timberlogs
            if isinstance(body.get(field), int):
                return int(body[field])
    if not request.intact:
        return None
    # aiohttp labels a bytes body application/octet-stream when no Content-Type is given.
    path, ctype = request.endpoint.path, request.content_type or "application/octet-stream"
    ctx = ParseContext(received_at_ns=time.time_ns(), path=path, content_type=ctype, query={})
    parsed = PARSERS[PARSER_OF_PATH[path]](request.plain, ctx)
    return len(parsed.rows)


async def stored(stack: Stack, project: str, table: str, request_id: str, expected: int) -> int:
    """Rows of one request in ClickHouse, once there are `expected` of them or 20 s have passed."""
    sql = f"SELECT count() FROM {table} WHERE project = {{p:String}} AND ingest_id = {{id:String}}"
    deadline = time.monotonic() + 20
    count = 0
    while time.monotonic() < deadline:
        count = int((await asyncio.to_thread(stack.query, sql, p=project, id=request_id))[0][0])
        if count >= expected:
            return count
        await asyncio.sleep(0.05)
    return count


@pytest.mark.integration
@HTTP_SETTINGS
@given(request=requests())
async def test_http_layer_answers_in_dialect_and_stores_what_it_accepts(
    stack: Stack, fuzz_tenant: Tenant, request: Request
) -> None:
    headers, auth_query = auth_headers(request, fuzz_tenant.key)
    if request.content_type is not None:
        headers["Content-Type"] = request.content_type
    if request.encoding is not None:
        headers["Content-Encoding"] = request.encoding
    query = "&".join(filter(None, [request.query, auth_query]))
    url = URL(f"{stack.url}{request.endpoint.path}" + (f"?{query}" if query else ""), encoded=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with stack.session.post(url, data=request.wire, headers=headers, timeout=timeout) as resp:
        status, raw, resp_headers = resp.status, await resp.read(), resp.headers.copy()
    event(f"{request.endpoint.path} {status}")
    assert status < 500, (status, raw[:500])
    path = request.endpoint.path
    if path == "/loki/api/v1/push":  # Loki answers in plain text, 204 with none
        if status >= 400:
            assert resp_headers.get("Content-Type", "").startswith("text/plain"), resp_headers
            assert raw.endswith(b"\n") and len(raw) > 1, raw
            return
        assert (status, raw) == (204, b"")
    if resp_headers.get("Content-Type", "").startswith("application/x-protobuf"):  # OTLP, protobuf
        assert path == "/v1/logs"
        if status >= 400:
            assert Status.FromString(raw).message, raw
            return
        ExportLogsServiceResponse.FromString(raw)
        body = None
    else:
        body = None if path == "/loki/api/v1/push" or not raw else orjson.loads(raw)
    if status >= 400:
        assert resp_headers.get("Content-Type", "").startswith("application/json"), resp_headers
        assert error_shape(path, status, body), (status, body)
        if request.auth == "tg2g":  # the TG2G header decides the dialect on /v1/logs
            assert error_shape(path, status, body) == "tg2g/goodlogs", body
        return
    assert status in SUCCESS[path], (status, body)
    expected = expected_rows(request, status, body)
    table = EVENTS_TABLE if path == "/v1/events" else LOGS_TABLE
    request_id = resp_headers["X-Request-Id"]
    if expected is None:  # a corrupted raw-deflate stream can still inflate: to what, only the gateway knows
        return
    event("rows stored" if expected else "accepted, nothing to store")
    assert await stored(stack, fuzz_tenant.project, table, request_id, expected) == expected


# Bytes no HTTP client library sends. aiohttp hands undecodable header bytes on as surrogates;
# Content-Type and User-Agent travel on in the envelope (cleaned to UTF-8: see the test below).
RAW_HEADERS = [
    b"Content-Type: application/json; x=\xc3\xa9",
    b"Content-Type: application/json\x00",
    b'Content-Type: text/plain; charset="',
    b"Content-Encoding: gzip\xff",
    b"Content-Encoding: \xed\xa0\x80",
    b"User-Agent: Mozilla/5.0 \xf0\x9f\x98\x80",
    b"X-Forwarded-For: \xff, 1.2.3.4",
    b"X-TG2G-Api-Key: \xff",
    b"X-API-Key: \xc3",
    b"Transfer-Encoding: chunked",
    b"Content-Length: 5",
    b"Expect: 100-continue",
]
RAW_AUTH = [
    b"Authorization: Bearer %s",
    b"Authorization: %s",
    b"Authorization: Bearer \xc3%s",
    b"X-API-Key: %s",
]


async def send_raw(stack: Stack, request_line: bytes, headers: list[bytes], body: bytes) -> int | None:
    """Send bytes as they are; the status, or None when the server closed without an answer."""
    host, port = stack.url.removeprefix("http://").split(":")
    head = [request_line, b"Host: " + host.encode(), b"Content-Length: " + str(len(body)).encode()]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"\r\n".join([*head, *headers, b"Connection: close"]) + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]) if answer else None


@pytest.mark.integration
@HTTP_SETTINGS
@given(
    path=st.sampled_from([e.path for e in ENDPOINTS]),
    auth=st.sampled_from(RAW_AUTH),
    extra=st.lists(st.sampled_from(RAW_HEADERS) | st.binary(max_size=30), max_size=3),
    target=st.sampled_from([b"", b"?format=%FF", b"?format=\xff", b"?api-token=%ED%A0%80", b"?%", b"#x"]),
    body=st.sampled_from([t.body() for t in TEMPLATES]),
)
async def test_raw_header_bytes_are_never_a_server_error(
    stack: Stack, fuzz_tenant: Tenant, path: str, auth: bytes, extra: list[bytes], target: bytes, body: bytes
) -> None:
    """Header and query bytes no HTTP client library sends: an answer below 500, or a closed connection."""
    headers = [auth.replace(b"%s", fuzz_tenant.key.encode()), *extra]
    status = await send_raw(stack, b"POST " + path.encode() + target + b" HTTP/1.1", headers, body)
    event(f"status {status}")
    assert status is None or status < 500, status


@pytest.mark.integration
@pytest.mark.parametrize(
    "header", [b"Content-Type: application/json\xff", b"User-Agent: \xff\xfe Mozilla/5.0"]
)
async def test_header_bytes_that_are_not_utf8_are_not_a_server_error(
    stack: Stack, fuzz_tenant: Tenant, header: bytes
) -> None:
    auth = b"Authorization: " + fuzz_tenant.key.encode()
    status = await send_raw(stack, b"POST /v1/drain HTTP/1.1", [auth, header], TEMPLATES[0].body())
    assert status is not None and status < 500, status


# -- what the gateway accepts, the worker parses again and ClickHouse stores ---------------------

FUZZ_TABLES = {LOGS_TABLE: "fuzz_logs", EVENTS_TABLE: "fuzz_events"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz_tables(stack: Stack) -> dict[str, str]:
    """Copies of the real tables (same columns, types and engine) that no reader or watermark sees."""
    for table, copy in FUZZ_TABLES.items():
        await asyncio.to_thread(stack.client.command, f"CREATE TABLE IF NOT EXISTS {copy} AS {table}")
    return FUZZ_TABLES


@pytest.mark.integration
@STORE_SETTINGS
@given(data=st.data())
async def test_accepted_rows_go_through_the_worker_into_clickhouse(
    stack: Stack, fuzz_tables: dict[str, str], data: st.DataObject
) -> None:
    """Rows of an accepted near-valid body survive the envelope, the worker's steps and a real insert."""
    template = data.draw(st.sampled_from(NAMES).flatmap(lambda name: st.sampled_from(templates_of(name))))
    body = near_valid_body(data, template, extra_only=data.draw(st.integers(0, 2)) > 0)
    ctx = near_valid_ctx(data, template)
    ctx = replace(ctx, received_at_ns=time.time_ns())
    gateway_side = run_parser(template.parser, body, ctx)
    if not isinstance(gateway_side, Parsed) or not gateway_side.rows:
        event("refused, nothing to insert")
        return
    event(f"inserted into {gateway_side.table}")
    request_id = uuid.uuid4().hex
    envelope = Envelope(
        request_id=request_id,
        project="fuzz",
        key_id="k",
        dialect=template.parser,
        path=ctx.path,
        content_type=ctx.content_type,
        user_agent=data.draw(header_text),
        client_ip="203.0.113.7",
        received_at_ns=ctx.received_at_ns,
        body=row_codec.encode(gateway_side.rows),
        query=dict(ctx.query),
        table=gateway_side.table,
        rows=len(gateway_side.rows),
    )
    record = ConsumerRecord(
        topic="fuzz",
        partition=0,
        offset=1,
        timestamp=0,
        timestamp_type=0,
        key=None,
        value=encode(envelope),
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=0,
        headers=(),
    )
    worker_side = decode_envelope(record)
    batch = TableBatch(worker_side.table)
    batch.add(line_of(Decoded(worker_side, record)))
    table = fuzz_tables[worker_side.table]
    await asyncio.to_thread(insert_table, stack.client, batch, request_id, into=table)
    text = "message" if worker_side.table == LOGS_TABLE else "event"
    back = await asyncio.to_thread(
        stack.query,
        f"SELECT {text} FROM {table} WHERE ingest_id = {{id:String}} ORDER BY {text}",
        id=request_id,
    )
    assert [r[0] for r in back] == sorted(row[text] for row in gateway_side.rows)


def test_contract_check_catches_a_bad_row() -> None:
    """The checker itself fails on a row a parser must never return (so the fuzz tests can fail)."""
    original = PARSERS["astralog"]

    def broken(body: bytes, ctx: ParseContext) -> Parsed:
        return Parsed(rows=[{"timestamp": 1, "level": "info", "severity_number": 9, "message": "\ud800"}])

    PARSERS["astralog"] = broken
    try:
        with pytest.raises(ContractViolation, match="UTF-8"):
            check("astralog", b"{}", ParseContext(RECEIVED_AT_NS))
    finally:
        PARSERS["astralog"] = original
