"""AstraLog bodies parsed by the engine are stored exactly as the Python parser stores them.

For a body the gateway marks `store_parses`, the worker hands the raw body to ClickHouse
(formats/astralog_store.py) instead of parsing it. Each test stores the same
body both ways into the real `logs` table (under two Kafka topic names) and compares
every column of every row. Bodies come from hypothesis around the edges of the shape
test (floats of every magnitude, 64-bit integers, Unicode and escapes, dotted and
repeated keys, level spellings, ISO variants) and from hand-written JSON whose spelling
the classifier never sees (repeated keys, "12.50", "1E1", "-0", pretty-printed bodies).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from datetime import datetime
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from formats import astralog, astralog_store
from formats.base import ParseContext, ParseError
from schemas.envelope import Envelope, decode, encode
from schemas.record import LEVEL_ALIASES, LOG_COLUMN_NAMES
from tests.bodies import astralog_record
from tests.conftest import Stack
from workers.pipeline import TableBatch, enrich_step, insert_table, parse_step

pytestmark = pytest.mark.integration

# `HYPOTHESIS_PROFILE=fuzz` (as for tests/test_fuzz.py) runs ten times more bodies.
EXAMPLES = 1500 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 150
COMPARED = [c for c in LOG_COLUMN_NAMES if c != "kafka_topic"]
USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/125.0 Safari/537.36"


def envelope_for(body: bytes) -> Envelope:
    ctx = ParseContext(received_at_ns=time.time_ns(), path="/v1/drain", content_type="application/json")
    checked = astralog.validate(body, ctx)
    return Envelope(
        request_id=uuid.uuid4().hex,
        project="store-parse",
        key_id="k",
        dialect="astralog",
        path="/v1/drain",
        content_type="application/json",
        user_agent=USER_AGENT,
        client_ip="198.51.100.7",
        received_at_ns=ctx.received_at_ns,
        body=body,
        store_parses=checked.store_parses,
        records=len(checked.rows),
    )


def record(topic: str, value: bytes, offset: int = 7) -> ConsumerRecord:
    return ConsumerRecord(topic, 3, offset, 0, 0, None, value, None, 0, len(value), [])


def stored(client: Client, topic: str) -> list[tuple[Any, ...]]:
    rows = client.query(
        f"SELECT {', '.join(COMPARED)} FROM logs WHERE kafka_topic = {{t:String}}", parameters={"t": topic}
    ).result_rows
    # Map key order is storage order; a dict compares by content, as readers see it.
    return sorted(tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v for v in row) for row in rows)


def both_ways(client: Client, body: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(rows the engine stored from the raw body, rows the Python parser stored)."""
    envelope = decode(encode(envelope_for(body)))
    assert envelope.store_parses
    run = uuid.uuid4().hex
    sql_topic, py_topic = f"sp-{run}-sql", f"sp-{run}-py"
    deferred = TableBatch.empty("logs")
    deferred.defer(envelope, record(sql_topic, body))
    insert_table(client, deferred, f"{sql_topic}-token")
    rows = TableBatch.empty("logs")
    enrich_step(envelope, parse_step(envelope), record(py_topic, body), rows)
    assert not rows.deferred
    insert_table(client, rows, f"{py_topic}-token")
    return stored(client, sql_topic), stored(client, py_topic)


# -- generated bodies ----------------------------------------------------------------------

FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),
    st.integers(-(10**15), 10**15).map(float),  # integral floats: "32.0"
    st.sampled_from([0.0, -0.0, 1e-4, 9.99e-5, 0.1, 123.456, 1e14, 999999999999999.9, 1e15, -1.0]),
)
SCALARS = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
    st.none(),
    FLOATS,
)
KEYS = st.one_of(st.text(max_size=6), st.sampled_from(["a", "a.b", "project_id", "http", "ts"]))
LEVELS = st.one_of(
    st.sampled_from(sorted(LEVEL_ALIASES)),
    st.sampled_from(sorted(LEVEL_ALIASES)).map(str.upper),
    st.sampled_from(["Info", "WaRn", "nonsense", " info", "info\t", "İNFO", "\u212aelvin", "x" * 40]),
    st.text(min_size=1, max_size=8),
)
TIMES = st.one_of(
    st.sampled_from(
        [
            "2024-05-31T15:30:45Z",
            "2024-05-31T15:30:45.1Z",
            "2024-05-31T15:30:45.123456789Z",
            "2024-05-31T15:30:45.9999999+05:30",
            "2024-05-31 15:30:45",
            "2024-05-31T15:30:45-23:59",
            "2024-12-31T23:59:59.999-00:30",
            "1971-01-01T00:00:00Z",
            "2098-12-31T23:59:59Z",
            "2024-05-31T15:30:45+0530",
            "2024-05-31",
            "2024-W22-5T15:30:45",
            "2024-05-31T15:30:45,123",
            "2024-05-31T15:30:45.123+05:30:15",
            "2024-05-31T15:30:45z",
            "2024-05-31T15:30",
            "2024-05-31T15:30:45.1234567890Z",
        ]
    ),
    st.datetimes(
        min_value=datetime(1972, 1, 1),
        max_value=datetime(2097, 12, 31),
    ).map(lambda d: d.isoformat() + "Z"),
)
TEXT = st.text(min_size=1, max_size=20)


@st.composite
def metadata(draw: st.DrawFn) -> dict[str, Any]:
    flat = st.dictionaries(KEYS, SCALARS, max_size=4)
    return draw(st.dictionaries(KEYS, st.one_of(SCALARS, SCALARS, flat), max_size=6))


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    logs = []
    for _ in range(draw(st.integers(1, 5))):
        item: dict[str, Any] = {
            "project_id": draw(TEXT),
            "timestamp": draw(TIMES),
            "level": draw(LEVELS),
            "service": draw(TEXT),
            "message": draw(TEXT),
        }
        choice = draw(st.integers(0, 3))
        if choice:
            item["metadata"] = draw(metadata()) if choice > 1 else None
        logs.append(item)
    return orjson.dumps({"logs": logs})


def ready(body: bytes) -> bool:
    try:
        return envelope_for(body).store_parses
    except ParseError:  # refused with 400 at the gateway: never reaches a worker
        return False


# Texts full of what JSON escapes and what the text test looks for.
JSONISH = st.text(alphabet=st.sampled_from('{}[]":,.\\/eE0-9 az\u00e9\U0001f600\n\t'), max_size=10)
QUICK_SCALARS = st.one_of(
    JSONISH,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),  # integral ones ("2.0") are flagged
)


@st.composite
def quick_bodies(draw: st.DrawFn) -> bytes:
    keys = st.one_of(JSONISH.filter(bool), st.sampled_from(["a", "a.b", "h", "project_id"]))
    inner = st.dictionaries(keys, QUICK_SCALARS, max_size=4)
    logs = [
        astralog_record(metadata=draw(st.dictionaries(keys, st.one_of(QUICK_SCALARS, inner), max_size=6)))
        for _ in range(draw(st.integers(1, 4)))
    ]
    doc = {"logs": logs}
    # Spelled by orjson, or by the standard library with spaces and \u escapes.
    if draw(st.booleans()):
        return orjson.dumps(doc)
    return json.dumps(doc, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1]))).encode()


@settings(
    max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(bodies(), quick_bodies()))
async def test_generated_bodies_store_the_same_rows(stack: Stack, body: bytes) -> None:
    if not ready(body):
        event("not store-parsed (the Python parser keeps it)")
        return
    event("store-parsed, quick metadata" if quick(body) else "store-parsed, exact metadata")
    by_engine, by_python = both_ways(stack.client, body)
    assert len(by_python) == len(orjson.loads(body)["logs"])
    assert by_engine == by_python


def test_the_common_shape_is_store_parsed() -> None:
    """The shape test admits what real traffic sends (else the fast path would never run)."""
    from bench import payloads

    body = payloads.bodies(payloads.DIALECTS["astralog"], 500, 1)[0]
    assert ready(body)
    assert ready(orjson.dumps({"logs": [{**LOG, "metadata": {"n": 32.0, "m": {"s": 200, "t": 0.25}}}]}))
    for unfit in (
        {**LOG, "metadata": {"tags": ["a", "b"]}},  # lists keep the Python parser
        {**LOG, "metadata": {"big": 1e20}},
        {**LOG, "timestamp": 1717169445},
        {**LOG, "level": " info"},
        {**LOG, "extra": "field"},
        {**LOG, "metadata": {"": "empty key"}},
        {**LOG, "metadata": {"d": {"e": -0.0}}},  # the engine drops the sign of a nested -0.0
    ):
        assert not ready(orjson.dumps({"logs": [LOG, unfit]})), unfit


LOG = astralog_record(timestamp="2024-05-31T15:30:45.250Z", level="WARN", service="api", message="hello")

# JSON spellings the gateway's shape test cannot see (it looks at decoded values).
RAW_BODIES = [
    # repeated metadata keys: the last value wins, as in a Python dict
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","metadata":{"a":1,"b":"x","a":"last","http":{"s":1,"s":2},"http.s":"flat"}}]}',
    # non-canonical numbers: stored as Python prints the decoded value
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","metadata":{"a":12.50,"b":1E1,"c":-0,"d":-1.0,"e":1.0e-1,"f":100,"g":{"h":2.50,"i":3E0}}}]}',
    # escapes in keys and values, pretty-printed over several lines, an extra top-level key
    b'{\n  "logs": [\n    {\n      "project_id": "p\\u00e9",\n      "timestamp": "2024-05-31T15:30:45Z",\n'
    b'      "level": "ERROR",\n      "service": "s\\/t",\n'
    b'      "message": "line\\nbreak \\ud83d\\ude00 \\u0000",\n'
    b'      "metadata": {"k\\u00e9y": "v\\"q\\"", "n": null, "t": true, "e": {}}\n'
    b'    }\n  ],\n  "next": 1\n}',
    # a repeated key whose values are objects: the last occurrence wins whole (no stray children)
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"1","metadata":{"a":"x","a":{"b":1}}},{"project_id":"p","timestamp":"2024-05-31T15:30:45Z",'
    b'"level":"info","service":"s","message":"2","metadata":{"a":{"b":1},"a":"x"}},{"project_id":"p",'
    b'"timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s","message":"3",'
    b'"metadata":{"a":{"b":1},"z":2.0,"a":{"c":2.5,"d":-0}}}]}',
    # metadata null and empty, several records, project_id inside metadata overridden
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"debug","service":"s",'
    b'"message":"1","metadata":null},{"project_id":"p","timestamp":"2024-05-31T15:30:46Z","level":"fatal",'
    b'"service":"s","message":"2","metadata":{}},{"project_id":"p2","timestamp":"2024-05-31T15:30:47Z",'
    b'"level":"info","service":"s","message":"3","metadata":{"project_id":"claimed"}}]}',
]


@pytest.mark.parametrize(
    "body", RAW_BODIES, ids=["repeated-keys", "number-spellings", "escapes", "repeated-objects", "nulls"]
)
async def test_raw_spellings_store_the_same_rows(stack: Stack, body: bytes) -> None:
    assert ready(body)
    by_engine, by_python = both_ways(stack.client, body)
    assert by_python and by_engine == by_python


# Bodies whose metadata the engine reads the quick way (one map of texts, no per-value
# functions): nothing in their source text is `_AMBIGUOUS`, and no key repeats.
QUICK_BODIES = [
    # escapes in keys and values, booleans, an empty object, spaces around the colons
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","metadata":{"k\\u00e9y" : "v\\"q\\"", "t": true, "f": false, "e": { },'
    b' "s": "\\u00e9\\ud83d\\ude00\\n\\t\\/\\\\", "n": -12, "x": 2.5, "z": 0.00012345}}]}',
    # nested objects with escapes and numbers; texts with braces and brackets not at the start
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","metadata":{"http":{"m":"G\\"ET","s":200,"k\\u00e9":"v","r":1.25},'
    b'"t":"a{b}","l":"[1,2]","c":"}","a:b":1,"c.d":"x","big":-9999999999999999}}]}',
    # pretty-printed over several lines
    b'{\n "logs": [\n  {\n   "project_id": "p",\n   "timestamp": "2024-05-31T15:30:45Z",\n'
    b'   "level": "info",\n   "service": "s",\n   "message": "m",\n'
    b'   "metadata": {\n    "a": 1,\n    "b": {\n     "c": "d"\n    }\n   }\n  }\n ]\n}',
]

# Look like the quick way's input but are not: each must take the exact way.
FLAGGED_BODIES = [
    # a text starting with a brace, plain and escaped: the map alone cannot tell it from an object
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","metadata":{"a":"{x","b":"\\u007by}","c":{"d":"{}"}}}]}',
    # an integral float in an object, a key repeated inside an object, a flattened name twice
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"1","metadata":{"h":{"s":200.0}}},{"project_id":"p","timestamp":"2024-05-31T15:30:45Z",'
    b'"level":"info","service":"s","message":"2","metadata":{"h":{"s":1,"s":2}}},{"project_id":"p",'
    b'"timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s","message":"3",'
    b'"metadata":{"h":{"s":1},"h.s":2}}]}',
    # fractions that round away: floats 1.0, 1.0 and 1e14, written as Python writes them ("1.0")
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","metadata":{"a":1.0000000000000000001,"h":{"x":0.99999999999999999},'
    b'"b":99999999999999.999}}]}',
]


def quick(body: bytes) -> bool:
    """Whether every record's metadata source text passes the quick way's text test."""
    text = body.decode()
    return not any(re.search(astralog_store._AMBIGUOUS, part) for part in text.split('"metadata"')[1:])


@pytest.mark.parametrize("body", QUICK_BODIES + FLAGGED_BODIES)
async def test_quick_and_exact_metadata_store_the_same_rows(stack: Stack, body: bytes) -> None:
    assert ready(body)
    by_engine, by_python = both_ways(stack.client, body)
    assert by_python and by_engine == by_python


def test_the_quick_bodies_are_quick_and_the_flagged_are_not() -> None:
    # Otherwise the test above would check the exact way twice and the quick way never.
    assert all(quick(b) for b in QUICK_BODIES)
    assert not any(quick(b) for b in FLAGGED_BODIES)
    # Without its integral float the second passes the text test: its repeated keys are the
    # key checks' to catch (the test above shows they do).
    assert quick(FLAGGED_BODIES[1].replace(b"200.0", b"200"))


async def test_a_body_the_engine_refuses_is_stored_as_rows(stack: Stack) -> None:
    """A repeated record key is valid JSON that Python reads (last wins) and the engine
    refuses: the insert fails, the worker builds the rows itself, nothing is lost."""
    body = (
        b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
        b'"message":"first","message":"second"}]}'
    )
    envelope = decode(encode(envelope_for(body)))
    assert envelope.store_parses
    topic = f"sp-{uuid.uuid4().hex}-refused"
    table = TableBatch.empty("logs")
    table.defer(envelope, record(topic, body))
    with pytest.raises(Exception, match="duplicate key"):
        insert_table(stack.client, table, f"{topic}-token")
    assert table.materialize() == []
    assert not table.deferred and table.rows == 1
    insert_table(stack.client, table, f"{topic}-token")
    messages = stack.query("SELECT message FROM logs WHERE kafka_topic = {t:String}", t=topic)
    assert messages == [("second",)]


async def test_a_large_batch_is_one_part(stack: Stack) -> None:
    """120 bodies (60,000 logs) in one `INSERT ... SELECT` land as one part, as a columnar
    insert does: a message's rows are never split over two parts (crash recovery relies on it)."""
    from bench import payloads

    topic = f"sp-{uuid.uuid4().hex}-large"
    table = TableBatch.empty("logs")
    for offset, body in enumerate(payloads.bodies(payloads.DIALECTS["astralog"], 500, 120)):
        envelope = decode(encode(envelope_for(body)))
        assert envelope.store_parses and envelope.records == 500
        table.defer(envelope, record(topic, body, offset))
    assert table.rows == table.deferred_rows == 60_000
    insert_table(stack.client, table, f"{topic}-token")
    assert stack.query(
        "SELECT count(), uniqExact(kafka_offset), uniqExact(_part) FROM logs WHERE kafka_topic = {t:String}",
        t=topic,
    ) == [(60_000, 120, 1)]


async def test_rows_and_bodies_in_one_batch_are_one_insert(stack: Stack) -> None:
    """A batch mixing store-parsed bodies with rows built in Python (another dialect, an
    AstraLog body of another shape) is one insert, one part, with the rows the Python
    parser gives for all of them."""
    from bench import payloads

    bodies = [
        ("astralog", payloads.bodies(payloads.DIALECTS["astralog"], 50, 1, seed=3)[0]),
        ("tg2g", payloads.bodies(payloads.DIALECTS["tg2g"], 40, 1, seed=4)[0]),
        ("astralog", orjson.dumps({"logs": [{**LOG, "metadata": {"tags": ["list", "keeps", "python"]}}]})),
        ("astralog", payloads.bodies(payloads.DIALECTS["astralog"], 30, 1, seed=5)[0]),
    ]
    envelopes = []
    for dialect, body in bodies:
        if dialect == "astralog":
            envelopes.append(decode(encode(envelope_for(body))))
        else:
            bench = payloads.DIALECTS[dialect]
            envelopes.append(decode(encode(payloads.envelope(bench, body, 9, "store-parse", time.time_ns()))))
    assert [e.store_parses for e in envelopes] == [True, False, False, True]
    run = uuid.uuid4().hex
    mixed, python = TableBatch.empty("logs"), TableBatch.empty("logs")
    for offset, envelope in enumerate(envelopes):
        mixed_record = record(f"sp-{run}-mixed", envelope.body, offset)
        if envelope.store_parses:
            mixed.defer(envelope, mixed_record)
        else:
            enrich_step(envelope, parse_step(envelope), mixed_record, mixed)
        enrich_step(envelope, parse_step(envelope), record(f"sp-{run}-py", envelope.body, offset), python)
    assert mixed.deferred_rows == 80 and mixed.rows == python.rows == 121
    insert_table(stack.client, mixed, f"sp-{run}-mixed-token")
    insert_table(stack.client, python, f"sp-{run}-py-token")
    assert stored(stack.client, f"sp-{run}-mixed") == stored(stack.client, f"sp-{run}-py")
    one_part = "SELECT uniqExact(_part) FROM logs WHERE kafka_topic = {t:String}"
    assert stack.query(one_part, t=f"sp-{run}-mixed") == [(1,)]
