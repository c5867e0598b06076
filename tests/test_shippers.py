"""The protocols real shippers speak, sent by their published clients through the real pipeline.

Each test drives a client library exactly as its users do (only the URL and the key are
Millrace's), then reads the rows back from ClickHouse. The synchronous clients (requests)
run in a thread: the gateway under test runs on this test's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import cramjam
import orjson
import pytest

from formats.loki import MAX_DECOMPRESSED, PushRequest
from gateway.dialects import es_bulk as es_bulk_route
from gateway.dialects import hec as hec_route
from millrace import metrics
from millrace.keys import SCOPE_READ
from tests.bodies import compress
from tests.conftest import Gateway, Stack, Tenant

pytestmark = pytest.mark.integration

LOKI_PATH = "/loki/api/v1/push"


async def fresh(stack: Stack, name: str, scopes: frozenset[str] | None = None) -> Tenant:
    return await stack.tenant(f"{name}-{uuid.uuid4().hex[:8]}", scopes)


def stored(stack: Stack, project: str, columns: str) -> list[tuple[Any, ...]]:
    return stack.query(
        f"SELECT {columns} FROM logs WHERE project = {{p:String}} ORDER BY timestamp, message", p=project
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def post(stack: Stack, path: str, body: bytes, **headers: str) -> tuple[int, str, dict[str, str]]:
    async with stack.session.post(stack.url + path, data=body, headers=headers) as resp:
        return resp.status, (await resp.read()).decode(), dict(resp.headers)


def logger_with(handler: logging.Handler) -> tuple[logging.Logger, list[BaseException]]:
    """A logger of its own sending through `handler`; the handler's failures are collected, not printed."""
    errors: list[BaseException] = []

    def collect(record: logging.LogRecord) -> None:
        import sys

        exc = sys.exc_info()[1]
        if exc is not None:
            errors.append(exc)

    handler.handleError = collect  # type: ignore[method-assign]
    logger = logging.getLogger(f"shipper-{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, errors


def push_request(*streams: tuple[str, list[tuple[int, str, dict[str, str]]]]) -> bytes:
    """A Loki PushRequest, protobuf then snappy (block format), as Promtail and Alloy send it."""
    request = PushRequest()
    for labels, entries in streams:
        stream = request.streams.add(labels=labels)
        for ns, line, metadata in entries:
            entry = stream.entries.add(line=line)
            entry.timestamp.seconds, entry.timestamp.nanos = divmod(ns, 10**9)
            for name, value in metadata.items():
                entry.structuredMetadata.add(name=name, value=value)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


# -- Loki push -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "0"])
async def test_python_logging_loki_handler_lands_with_labels_mapped(stack: Stack, version: str) -> None:
    """python-logging-loki's LokiHandler in both its push shapes (v0, its default, and v1);
    the key as Basic password."""
    import logging_loki

    tenant = await fresh(stack, "loki-pll")
    handler = logging_loki.LokiHandler(
        url=stack.url + LOKI_PATH,
        tags={"application": "shop", "env": "prod"},
        auth=("millrace", tenant.key),
        version=version,
    )
    logger, errors = logger_with(handler)
    before = time.time_ns()

    def send() -> None:
        logger.error("payment failed", extra={"tags": {"region": "eu-west-1"}})
        logger.info("payment retried")

    await asyncio.to_thread(send)
    await asyncio.to_thread(handler.emitter.close)

    assert errors == []  # every push got exactly the 204 the handler insists on
    assert await stack.wait_rows(tenant.project, 2) == 2
    rows = stored(
        stack,
        tenant.project,
        "message, level, severity_text, service, environment, attributes, dialect,"
        " toUnixTimestamp64Nano(timestamp)",
    )
    assert [r[:5] for r in rows] == [
        ("payment failed", "error", "error", "shop", "prod"),
        ("payment retried", "info", "info", "shop", "prod"),
    ]
    attributes = rows[0][5]
    assert attributes["application"] == "shop"
    assert attributes["region"] == "eu-west-1"
    assert attributes["logger"] == logger.name
    assert attributes["severity"] == "error"
    assert {r[6] for r in rows} == {"loki"}
    # v1 sends ns; v0 RFC 3339 with microseconds: either way the client's own time, not ours
    assert all(before - 10**9 < r[7] <= time.time_ns() for r in rows)


async def test_loki_logger_handler_gzip_json_lines_and_structured_metadata(stack: Stack) -> None:
    """loki-logger-handler: gzip-compressed JSON, label keys lifted from the record, structured metadata."""
    from loki_logger_handler.loki_logger_handler import LokiLoggerHandler

    tenant = await fresh(stack, "loki-llh")
    handler = LokiLoggerHandler(
        url=stack.url + LOKI_PATH,
        labels={"service_name": "billing", "host": "node-7"},
        label_keys={"level"},
        auth=("tenant-1", tenant.key),
        additional_headers={"X-Scope-OrgID": "team-a"},
        timeout=0.3,
        compressed=True,
        enable_structured_loki_metadata=True,
        loki_metadata_keys=["trace_id"],
    )
    logger, errors = logger_with(handler)
    logger.warning("disk almost full", extra={"trace_id": "4bf92f3577b34da6"})

    assert await stack.wait_rows(tenant.project, 1) == 1
    assert errors == [] and handler.error is False
    ((message, level, service, host, trace_id, attributes),) = stored(
        stack, tenant.project, "message, level, service, host, trace_id, attributes"
    )
    line = orjson.loads(message)  # the handler's JSON line is the message, verbatim
    assert line["message"] == "disk almost full" and line["level"] == "WARNING"
    assert (level, service, host, trace_id) == ("warn", "billing", "node-7", "4bf92f3577b34da6")
    assert attributes["scope_org_id"] == "team-a"  # kept, never the tenant: the key's project is
    assert attributes["level"] == "WARNING" and attributes["trace_id"] == "4bf92f3577b34da6"


async def test_loki_protobuf_snappy_push_with_bearer_key(stack: Stack) -> None:
    """The PushRequest protobuf + snappy body Promtail and Alloy send, encoded by the protobuf runtime."""
    tenant = await fresh(stack, "loki-proto")
    now = time.time_ns()
    body = push_request(
        ('{job="varlogs", detected_level="error", filename="/var/log/app.log"}', [(now, "boom", {})]),
        ('{app="api"}', [(now + 1, "ok", {"trace_id": "abc", "span_id": "def"})]),
    )

    status, text, _ = await post(
        stack,
        LOKI_PATH,
        body,
        Authorization=f"Bearer {tenant.key}",
        **{"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "fake"},
    )

    assert (status, text) == (204, "")
    assert await stack.wait_rows(tenant.project, 2) == 2
    rows = stored(
        stack,
        tenant.project,
        "message, level, service, trace_id, span_id, attributes['filename'],"
        " toUnixTimestamp64Nano(timestamp)",
    )
    assert rows == [
        ("boom", "error", "varlogs", "", "", "/var/log/app.log", now),
        ("ok", "info", "api", "abc", "def", "", now + 1),
    ]


async def test_loki_refusals_are_plain_text_in_lokis_manner(stack: Stack) -> None:
    tenant = await fresh(stack, "loki-bad")
    auth = {"Authorization": basic("u", tenant.key)}
    json_type = {"Content-Type": "application/json"}
    proto_type = {"Content-Type": "application/x-protobuf"}
    good = orjson.dumps({"streams": [{"stream": {"app": "a"}, "values": [[str(time.time_ns()), "x"]]}]})
    bomb = b"\xff\xff\xff\xff\x0f" + b"\x00" * 16  # snappy header claiming 4 GiB
    truncated = push_request(('{app="a"}', [(time.time_ns(), "x" * 100, {})]))[:-20]

    cases = [
        ({}, good, 401),
        ({"Authorization": basic("u", "mr_wrong")}, good, 401),
        ({"Authorization": "Basic !!notbase64"}, good, 401),
        (auth, b'{"streams": [', 400),
        (auth, b'{"streams": {}}', 400),
        (auth, b'{"streams": [{"stream": {"app": 1}, "values": []}]}', 400),
        ({**auth, **proto_type}, b"not snappy at all", 400),
        ({**auth, **proto_type}, truncated, 400),
        ({**auth, **proto_type}, bomb, 413),
        ({**auth, **proto_type}, push_request(('{app="a", broken', [(1, "x", {})])), 400),
        ({**auth, "Content-Type": "text/plain"}, b"hello world", 400),
        ({**auth, **json_type}, b'{"streams": [{"labels": "{a=\\"\xff\\"}", "entries": []}]}', 400),
    ]
    for headers, body, expected in cases:
        status, text, response_headers = await post(stack, LOKI_PATH, body, **{**json_type, **headers})
        assert (status, response_headers["Content-Type"].split(";")[0]) == (expected, "text/plain"), (
            body,
            text,
        )
        assert text.endswith("\n") and len(text) > 1
    assert await stack.wait_rows(tenant.project, 0, timeout_s=1) == 0

    read_only = await fresh(stack, "loki-scope", frozenset({SCOPE_READ}))
    status, text, _ = await post(stack, LOKI_PATH, good, Authorization=f"Bearer {read_only.key}", **json_type)
    assert (status, text) == (403, "this key lacks the 'logs:write' scope\n")
    assert MAX_DECOMPRESSED < 2**32


async def test_loki_bad_entries_are_named_and_the_rest_stored(stack: Stack) -> None:
    tenant = await fresh(stack, "loki-partial")
    now = str(time.time_ns())
    body = orjson.dumps(
        {
            "streams": [
                {
                    "stream": {"service_name": "api"},
                    "values": [[now, "kept"], ["yesterday", "no time"], [now, {"not": "a line"}]],
                    "extra": "ignored",
                }
            ]
        }
    )
    status, text, _ = await post(
        stack, LOKI_PATH, body, Authorization=f"Bearer {tenant.key}", **{"Content-Type": "application/json"}
    )

    assert status == 400
    assert "1 entries stored, 2 refused" in text
    assert "streams[0].values[1]" in text and "streams[0].values[2]" in text
    assert await stack.wait_rows(tenant.project, 1) == 1
    assert stored(stack, tenant.project, "message, service") == [("kept", "api")]


# -- Elasticsearch _bulk -------------------------------------------------------------------------


def es_client(stack: Stack, **auth: Any) -> Any:
    from elasticsearch import Elasticsearch

    return Elasticsearch(stack.url, request_timeout=30, **auth)


async def test_elasticsearch_helpers_bulk_stores_ecs_documents_with_the_index_as_dataset(
    stack: Stack,
) -> None:
    from elasticsearch import helpers

    tenant = await fresh(stack, "es-bulk")
    client = es_client(stack, api_key=("millrace", tenant.key), http_compress=True)  # gzip bodies
    actions = [
        {
            "_index": "shop-logs",
            "_id": "a1",
            "@timestamp": "2024-05-31T15:30:45.250Z",
            "message": "Payment failed",
            "log": {"level": "ERROR", "logger": "payments"},
            "service": {"name": "checkout", "environment": "prod"},
            "host": {"name": "web-1"},
            "trace": {"id": "4bf92f3577b34da6"},
            "order": {"id": 42, "items": ["a", "b"]},
        },
        {
            "_index": "audit",
            "_op_type": "create",
            "@timestamp": 1717169446000,
            "message": "login",
            "level": "info",
        },
    ]

    ok, errors = await asyncio.to_thread(helpers.bulk, client, actions)

    assert (ok, errors) == (2, [])
    assert await stack.wait_rows(tenant.project, 2) == 2
    rows = stored(
        stack,
        tenant.project,
        "message, level, severity_text, service, environment, host, trace_id, dataset, attributes,"
        " toUnixTimestamp64Milli(timestamp), dialect",
    )
    assert [r[:8] for r in rows] == [
        ("Payment failed", "error", "ERROR", "checkout", "prod", "web-1", "4bf92f3577b34da6", "shop-logs"),
        ("login", "info", "info", "", "", "", "", "audit"),
    ]
    assert rows[0][8] == {"_id": "a1", "log.logger": "payments", "order.id": "42", "order.items": '["a","b"]'}
    assert [r[9] for r in rows] == [1717169445250, 1717169446000]
    assert {r[10] for r in rows} == {"es_bulk"}


async def test_elasticsearch_streaming_bulk_retries_429s_until_every_document_is_stored(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A key limited to one request per second: the client's retries (max_retries) get every chunk in."""
    from elasticsearch import helpers

    from millrace import keys

    project = f"es-retry-{uuid.uuid4().hex[:8]}"
    _, key = await keys.create(
        stack.settings, project, frozenset({keys.SCOPE_LOGS}), limits={"requests_per_s": 1, "burst_s": 1}
    )
    await stack.wait_for_key(key)
    client = es_client(stack, basic_auth=("elastic", key))
    docs = [{"_index": "retry", "message": f"doc {i}", "n": i} for i in range(6)]

    def send() -> list[tuple[bool, Any]]:
        return list(
            helpers.streaming_bulk(
                client, docs, chunk_size=2, max_retries=5, initial_backoff=1, max_backoff=2
            )
        )

    with caplog.at_level(logging.INFO, logger="elastic_transport.transport"):
        results = await asyncio.to_thread(send)

    assert any("[status:429" in r.getMessage() for r in caplog.records)  # the limit did bite
    assert [ok for ok, _ in results] == [True] * 6
    assert await stack.wait_rows(project, 6) == 6
    assert sorted(r[0] for r in stored(stack, project, "message")) == [f"doc {i}" for i in range(6)]


async def limited_es_key(stack: Stack, project: str, **limits: float) -> str:
    from millrace import keys

    _, key = await keys.create(stack.settings, project, frozenset({keys.SCOPE_LOGS}), limits=limits)
    await stack.wait_for_key(key)
    return key


def rejected_logs(dialect: str, reason: str) -> float:
    """The gateway's count of refused logs (the test stack's gateway runs in this process)."""
    value = metrics.REGISTRY.get_sample_value(
        "millrace_logs_rejected_total", {"dialect": dialect, "reason": reason}
    )
    return value or 0.0


async def test_elasticsearch_over_the_log_rate_stores_what_fits_and_answers_the_rest_429_per_item(
    stack: Stack,
) -> None:
    """Two log tokens (0.01/s, 200 s of burst: none come back during the test): the first two
    documents are stored, later ones are 429 items in action order; a refused item keeps its 400."""
    project = f"es-split-{uuid.uuid4().hex[:8]}"
    key = await limited_es_key(stack, project, logs_per_s=0.01, burst_s=200)
    lines = [
        {"index": {"_index": "a", "_id": "1"}},
        {"message": "first"},
        {"delete": {"_index": "a", "_id": "x"}},
        {"create": {"_index": "b"}},
        {"message": "second"},
        {"index": {"_index": "a", "_id": "3"}},
        {"message": "third"},
        {"index": {"_index": "a"}},
        {"@timestamp": "not a time"},
        {"create": {"_index": "b", "_id": "4"}},
        {"message": "fourth"},
    ]
    body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    counted = {reason: rejected_logs("es_bulk", reason) for reason in ("invalid_item", "rate_limited")}

    status, text, headers = await post(
        stack, "/_bulk", body, **{"Authorization": f"ApiKey {key}", "Content-Type": "application/x-ndjson"}
    )

    assert (status, headers["X-Elastic-Product"]) == (200, "Elasticsearch")
    answer = orjson.loads(text)
    assert answer["errors"] is True
    items = [
        (op, item["_index"], item["_id"], item["status"]) for e in answer["items"] for op, item in e.items()
    ]
    assert [i[0] for i in items] == ["index", "delete", "create", "index", "index", "create"]
    assert [i[3] for i in items] == [201, 400, 201, 429, 400, 429]
    assert (items[3][1:3], items[5][1:3]) == (("a", "3"), ("b", "4"))
    limited = answer["items"][3]["index"]["error"]
    assert limited["type"] == "es_rejected_execution_exception" and "log rate" in limited["reason"]
    assert await stack.wait_rows(project, 3, timeout_s=3) == 2  # nothing beyond what fitted
    assert stored(stack, project, "message, dataset") == [("first", "a"), ("second", "b")]
    # The two 429 items count as refused over the rate, the two 400 items as invalid.
    assert {reason: rejected_logs("es_bulk", reason) - n for reason, n in counted.items()} == {
        "invalid_item": 2,
        "rate_limited": 2,
    }

    # No whole token left: refused before the body is read, a whole-request 429 with Retry-After.
    status, text, headers = await post(stack, "/_bulk", body, Authorization=f"Bearer {key}")
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert orjson.loads(text)["error"]["type"] == "es_rejected_execution_exception"


async def test_elasticsearch_streaming_bulk_retries_only_the_429_items_and_stores_each_document_once(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A key allowed 4 logs per second (4 tokens): one chunk of 11 documents goes in over several
    answers, each a 200 whose 429 items the client resends after its backoff (which refills the bucket)."""
    from elasticsearch import helpers

    project = f"es-items-retry-{uuid.uuid4().hex[:8]}"
    key = await limited_es_key(stack, project, logs_per_s=4, burst_s=1)
    client = es_client(stack, api_key=("millrace", key), http_compress=True)
    docs = [{"_index": "retry", "_id": f"d{i}", "message": f"doc {i:02}", "n": i} for i in range(11)]

    def send() -> list[tuple[bool, Any]]:
        return list(
            helpers.streaming_bulk(
                client,
                docs,
                chunk_size=100,
                max_retries=8,
                initial_backoff=1,
                max_backoff=2,
                raise_on_error=False,  # else the client raises on 429 items (elasticsearch-py#864)
            )
        )

    with caplog.at_level(logging.INFO, logger="elastic_transport.transport"):
        results = await asyncio.to_thread(send)

    requests = [r.getMessage() for r in caplog.records if "/_bulk" in r.getMessage()]
    assert len(requests) >= 3 and all("[status:200" in m for m in requests), requests  # per item, not whole
    assert [ok for ok, _ in results] == [True] * 11
    assert sorted(info["index"]["_id"] for _, info in results) == sorted(f"d{i}" for i in range(11))
    assert await stack.wait_rows(project, 12, timeout_s=3) == 11  # and no more: each exactly once
    rows = stored(stack, project, "message, attributes['_id'], attributes['n']")
    assert rows == [(f"doc {i:02}", f"d{i}", str(i)) for i in range(11)]


async def test_elasticsearch_unsupported_and_broken_items_are_answered_per_item(stack: Stack) -> None:
    from elasticsearch import helpers

    tenant = await fresh(stack, "es-items")
    client = es_client(stack, bearer_auth=tenant.key)
    actions = [
        {"_index": "a", "message": "kept"},
        {"_op_type": "delete", "_index": "a", "_id": "1"},
        {"_op_type": "update", "_index": "a", "_id": "2", "doc": {"x": 1}},
        {"_index": "a", "@timestamp": "not a time", "message": "bad time"},
        {"_index": "a", "message": "kept too"},
    ]

    ok, errors = await asyncio.to_thread(helpers.bulk, client, actions, raise_on_error=False)

    assert ok == 2
    assert [(op, item["status"], item["error"]["type"]) for e in errors for op, item in e.items()] == [
        ("delete", 400, "illegal_argument_exception"),
        ("update", 400, "illegal_argument_exception"),
        ("index", 400, "document_parsing_exception"),
    ]
    assert await stack.wait_rows(tenant.project, 2) == 2
    assert sorted(r[0] for r in stored(stack, tenant.project, "message")) == ["kept", "kept too"]


async def test_elasticsearch_filter_path_cuts_answers_as_logstash_asks(stack: Stack) -> None:
    """Logstash's `_bulk` path carries `filter_path=errors,items.*.error,items.*.status`; the Python
    client passes `filter_path` through `helpers.bulk` to every request."""
    from elasticsearch import helpers

    tenant = await fresh(stack, "es-filter")
    client = es_client(stack, bearer_auth=tenant.key)
    logstash = "errors,items.*.error,items.*.status"
    actions = [
        {"_index": "a", "message": "first"},
        {"_index": "a", "@timestamp": "not a time", "message": "refused"},
        {"_index": "a", "message": "second"},
    ]

    ok, errors = await asyncio.to_thread(
        helpers.bulk, client, actions, raise_on_error=False, filter_path=logstash
    )

    assert ok == 2
    assert [(op, item["status"], item["error"]["type"]) for e in errors for op, item in e.items()] == [
        ("index", 400, "document_parsing_exception")
    ]
    body = b"".join(
        b'{"index": {"_index": "b"}}\n' + orjson.dumps(doc) + b"\n"
        for doc in ({"message": "third"}, {"message": "bad", "@timestamp": "never"})
    )
    bearer = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/x-ndjson"}
    status, text, headers = await post(stack, f"/_bulk?filter_path={logstash}", body, **bearer)
    answer = orjson.loads(text)
    assert (status, headers["X-Elastic-Product"]) == (200, "Elasticsearch")
    assert answer["errors"] is True and set(answer) == {"errors", "items"}
    assert answer["items"][0] == {"index": {"status": 201}}
    assert set(answer["items"][1]["index"]) == {"status", "error"}
    fine = b'{"index": {"_index": "b"}}\n{"message": "fourth"}\n'
    status, text, _ = await post(stack, "/_bulk?filter_path=items.*.error", fine, **bearer)
    assert (status, orjson.loads(text)) == (200, {})  # nothing failed: nothing left
    too_many = ",".join(f"f{i}" for i in range(es_bulk_route.MAX_FILTER_PATHS + 1))
    status, text, _ = await post(stack, f"/_bulk?filter_path={too_many}", fine, **bearer)
    assert status == 400 and "filter_path" in orjson.loads(text)["error"]["reason"]  # refused, not stored
    # Without a key the same request learns that first, as from Elasticsearch.
    no_key = {"Content-Type": "application/x-ndjson"}
    status, text, headers = await post(stack, f"/_bulk?filter_path={too_many}", fine, **no_key)
    refusal = orjson.loads(text)
    assert (status, refusal["status"], refusal["error"]["type"]) == (401, 401, "security_exception")
    assert headers["X-Elastic-Product"] == "Elasticsearch"
    assert await stack.wait_rows(tenant.project, 4) == 4
    assert sorted(r[0] for r in stored(stack, tenant.project, "message")) == [
        "first",
        "fourth",
        "second",
        "third",
    ]

    probe = await asyncio.to_thread(client.info, filter_path="version.number")
    assert probe.body == {"version": {"number": es_bulk_route.VERSION}}
    # Errors are never filtered, as in Elasticsearch.
    status, text, _ = await post(stack, "/_bulk?filter_path=status", b"", **bearer)
    assert status == 400 and orjson.loads(text)["error"]["type"] == "illegal_argument_exception"


async def test_elasticsearch_probes_and_refusals_answer_as_elasticsearch(stack: Stack) -> None:
    from elasticsearch import ApiError, AuthenticationException

    tenant = await fresh(stack, "es-probe")
    client = es_client(stack, api_key=tenant.key)  # an unencoded key is taken as it is

    info = await asyncio.to_thread(client.info)
    assert info["version"]["number"].startswith("8.") and info["tagline"] == "You Know, for Search"
    assert await asyncio.to_thread(client.ping) is True
    assert (await asyncio.to_thread(client.license.get))["license"]["status"] == "active"
    assert (await asyncio.to_thread(client.cluster.health))["status"] == "green"

    with pytest.raises(AuthenticationException):
        await asyncio.to_thread(es_client(stack, basic_auth=("elastic", "mr_wrong")).info)
    with pytest.raises(ApiError) as err:
        await asyncio.to_thread(
            client.bulk, operations=b'{"index": {"_index": "a"}}\n[1, 2]\n{"oops": {}}\n{}\n'
        )
    assert err.value.status_code == 400
    assert err.value.body["error"]["type"] == "illegal_argument_exception"
    assert "[3]" in err.value.body["error"]["reason"]

    for headers, body, status in [
        ({}, b'{"index": {"_index": "a"}}\n{"message": "m"}\n', 401),
        ({"Authorization": f"Bearer {tenant.key}"}, b"", 400),
        ({"Authorization": f"Bearer {tenant.key}"}, b'{"index": {}}\n{"message": "m"}\n', 400),  # no index
        ({"Authorization": f"Bearer {tenant.key}"}, b'{"index": {"_index": "a"}}\n', 400),  # no document
    ]:
        async with stack.session.post(
            stack.url + "/_bulk", data=body, headers={"Content-Type": "application/x-ndjson", **headers}
        ) as resp:
            answer = orjson.loads(await resp.read())
            assert (resp.status, resp.headers["X-Elastic-Product"]) == (status, "Elasticsearch"), answer
            assert answer["status"] == status and answer["error"]["root_cause"][0]["reason"]
    assert await stack.wait_rows(tenant.project, 0, timeout_s=1) == 0


# -- Splunk HEC ----------------------------------------------------------------------------------


def hostport(stack: Stack) -> tuple[str, int]:
    host, port = stack.url.removeprefix("http://").split(":")
    return host, int(port)


async def test_splunk_handler_concatenated_events_without_content_type(stack: Stack) -> None:
    """splunk-handler queues records and sends them as one body of concatenated JSON events."""
    from splunk_handler import SplunkHandler

    tenant = await fresh(stack, "hec-sh")
    host, port = hostport(stack)
    handler = SplunkHandler(
        host=host,
        port=port,
        token=tenant.key,
        index="main",
        protocol="http",
        verify=False,
        flush_interval=3600,  # only the explicit flush below sends
        hostname="web-3",
        source="billing.py",
        sourcetype="json",
    )
    logger, errors = logger_with(handler)
    try:
        logger.warning("card declined")
        logger.error("charge failed")
        logger.info("retry scheduled")
        await asyncio.to_thread(handler.force_flush)
    finally:
        handler.timer.cancel()

    assert errors == []
    assert await stack.wait_rows(tenant.project, 3) == 3
    rows = stored(
        stack, tenant.project, "message, host, dataset, attributes['source'], attributes['sourcetype']"
    )
    assert sorted(rows) == [
        (m, "web-3", "main", "billing.py", "json")
        for m in ("card declined", "charge failed", "retry scheduled")
    ]


@pytest.mark.parametrize("endpoint", ["event", "raw"])
async def test_splunk_hec_handler_event_and_raw_endpoints(stack: Stack, endpoint: str) -> None:
    """splunk-hec-handler: an event object (log_level, fields) to /event; the same JSON as a line to /raw."""
    from splunk_hec_handler import SplunkHecHandler

    tenant = await fresh(stack, f"hec-{endpoint}")
    host, port = hostport(stack)
    handler = await asyncio.to_thread(
        SplunkHecHandler,
        host,
        tenant.key,
        port=port,
        proto="http",
        ssl_verify=False,
        endpoint=endpoint,
        index="app",
        sourcetype="_json",
        hostname="node-1",
    )
    logger, errors = logger_with(handler)
    record = {"message": "order placed", "order": {"id": 7}, "fields": {"service": "shop", "region": "eu"}}

    await asyncio.to_thread(logger.error, record)

    assert errors == []
    assert await stack.wait_rows(tenant.project, 1) == 1
    ((message, level, service, host_column, dataset, attributes),) = stored(
        stack, tenant.project, "message, level, service, host, dataset, attributes"
    )
    if endpoint == "event":
        assert (message, level, service, host_column, dataset) == (
            "order placed",
            "error",
            "shop",
            "node-1",
            "app",
        )
        assert attributes == {"order.id": "7", "region": "eu", "sourcetype": "_json"}
    else:  # raw: the body is one line, stored as it came; the query's metadata is not sent by this client
        assert orjson.loads(message)["event"]["message"] == "order placed"
        assert level == "info"


async def test_hec_answers_and_error_codes(stack: Stack) -> None:
    tenant = await fresh(stack, "hec-codes")
    splunk = {"Authorization": f"Splunk {tenant.key}"}

    async def call(path: str, body: bytes, **headers: str) -> tuple[int, Any, dict[str, str]]:
        async with stack.session.post(stack.url + path, data=body, headers=headers) as resp:
            return resp.status, orjson.loads(await resp.read()), dict(resp.headers)

    async with stack.session.get(stack.url + "/services/collector/health") as resp:
        assert (resp.status, await resp.json()) == (200, {"text": "HEC is healthy", "code": 17})

    ok = b'{"event": "one", "time": "1717169445.5"}{"event": {"message": "two"}}'
    assert (await call("/services/collector", ok, **splunk))[:2] == (200, {"text": "Success", "code": 0})
    # ?token= works, and never reaches the envelope
    assert (await call(f"/services/collector/raw?token={tenant.key}&sourcetype=syslog", b"raw line\n"))[
        0
    ] == 200

    cases = [
        ("/services/collector/event", b"", splunk, 400, 5),
        ("/services/collector/event", b"{not json", splunk, 400, 6),
        ("/services/collector/event", b'{"event": "a", "time": NaN}', splunk, 400, 6),
        ("/services/collector/event", b'{"time": 1}', splunk, 400, 12),
        ("/services/collector/event", b'{"event": ""}', splunk, 400, 13),
        ("/services/collector/event", b'{"event": "x"}', {}, 401, 2),
        ("/services/collector/event", b'{"event": "x"}', {"Authorization": "Token abc"}, 401, 3),
        ("/services/collector/event", b'{"event": "x"}', {"Authorization": "Splunk mr_nope"}, 403, 4),
        ("/services/collector/raw", b"  \n", splunk, 400, 5),
    ]
    for path, body, headers, status, code in cases:
        got_status, got, _ = await call(path, body, **headers)
        assert (got_status, got["code"]) == (status, code), (body, got)

    # HEC stores the events before a bad one and names the bad one
    status, body, _ = await call(
        "/services/collector/event",
        b'{"event": "kept"} {"event": "also kept"} {"nope": 1} {"event": "lost"}',
        **splunk,
    )
    assert (status, body) == (400, {"text": "Event field is required", "code": 12, "invalid-event-number": 2})

    assert await stack.wait_rows(tenant.project, 5) == 5
    rows = stored(stack, tenant.project, "message, attributes")
    assert sorted(r[0] for r in rows) == ["also kept", "kept", "one", "raw line", "two"]
    assert all("token" not in r[1] for r in rows)
    (raw_query,) = stack.query(
        "SELECT attributes['sourcetype'] FROM logs WHERE project = {p:String} AND message = 'raw line'",
        p=tenant.project,
    )
    assert raw_query == ("syslog",)


async def test_hec_indexer_acknowledgment_says_when_each_request_is_stored(stack: Stack) -> None:
    """A request naming a channel gets an ackId; `/services/collector/ack` answers it true once
    its events are stored, and the id is where Kafka put the request."""
    tenant = await fresh(stack, "hec-ack")
    channel = str(uuid.uuid4())
    splunk = {"Authorization": f"Splunk {tenant.key}"}

    async def call(path: str, body: bytes, **headers: str) -> tuple[int, Any]:
        async with stack.session.post(stack.url + path, data=body, headers=headers) as resp:
            return resp.status, orjson.loads(await resp.read())

    status, event = await call(
        "/services/collector/event",
        b'{"event": "acked event"}',
        **splunk,
        **{hec_route.CHANNEL_HEADER: channel},
    )
    assert status == 200 and set(event) == {"text", "code", "ackId"}, event
    status, raw = await call(f"/services/collector/raw?channel={channel}", b"acked line\n", **splunk)
    assert status == 200 and type(raw["ackId"]) is int and raw["ackId"] != event["ackId"], raw
    # No channel: HEC's plain answer, as before.
    assert await call("/services/collector/event", b'{"event": "plain"}', **splunk) == (
        200,
        {"text": "Success", "code": 0},
    )
    assert await stack.wait_rows(tenant.project, 3) == 3

    mask = (1 << hec_route.PARTITION_BITS) - 1
    for message, answer in (("acked event", event), ("acked line", raw)):
        ((partition, offset),) = stack.query(
            "SELECT kafka_partition, kafka_offset FROM logs "
            "WHERE project = {p:String} AND message = {m:String}",
            p=tenant.project,
            m=message,
        )
        assert (answer["ackId"] & mask, answer["ackId"] >> hec_route.PARTITION_BITS) == (partition, offset)

    later = hec_route.ack_id(event["ackId"] & mask, (event["ackId"] >> hec_route.PARTITION_BITS) + 10**9)
    no_partition = hec_route.ack_id(mask, 0)
    asked = [event["ackId"], raw["ackId"], later, no_partition]
    query = orjson.dumps({"acks": asked})
    expected = {
        str(event["ackId"]): True,
        str(raw["ackId"]): True,
        str(later): False,
        str(no_partition): False,
    }
    deadline = time.monotonic() + 15
    while True:  # the watermark is written by the same insert as the rows, a moment after them
        status, acks = await call(
            "/services/collector/ack", query, **splunk, **{hec_route.CHANNEL_HEADER: channel}
        )
        if status != 200 or acks == {"acks": expected} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert (status, acks) == (200, {"acks": expected})
    # Another channel (or ?channel=) may ask too: the ids carry no per-channel state.
    assert await call(f"/services/collector/ack?channel={uuid.uuid4()}", query, **splunk) == (200, acks)

    ack = "/services/collector/ack"
    cases = [
        (ack, query, splunk, 400, 10),  # no channel
        (ack, b'{"acks": "0"}', {**splunk, hec_route.CHANNEL_HEADER: channel}, 400, 6),
        (ack, b'{"acks": [1.5]}', {**splunk, hec_route.CHANNEL_HEADER: channel}, 400, 6),
        (ack, b'{"acks": [-1]}', {**splunk, hec_route.CHANNEL_HEADER: channel}, 400, 6),
        (ack, b"not json", {**splunk, hec_route.CHANNEL_HEADER: channel}, 400, 6),
        (ack, query, {hec_route.CHANNEL_HEADER: channel}, 401, 2),
        (ack, query, {"Authorization": "Splunk mr_nope", hec_route.CHANNEL_HEADER: channel}, 403, 4),
    ]
    for path, body, headers, want_status, code in cases:
        got_status, got = await call(path, body, **headers)
        assert (got_status, got["code"]) == (want_status, code), (body, headers.keys(), got)


# -- OTLP/HTTP logs ------------------------------------------------------------------------------


def otel_logger(exporter: Any, resource: dict[str, str]) -> tuple[logging.Logger, Any, list[Any]]:
    """The SDK's LoggerProvider, with the logging handler of `opentelemetry-instrumentation-logging`
    (the SDK's own is deprecated in its favour), exporting through `exporter`; results recorded."""
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    results: list[Any] = []
    export = exporter.export

    def recording(batch: Any) -> Any:
        result = export(batch)
        results.append(result)
        return result

    exporter.export = recording
    provider = LoggerProvider(resource=Resource.create(resource))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = logging.getLogger(f"otel-{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(LoggingHandler(logger_provider=provider))
    return logger, provider, results


@pytest.mark.parametrize("encoding", ["protobuf-gzip", "json"])
async def test_opentelemetry_sdk_exporter_lands_with_resource_scope_and_trace(
    stack: Stack, encoding: str
) -> None:
    from opentelemetry.sdk._logs.export import LogRecordExportResult
    from opentelemetry.sdk.trace import TracerProvider

    tenant = await fresh(stack, f"otlp-{encoding}")
    headers = {"Authorization": f"Bearer {tenant.key}"}
    if encoding == "json":
        from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonExporter

        exporter: Any = JsonExporter(endpoint=stack.url + "/v1/logs", headers=headers)
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        exporter = OTLPLogExporter(
            endpoint=stack.url + "/v1/logs", headers=headers, compression=Compression.Gzip
        )
    logger, provider, results = otel_logger(
        exporter,
        {
            "service.name": "checkout",
            "deployment.environment.name": "prod",
            "host.name": "web-9",
            "team": "pay",
        },
    )
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("charge") as span:
        logger.error("charge failed", extra={"order.id": 42, "retry": True})
        context = span.get_span_context()
    logger.info("charge retried")

    assert await asyncio.to_thread(provider.force_flush)
    await asyncio.to_thread(provider.shutdown)

    assert results and all(r == LogRecordExportResult.SUCCESS for r in results)
    assert await stack.wait_rows(tenant.project, 2) == 2
    rows = stored(
        stack,
        tenant.project,
        "message, level, severity_number, severity_text, service, environment, host, trace_id, span_id,"
        " attributes, dialect",
    )
    first, second = rows
    assert first[:9] == (
        "charge failed",
        "error",
        17,
        "ERROR",
        "checkout",
        "prod",
        "web-9",
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert first[9]["order.id"] == "42" and first[9]["retry"] == "true"
    assert first[9]["resource.team"] == "pay" and first[9]["scope.name"] == logger.name
    assert second[:5] == ("charge retried", "info", 9, "INFO", "checkout")
    assert {r[10] for r in rows} == {"otlp"}


async def test_otlp_answers_partial_success_and_status_in_the_request_encoding(stack: Stack) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    from gateway.dialects.otlp import Status

    tenant = await fresh(stack, "otlp-answers")
    bearer = {"Authorization": f"Bearer {tenant.key}"}
    now = time.time_ns()

    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=now, severity_number=13).body.string_value = "kept"
    records.add(time_unix_nano=2**64 - 1).body.string_value = "year 2554"
    async with stack.session.post(
        stack.url + "/v1/logs",
        data=request.SerializeToString(),
        headers={**bearer, "Content-Type": "application/x-protobuf"},
    ) as resp:
        status, content_type = resp.status, resp.content_type
        answer = ExportLogsServiceResponse.FromString(await resp.read())
    assert (status, content_type) == (200, "application/x-protobuf")
    assert answer.partial_success.rejected_log_records == 1
    assert "log record 1" in answer.partial_success.error_message

    kept = {"timeUnixNano": str(now), "body": {"stringValue": "j"}}
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [kept, {"timeUnixNano": "soon"}]}]}]}
    async with stack.session.post(stack.url + "/v1/logs", data=orjson.dumps(doc), headers=bearer) as resp:
        assert resp.status == 200
        assert orjson.loads(await resp.read())["partialSuccess"]["rejectedLogRecords"] == "1"

    # errors: google.rpc.Status, protobuf or JSON like the request
    for data, content_type, expected, code in [
        (b"\x0a\xff\xff\xff", "application/x-protobuf", 400, 3),
        (b'{"resourceLogs": [', "application/json", 400, 3),
    ]:
        async with stack.session.post(
            stack.url + "/v1/logs", data=data, headers={**bearer, "Content-Type": content_type}
        ) as resp:
            raw = await resp.read()
            assert (resp.status, resp.content_type) == (expected, content_type)
            got = (
                Status.FromString(raw).code
                if content_type != "application/json"
                else orjson.loads(raw)["code"]
            )
            assert got == code
    async with stack.session.post(
        stack.url + "/v1/logs",
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    ) as resp:
        assert (resp.status, Status.FromString(await resp.read()).code) == (401, 16)

    assert await stack.wait_rows(tenant.project, 2) == 2
    assert sorted(r[0] for r in stored(stack, tenant.project, "message")) == ["j", "kept"]


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "snappy", "zlib", "deflate", "lz4", "none"])
async def test_otlp_takes_every_compression_the_collector_can_send(stack: Stack, encoding: str) -> None:
    """The Collector's `otlphttp` exporter `compression:` values, as its confighttp writes them:
    gzip, zstd, framed snappy, zlib for both `zlib` and `deflate`, the LZ4 frame format."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    tenant = await fresh(stack, f"otlp-{encoding}")
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for i in range(3):
        records.add(time_unix_nano=time.time_ns(), severity_number=9).body.string_value = f"{encoding} {i}"
    plain = request.SerializeToString()
    packed = compress(plain, encoding)
    headers = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/x-protobuf"}
    if encoding != "none":
        headers["Content-Encoding"] = encoding
        assert packed != plain
    async with stack.session.post(stack.url + "/v1/logs", data=packed, headers=headers) as resp:
        assert resp.status == 200, await resp.read()
    assert await stack.wait_rows(tenant.project, 3) == 3
    assert sorted(r[0] for r in stored(stack, tenant.project, "message")) == [
        f"{encoding} {i}" for i in range(3)
    ]


async def test_v1_logs_routing_between_otlp_and_the_seed_apis(stack: Stack) -> None:
    """The ambiguous cases of the shared path: each lands with the dialect the rule names."""
    tenant = await fresh(stack, "otlp-route")
    bearer = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"}
    now = str(time.time_ns())
    otlp_doc = {
        "resourceLogs": [
            {"scopeLogs": [{"logRecords": [{"timeUnixNano": now, "body": {"stringValue": "o"}}]}]}
        ]
    }
    cases = [
        (bearer, orjson.dumps(otlp_doc), "otlp"),
        # resourceLogs beside batch: OTLP's key comes first in the rule
        (bearer, orjson.dumps({**otlp_doc, "batch": []}), "otlp"),
        (bearer, orjson.dumps({"batch": [{"severity": "info", "message": "g"}]}), "goodlogs_logs"),
        # a TG2G header wins over an OTLP body
        ({"X-TG2G-Api-Key": tenant.key, "Content-Type": "application/json"},
         orjson.dumps({**otlp_doc, "logs": [{"message": "t"}]}), "tg2g"),
    ]  # fmt: skip
    for headers, body, dialect in cases:
        async with stack.session.post(stack.url + "/v1/logs", data=body, headers=headers) as resp:
            assert 200 <= resp.status < 300, (dialect, await resp.read())
    assert await stack.wait_rows(tenant.project, 4) == 4
    dialects = sorted(r[0] for r in stored(stack, tenant.project, "dialect"))
    assert dialects == sorted(d for _, _, d in cases)

    # a Timberlogs-only type wins over an OTLP body: Timberlogs refuses it in its own format
    async with stack.session.post(
        stack.url + "/v1/logs",
        data=orjson.dumps(otlp_doc),
        headers={**bearer, "Content-Type": "application/x-ndjson"},
    ) as resp:
        refused = orjson.loads(await resp.read())
        assert (resp.status, refused["code"]) == (400, "PARSE_ERROR")

    # broken JSON that opens like OTLP gets OTLP's error body; protobuf never reaches another API
    async with stack.session.post(
        stack.url + "/v1/logs", data=b'{"resourceLogs": [}', headers=bearer
    ) as resp:
        assert (resp.status, set(orjson.loads(await resp.read()))) == (400, {"code", "message"})
    async with stack.session.post(
        stack.url + "/v1/logs",
        data=b"\x00",
        headers={"X-API-Key": tenant.key, "Content-Type": "application/x-protobuf"},
    ) as resp:
        assert (resp.status, resp.content_type) == (401, "application/x-protobuf")


async def test_otlp_key_in_the_header_the_operator_names(
    stack: Stack, gateway_factory: Callable[..., Awaitable[Gateway]]
) -> None:
    """MILLRACE_OTLP_KEY_HEADER=x-api-key: a collector's x-api-key carries the key, protobuf or JSON."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    gateway = await gateway_factory(otlp_key_header="x-api-key")
    tenant = await fresh(stack, "otlp-header")
    await gateway.wait_for_key(tenant.key)
    exporter = OTLPLogExporter(endpoint=gateway.url + "/v1/logs", headers={"x-api-key": tenant.key})
    logger, provider, results = otel_logger(exporter, {"service.name": "collector"})
    logger.warning("via x-api-key")
    assert await asyncio.to_thread(provider.force_flush)
    await asyncio.to_thread(provider.shutdown)
    assert results == [LogRecordExportResult.SUCCESS]

    # OTLP JSON with that header is OTLP too (on this gateway the header is OTLP's, not Timberlogs')
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "json via header"}}]}]}]}
    async with stack.session.post(
        gateway.url + "/v1/logs", data=orjson.dumps(doc), headers={"x-api-key": tenant.key}
    ) as resp:
        assert (resp.status, orjson.loads(await resp.read())) == (200, {})
    async with stack.session.post(
        gateway.url + "/v1/logs", data=orjson.dumps(doc), headers={"x-api-key": "mr_wrong"}
    ) as resp:
        assert (resp.status, orjson.loads(await resp.read())["code"]) == (401, 16)

    assert await stack.wait_rows(tenant.project, 2) == 2
    assert sorted(r[0] for r in stored(stack, tenant.project, "message")) == [
        "json via header",
        "via x-api-key",
    ]
