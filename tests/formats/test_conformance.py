"""Every parser in PARSERS keeps the contract, whatever it is fed.

Arbitrary bytes, arbitrary JSON documents (shaped like each dialect's envelope or not), and
mutated seed examples, under assorted Content-Types and query parameters: only `ParseError`
escapes; every row's keys are columns a parser may fill for its table, each value of the
column's Python type (and storable: valid UTF-8); timestamps are non-zero ns; levels are
normalized with their severity numbers; rejections name an item.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formats import PARSERS, ParseContext, Parsed
from tests.formats import (
    test_astralog,
    test_dynatrace,
    test_es_bulk,
    test_goodlogs,
    test_loki,
    test_tg2g,
    test_timberlogs,
)
from tests.formats.conftest import deep_arrays, make_ctx
from tests.fuzz import contract
from tests.fuzz.corpus import loki_push_body, otlp_protobuf_body

NAMES = sorted(PARSERS)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# AstraLog (not part of this change) stores a literal epoch-0 timestamp as sent; every other
# parser treats 0 as "no time". Kept visible here rather than hidden in a weaker assertion.


CONTENT_TYPES = [
    "application/json",
    "application/x-protobuf",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-ndjson",
    "application/jsonl",
    "text/csv",
    "application/x-syslog",
    "application/x-obl",
    "application/x-www-form-urlencoded",
    "",
]
QUERY_VALUES = [
    "json",
    "jsonl",
    "syslog",
    "text",
    "csv",
    "obl",
    "production",
    "staging",
    "api",
    "info",
    "warn",
    "",
]
queries = st.dictionaries(
    st.sampled_from(["format", "source", "environment", "level", "dataset"]),
    st.sampled_from(QUERY_VALUES) | st.text(max_size=6),
    max_size=5,
)
contexts = st.builds(lambda ct, q: make_ctx(ct, q), st.sampled_from(CONTENT_TYPES), queries)

FIELD_NAMES = [
    "logs", "batch", "message", "content", "severity", "level", "timestamp", "source", "service",
    "environment", "entity", "name", "kind", "tags", "properties", "metadata", "context", "event",
    "distinctId", "data", "userId", "requestId", "stepIndex", "project_id", "log.source", "format",
    "sessions", "events", "type", "label", "text", "status", "host.name", "@timestamp",
]  # fmt: skip
STRINGS = [
    "",
    "info",
    "ERROR",
    "warning",
    "production",
    "2024-01-15T10:30:00Z",
    "2022-01-17T22:12:31.0000",
    "Jan 15 10:30:00",
    "1705312200000",
    "0",
    "²",
    "\ufeff",
    "\x00",
    "😀" * 3,
    "open-board-log-0.1",
    "button",
    "utterance",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.sampled_from([0, 1, 1705312200000, 10**17, 2**63])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(STRINGS)
    | st.sampled_from([10_001, 65_537]).map("x".__mul__)  # past the message limits
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)
items = st.dictionaries(keys, json_values, max_size=5)
documents = (
    json_values
    | st.lists(items, max_size=3)
    | st.builds(lambda logs, extra: {**extra, "logs": logs}, st.lists(items | json_values, max_size=3), items)
    | st.builds(lambda batch: {"batch": batch}, st.lists(items | json_values, max_size=3))
    | st.builds(
        lambda events, root: {**root, "format": "open-board-log-0.1", "sessions": [{"events": events}]},
        st.lists(items, max_size=3),
        items,
    )
)

SEEDS: list[bytes] = [
    test_tg2g.SEED_BODY,
    test_dynatrace.SEED_BODY,
    test_goodlogs.LOGS_BODY,
    test_goodlogs.EVENTS_BODY,
    test_astralog.SEED_BODY,
    test_timberlogs.BODY_JSON,
    test_timberlogs.BODY_OBL,
    test_timberlogs.BODY_RFC3164,
    *(body for _, _, body in test_timberlogs.CURL_EXAMPLES),
    test_loki.SEED_BODY,
    test_es_bulk.SEED_BODY,
    otlp_protobuf_body(),
    b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "1705312200000000000",'
    b' "body": {"stringValue": "m"}, "attributes": [{"key": "a", "value": {"intValue": "1"}}]}]}]}]}',
    b'{"time": 1705312200.25, "event": "one"}{"event": {"message": "two", "level": "warn"}, "fields": {}}',
    loki_push_body(('{job="varlogs", level="warn"}', 1_705_312_200 * 10**9, "disk full")),
]
HOSTILE = [
    b"",
    b"\xff\xfe\xfd",
    deep_arrays(10_000),
    b'{"logs": [' + deep_arrays(1000) + b"]}",
    b'{"batch": [{"event": "e", "severity": "info", "message": "m", "properties": '
    + deep_arrays(900)
    + b"}]}",
    b'[{"content": "c", "x": ' + b'{"a":' * 200 + b"1" + b"}" * 200 + b"}]",
    b'{"logs": [{"message": "m", "n": 1e400}]}',
    b'{"logs": [{"message": "m", "timestamp": 123456789012345678901234567890}]}',
    b"NaN",
    b"/*",
    b"<13>",
    b"level,message\n" + b'"unterminated',
    b"\x00\x00\x00",
    b"\xff\xff\xff\xff\x0f" + b"\x00" * 8,  # a snappy header claiming 4 GiB
    b'{"streams": [{"labels": "{a=\\"' + b"\\\\" * 500 + b'", "entries": []}]}',
]


def check(name: str, body: bytes, ctx: ParseContext) -> None:
    """The parser contract (tests/fuzz/contract.py, shared with the fuzzers), plus: timestamps are
    real times, not zero."""
    result = contract.check(name, body, ctx)
    if isinstance(result, Parsed):
        for row in result.rows:
            ts = row["timestamp"]
            assert ts > 0


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(body=st.binary(max_size=400) | st.sampled_from(HOSTILE + SEEDS), ctx=contexts)
def test_arbitrary_bytes(name: str, body: bytes, ctx: ParseContext) -> None:
    check(name, body, ctx)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(docs=st.lists(documents, min_size=1, max_size=2), ctx=contexts)
def test_arbitrary_json(name: str, docs: list[Any], ctx: ParseContext) -> None:
    # One document, or several one per line (JSON lines, for the dialects that take them).
    check(name, b"\n".join(orjson.dumps(doc) for doc in docs), ctx)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data(), ctx=contexts)
def test_mutated_seed_examples(name: str, data: st.DataObject, ctx: ParseContext) -> None:
    seed = data.draw(st.sampled_from(SEEDS))
    try:
        doc = orjson.loads(seed)
    except orjson.JSONDecodeError:  # a text format: mutate bytes
        body = data.draw(st.sampled_from([seed, *seed.splitlines()]))
        position = data.draw(st.integers(0, len(body)))
        cut = data.draw(st.integers(0, 8))
        inserted = data.draw(
            st.binary(max_size=8) | st.sampled_from([b"\n", b",", b"\t", b'"', b"<", b"-", b" "])
        )
        check(name, body[:position] + inserted + body[position + cut :], ctx)
        return
    for _ in range(data.draw(st.integers(1, 4))):
        doc = mutate(data, doc)
    check(name, orjson.dumps(doc), ctx)


def mutate(data: st.DataObject, value: Any) -> Any:
    """One random edit somewhere in the document: replace, delete, duplicate or descend."""
    if isinstance(value, dict) and value:
        key = data.draw(st.sampled_from(sorted(value)))
        action = data.draw(st.sampled_from(["replace", "delete", "descend", "descend", "add"]))
        edited = dict(value)
        if action == "replace":
            edited[key] = data.draw(json_values)
        elif action == "delete":
            del edited[key]
        elif action == "add":
            edited[data.draw(keys)] = data.draw(json_values)
        else:
            edited[key] = mutate(data, value[key])
        return edited
    if isinstance(value, list) and value:
        i = data.draw(st.integers(0, len(value) - 1))
        action = data.draw(st.sampled_from(["replace", "delete", "duplicate", "descend", "descend"]))
        out = list(value)
        if action == "replace":
            out[i] = data.draw(json_values)
        elif action == "delete":
            del out[i]
        elif action == "duplicate":
            out.extend([value[i]] * data.draw(st.integers(1, 120)))
        else:
            out[i] = mutate(data, value[i])
        return out
    return data.draw(json_values)


@pytest.mark.parametrize("data", [b"a\r\n\n  \nb\r\r\nc", "a\r\n\n  \nb\r\r\nc"])
def test_framing_skips_blank_lines_drops_trailing_crs_and_keeps_line_numbers(data: bytes | str) -> None:
    from formats import framing

    got = list(framing.lines(data))
    expect = [(1, "a"), (4, "b"), (5, "c")]
    assert got == [(n, t.encode() if isinstance(data, bytes) else t) for n, t in expect]
    assert len(list(framing.lines(data, limit=1))) == 2  # the cap plus one: enough to refuse
