"""Elasticsearch _bulk parser: action/document pairs, ECS mapping, per-item and whole-request refusals."""

from __future__ import annotations

import orjson
import pytest

from formats.base import ParseContext, ParseError, Rejection
from formats.es_bulk import BulkItem, index_of_path, parse
from gateway.dialects.es_bulk import ES_BULK
from tests.formats.conftest import RECEIVED_AT_NS, make_ctx, utc_ns

# The shape of the _bulk example in Elasticsearch's reference (our own documents).
SEED_BODY = (
    b'{ "index" : { "_index" : "test", "_id" : "1" } }\n'
    b'{ "@timestamp": "2024-01-15T10:30:00Z", "message": "hello", "log": {"level": "warn"},'
    b' "service": {"name": "api"} }\n'
    b'{ "delete" : { "_index" : "test", "_id" : "2" } }\n'
    b'{ "create" : { "_index" : "test2", "_id" : "3" } }\n'
    b'{ "message" : "value3", "host": {"name": "h1"} }\n'
    b'{ "update" : {"_id" : "1", "_index" : "test"} }\n'
    b'{ "doc" : {"field2" : "value2"} }\n'
)


def ctx(path: str = "/_bulk") -> ParseContext:
    return make_ctx("application/x-ndjson", path=path)


def ndjson(*lines: object) -> bytes:
    return b"\n".join(orjson.dumps(line) for line in lines) + b"\n"


def test_seed_body_items_in_action_order() -> None:
    parsed = parse(SEED_BODY, ctx())
    assert parsed.answer == [
        BulkItem("index", "test", "1", 201),
        BulkItem("delete", "test", "2", 400, "illegal_argument_exception", "delete is not supported"),
        BulkItem("create", "test2", "3", 201),
        BulkItem("update", "test", "1", 400, "illegal_argument_exception", "update is not supported"),
    ]
    assert parsed.rejected == [
        Rejection(1, "delete is not supported"),
        Rejection(3, "update is not supported"),
    ]
    first, second = parsed.rows
    assert first == {
        "timestamp": utc_ns(2024, 1, 15, 10, 30),
        "message": "hello",
        "level": "warn",
        "severity_number": 13,
        "severity_text": "warn",
        "dataset": "test",
        "service": "api",
        "attributes": {"_id": "1"},
    }
    assert (second["timestamp"], second["host"], second["dataset"]) == (RECEIVED_AT_NS, "h1", "test2")


def test_path_index_is_the_default_and_the_action_wins() -> None:
    body = ndjson({"index": {}}, {"message": "a"}, {"index": {"_index": "own"}}, {"message": "b"})
    parsed = parse(body, make_ctx(path="/logs-app/_bulk"))
    assert [r["dataset"] for r in parsed.rows] == ["logs-app", "own"]
    assert index_of_path("/_bulk") == "" and index_of_path("/x/_bulk") == "x"


def test_ecs_fields_and_the_rest_as_dotted_attributes() -> None:
    doc = {
        "@timestamp": 1705312200123,
        "log": {"level": "ERROR", "logger": "payments"},
        "msg": "fallback message key",
        "service": {"name": "checkout", "environment": "prod", "version": "1.2"},
        "host": {"hostname": "web-1"},
        "trace": {"id": "t"},
        "span": {"id": "s"},
        "transaction": {"id": "r"},
        "labels": {"team": "core"},
        "tags": ["a", "b"],
        "bytes": 1.5,
    }
    (row,) = parse(ndjson({"index": {"_index": "i"}}, doc), ctx()).rows
    assert row["timestamp"] == 1705312200123 * 10**6
    assert (row["message"], row["level"], row["severity_text"]) == ("fallback message key", "error", "ERROR")
    assert (row["service"], row["environment"], row["host"]) == ("checkout", "prod", "web-1")
    assert (row["trace_id"], row["span_id"], row["request_id"]) == ("t", "s", "r")
    assert row["attributes"] == {
        "log.logger": "payments",
        "service.version": "1.2",
        "labels.team": "core",
        "tags": '["a","b"]',
        "bytes": "1.5",
    }


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (b"[1]", "must be a JSON object"),
        (b"{broken", "failed to parse the document"),
        (b'{"@timestamp": "yesterday"}', "@timestamp"),
        (b'{"@timestamp": -5}', "@timestamp"),
        (b'{"a": ' + b'{"b":' * 40 + b"1" + b"}" * 40 + b"}", "nested"),
    ],
)
def test_a_bad_document_is_refused_alone(doc: bytes, reason: str) -> None:
    body = b'{"index": {"_index": "i"}}\n' + doc + b'\n{"index": {"_index": "i"}}\n{"message": "ok"}\n'
    parsed = parse(body, ctx())
    assert [r["message"] for r in parsed.rows] == ["ok"]
    (rejection,) = parsed.rejected
    assert rejection.index == 0 and reason in rejection.reason
    assert parsed.answer[0].status == 400 and parsed.answer[1].status == 201


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\n\n",
        b"not json\n{}\n",
        b'{"index": {}, "create": {}}\n{}\n',
        b'{"upsert": {"_index": "i"}}\n{}\n',
        b'{"index": "i"}\n{}\n',
        b'{"index": {}}\n{"message": "no index anywhere"}\n',
        b'{"index": {"_index": "i"}}\n',
        b'{"index": {"_index": 5}}\n{}\n',
    ],
)
def test_whole_request_refusals(body: bytes) -> None:
    with pytest.raises(ParseError) as err:
        parse(body, ctx())
    assert ES_BULK.refusal(err.value).status == 400
