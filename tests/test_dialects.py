"""Every example request in the seed documents, replayed verbatim (host and key swapped),
gets the documented answer, and its logs land with their fields mapped."""

from __future__ import annotations

import gzip
import uuid
import zlib
from typing import Any

import orjson
import pytest
import zstandard

from millrace.keys import SCOPE_EVENTS
from tests.conftest import Stack, Tenant
from tests.seeds import CurlExample, curl_examples, http_examples, json_documents

pytestmark = pytest.mark.integration

BROWSER_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


async def send(stack: Stack, ex: CurlExample, **headers: str) -> tuple[int, Any, dict[str, str]]:
    async with stack.session.request(
        ex.method, stack.url + ex.path, data=ex.body, headers={**ex.headers, **headers}
    ) as resp:
        raw = await resp.read()
        return resp.status, (orjson.loads(raw) if raw else None), dict(resp.headers)


def with_key(ex: CurlExample, key: str) -> CurlExample:
    """The example with only its key swapped, wherever the dialect carries it."""
    headers = dict(ex.headers)
    for name, value in headers.items():
        if name == "Authorization":
            scheme, sep, _ = value.partition(" ")
            headers[name] = f"{scheme} {key}" if sep else key
        elif name in ("X-TG2G-Api-Key", "X-API-Key"):
            headers[name] = key
    return CurlExample(ex.method, ex.path, headers, ex.body)


def rows(stack: Stack, project: str, columns: str, table: str = "logs") -> list[tuple[Any, ...]]:
    return stack.query(
        f"SELECT {columns} FROM {table} WHERE project = {{p:String}} ORDER BY timestamp, kafka_offset, "
        + ("message" if table == "logs" else "event"),
        p=project,
    )


async def fresh(stack: Stack, name: str) -> Tenant:
    return await stack.tenant(f"{name}-{uuid.uuid4().hex[:8]}")


# -- TG2G (000) -------------------------------------------------------------------


async def test_tg2g_example_is_accepted_and_stored_with_entity_and_extra_fields(stack: Stack) -> None:
    tenant = await fresh(stack, "tg2g")
    (example,) = http_examples("000")
    assert orjson.loads(example.body) == json_documents("000")[0]  # the two samples agree

    status, body, _ = await send(stack, with_key(example, tenant.key))

    assert (status, body) == (202, {"accepted": 2, "rejected": 0})
    assert await stack.wait_rows(tenant.project, 2) == 2
    stored = rows(
        stack,
        tenant.project,
        "message, level, service, entity_name, entity_kind, entity_tags, "
        "request_id, attributes, toString(timestamp)",
    )
    assert stored == [
        (
            "Payment gateway timeout",
            "error",
            "checkout-service",
            "checkout-service",
            "service",
            ["prod", "payments"],
            "abc-123",
            {"region": "us-east-1"},
            "2024-01-01 12:00:00.000000000",
        ),
        (
            "Retry succeeded",
            "info",
            "checkout-service",
            "checkout-service",
            "service",
            ["prod", "payments"],
            "abc-123",
            {},
            "2024-01-01 12:00:03.000000000",
        ),
    ]


async def test_tg2g_record_without_message_is_rejected_alone(stack: Stack) -> None:
    tenant = await fresh(stack, "tg2g-partial")
    body = orjson.dumps(
        {"source": "svc", "logs": [{"message": "kept"}, {"level": "error"}, {"message": "also"}]}
    )
    ex = CurlExample(
        "POST", "/v1/logs", {"X-TG2G-Api-Key": tenant.key, "Content-Type": "application/json"}, body
    )
    status, answer, _ = await send(stack, ex)
    assert status == 202
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    assert answer["errors"][0]["index"] == 1
    assert await stack.wait_rows(tenant.project, 2) == 2
    # Ingest time stands in for the missing timestamp.
    ((recent,),) = stack.query(
        "SELECT min(timestamp) > now() - INTERVAL 1 HOUR FROM logs WHERE project = {p:String}",
        p=tenant.project,
    )
    assert recent == 1


# -- AstraLog (001) ---------------------------------------------------------------


async def test_astralog_example_and_health(stack: Stack) -> None:
    tenant = await fresh(stack, "astralog")
    (example,) = curl_examples("001")
    status, body, _ = await send(stack, with_key(example, tenant.key))
    assert (status, body) == (200, {"status": "accepted"})
    assert await stack.wait_rows(tenant.project, 1) == 1
    async with stack.session.get(stack.url + "/health") as resp:
        assert resp.status == 200


# -- Dynatrace (002) --------------------------------------------------------------


async def test_dynatrace_json_model_is_204_and_every_event_stored(stack: Stack) -> None:
    tenant = await fresh(stack, "dynatrace")
    model = json_documents("002")[0]
    ex = CurlExample(
        "POST",
        "/api/v2/logs/ingest",
        {"Authorization": f"Api-Token {tenant.key}", "Content-Type": "application/json; charset=utf-8"},
        orjson.dumps(model),
    )
    status, body, _ = await send(stack, ex)
    assert (status, body) == (204, None)
    assert await stack.wait_rows(tenant.project, 4) == 4
    stored = rows(
        stack, tenant.project, "message, level, attributes['log.source'], attributes['custom.attribute']"
    )
    assert all(m == "Exception: Custom error log sent via Generic Log Ingest" for m, *_ in stored)
    assert sum(1 for _, level, _, custom in stored if level == "error" and custom == "attribute value") == 1
    assert sum(1 for _, _, source, _ in stored if source == "/var/log/syslog") == 3


async def test_dynatrace_text_plain_is_one_event(stack: Stack) -> None:
    tenant = await fresh(stack, "dynatrace-text")
    ex = CurlExample(
        "POST",
        "/api/v2/logs/ingest",
        {"Authorization": f"Api-Token {tenant.key}", "Content-Type": "text/plain; charset=utf-8"},
        b"Exception: line one\nstill the same event\n",
    )
    status, _, _ = await send(stack, ex)
    assert status == 204
    assert await stack.wait_rows(tenant.project, 1) == 1
    assert rows(stack, tenant.project, "message") == [("Exception: line one\nstill the same event",)]


async def test_dynatrace_partial_success_is_200_naming_dropped_events(stack: Stack) -> None:
    tenant = await fresh(stack, "dynatrace-partial")
    body = orjson.dumps([{"content": "kept"}, {"severity": "error"}, {"content": "kept too"}])
    ex = CurlExample(
        "POST",
        "/api/v2/logs/ingest",
        {"Authorization": f"Api-Token {tenant.key}", "Content-Type": "application/json"},
        body,
    )
    status, answer, _ = await send(stack, ex)
    assert status == 200
    assert answer["details"]["code"] == 200
    assert "event 1" in answer["details"]["message"]
    assert await stack.wait_rows(tenant.project, 2) == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"[{", 400), (b"", 400), (b"\xff\xfe", 400)],
    ids=["truncated-json", "empty", "invalid-utf8"],
)
async def test_dynatrace_errors_use_the_error_envelope(stack: Stack, body: bytes, status: int) -> None:
    tenant = await fresh(stack, "dynatrace-err")
    ex = CurlExample(
        "POST",
        "/api/v2/logs/ingest",
        {"Authorization": f"Api-Token {tenant.key}", "Content-Type": "application/json"},
        body,
    )
    got, answer, _ = await send(stack, ex)
    assert status == got
    assert status == answer["error"]["code"] and answer["error"]["message"]
    ex.headers["Authorization"] = "Api-Token wrong"
    got, answer, _ = await send(stack, ex)
    assert (got, answer["error"]["code"]) == (401, 401)


# -- GoodLogs (003) ---------------------------------------------------------------


async def test_goodlogs_examples_with_public_and_secret_keys(stack: Stack) -> None:
    tenant = await fresh(stack, "goodlogs")
    public = await stack.tenant(tenant.project, frozenset({SCOPE_EVENTS}))
    events_ex, logs_ex = [e for e in curl_examples("003") if e.path in ("/v1/events", "/v1/logs")]

    status, body, _ = await send(stack, with_key(events_ex, public.key), **{"User-Agent": BROWSER_UA})
    assert (status, body) == (202, {"accepted": 2, "rejected": 0})
    status, body, _ = await send(stack, with_key(logs_ex, tenant.key), **{"User-Agent": BROWSER_UA})
    assert (status, body) == (202, {"accepted": 2, "rejected": 0})
    # A public key may send events only.
    status, body, _ = await send(stack, with_key(logs_ex, public.key))
    assert status == 403
    assert body["error"]["code"] == "FORBIDDEN"

    assert await stack.wait_rows(tenant.project, 2) == 2
    assert await stack.wait_rows(tenant.project, 2, table="events") == 2
    logs = rows(stack, tenant.project, "message, level, attributes")
    by_message = {m: (lvl, attrs) for m, lvl, attrs in logs}
    level, attrs = by_message["Payment failed: card_declined"]
    assert level == "error"
    assert {
        "orderId": "ord_123",
        "amount": "29",
        "service": "billing",
        "env": "prod",
    }.items() <= attrs.items()
    assert {
        "$browser": "Mobile Safari 17",
        "$os": "iOS 17",
        "$device": "Mobile",
        "$ip": "127.0.0.1",
    }.items() <= (attrs.items())
    events = {
        e: (d, p) for e, d, p in rows(stack, tenant.project, "event, distinct_id, properties", "events")
    }
    distinct_id, props = events["signup"]
    assert distinct_id == "user_123"
    assert {
        "plan": "pro",
        "source": "google",
        "amount": "29.99",
        "distinct_id": "user_123",
    }.items() <= props.items()
    assert "$browser" in events["page_view"][1]


async def test_goodlogs_per_item_validation_and_limits(stack: Stack) -> None:
    tenant = await fresh(stack, "goodlogs-limits")
    headers = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"}
    body = orjson.dumps(
        {
            "batch": [
                {"severity": "error", "message": "ok"},
                {"severity": "loud", "message": "bad severity"},
                {"severity": "info"},
                {"severity": "info", "message": "x" * 70_000},
            ]
        }
    )
    status, answer, _ = await send(stack, CurlExample("POST", "/v1/logs", headers, body))
    assert (status, answer) == (202, {"accepted": 1, "rejected": 3})
    assert await stack.wait_rows(tenant.project, 1) == 1

    too_many = orjson.dumps({"batch": [{"severity": "info", "message": "m"}] * 501})
    status, answer, _ = await send(stack, CurlExample("POST", "/v1/logs", headers, too_many))
    assert (status, answer["error"]["code"]) == (400, "VALIDATION_ERROR")

    too_big = orjson.dumps({"batch": [{"severity": "info", "message": "m" * 60_000}] * 40})
    status, answer, _ = await send(stack, CurlExample("POST", "/v1/logs", headers, too_big))
    assert status == 413 and answer["error"]["message"]

    status, answer, _ = await send(
        stack, CurlExample("POST", "/v1/logs", {**headers, "Authorization": "Bearer nope"}, body)
    )
    assert (status, answer["error"]["code"]) == (401, "UNAUTHORIZED")


# -- Timberlogs (004) -------------------------------------------------------------

_TIMBERLOGS_COUNTS = [1, 2, 2, 2, 2, 3, 1, 1, 3, 2]


def timberlogs_examples() -> list[CurlExample]:
    # The last example is the SDK's `-d "$body"` shell variable, not a request body.
    return [e for e in curl_examples("004") if e.body != b"$body"]


def test_the_timberlogs_seed_has_the_examples_we_replay() -> None:
    assert len(_TIMBERLOGS_COUNTS) == len(timberlogs_examples())


@pytest.mark.parametrize("index", range(len(_TIMBERLOGS_COUNTS)))
async def test_timberlogs_examples(stack: Stack, index: int) -> None:
    tenant = await fresh(stack, f"timber{index}")
    example = timberlogs_examples()[index]
    status, body, _ = await send(stack, with_key(example, tenant.key))
    expected = _TIMBERLOGS_COUNTS[index]
    assert status == 200, body
    assert {"success": True, "count": expected} == {k: body[k] for k in ("success", "count")}
    assert isinstance(body["timestamp"], int) and body["timestamp"] > 1_700_000_000_000
    assert expected == await stack.wait_rows(tenant.project, expected)
    for service, environment, message in rows(stack, tenant.project, "service, environment, message"):
        assert service and environment == "production" and message


async def test_timberlogs_sdk_header_and_errors(stack: Stack) -> None:
    tenant = await fresh(stack, "timber-sdk")
    example = timberlogs_examples()[0]
    sdk = CurlExample(
        example.method,
        example.path,
        {"X-API-Key": tenant.key, "Content-Type": "application/json"},
        example.body,
    )
    status, body, _ = await send(stack, sdk)
    assert (status, body["count"]) == (200, 1)

    bad_line = CurlExample(
        "POST",
        "/v1/logs",
        {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/x-ndjson"},
        b'{"level":"info","message":"a","source":"s","environment":"production"}\n\n{oops\n',
    )
    status, body, _ = await send(stack, bad_line)
    assert (status, body["code"]) == (400, "PARSE_ERROR")
    assert "line 3" in body["error"]

    status, body, _ = await send(stack, with_key(example, "tb_live_wrong"))
    assert (status, body) == (401, {"error": "Invalid API key"})


# -- POST /v1/logs: whose request is it? ------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "dialect"),
    [
        ({"X-TG2G-Api-Key": "{key}"}, {"source": "s", "logs": [{"message": "m"}]}, "tg2g"),
        ({"X-TG2G-Api-Key": "{key}"}, {"batch": [{"message": "m"}], "logs": [{"message": "m"}]}, "tg2g"),
        (
            {"Authorization": "Bearer {key}"},
            {"batch": [{"severity": "info", "message": "m"}]},
            "goodlogs_logs",
        ),
        (
            {"Authorization": "Bearer {key}"},
            {"logs": [{"level": "info", "message": "m", "source": "s", "environment": "production"}]},
            "timberlogs",
        ),
        (
            {"Authorization": "Bearer {key}"},
            [{"level": "info", "message": "m", "source": "s", "environment": "production"}],
            "timberlogs",
        ),
        (
            {"X-API-Key": "{key}"},
            {"logs": [{"level": "info", "message": "m", "source": "s", "environment": "production"}]},
            "timberlogs",
        ),
        (
            {"Authorization": "Bearer {key}", "Content-Type": "application/x-ndjson"},
            {"level": "info", "message": "m", "source": "s", "environment": "production"},
            "timberlogs",
        ),
    ],
    ids=[
        "tg2g-header",
        "tg2g-header-beats-batch",
        "bearer-batch",
        "bearer-logs",
        "bearer-array",
        "x-api-key",
        "ndjson",
    ],
)
async def test_shared_logs_route_picks_the_dialect(
    stack: Stack, headers: dict[str, str], body: Any, dialect: str
) -> None:
    tenant = await fresh(stack, "route")
    headers = {
        "Content-Type": "application/json",
        **{k: v.format(key=tenant.key) for k, v in headers.items()},
    }
    status, _, _ = await send(stack, CurlExample("POST", "/v1/logs", headers, orjson.dumps(body)))
    assert status in (200, 202)
    assert await stack.wait_rows(tenant.project, 1) == 1
    assert [(dialect,)] == rows(stack, tenant.project, "dialect")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"X-TG2G-Api-Key": "wrong"},
            {"error": {"code": "unauthorized", "message": "missing or invalid API key"}},
        ),
        ({"Authorization": "Bearer wrong", "Content-Type": "text/plain"}, {"error": "Invalid API key"}),
        ({"X-API-Key": "wrong"}, {"error": "Invalid API key"}),
    ],
)
async def test_shared_logs_route_answers_401_in_the_chosen_dialect(
    stack: Stack, headers: dict[str, str], expected: Any
) -> None:
    ex = CurlExample("POST", "/v1/logs", headers, b'{"logs": [{"message": "m"}]}')
    status, body, _ = await send(stack, ex)
    assert (401, expected) == (status, body)


async def test_goodlogs_bearer_batch_401_is_goodlogs_format(stack: Stack) -> None:
    ex = CurlExample(
        "POST",
        "/v1/logs",
        {"Authorization": "Bearer wrong", "Content-Type": "application/json"},
        b'{"batch": []}',
    )
    status, body, _ = await send(stack, ex)
    assert (status, body["error"]["code"]) == (401, "UNAUTHORIZED")


# -- Across dialects: encodings ---------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("zstd", zstandard.ZstdCompressor().compress)],
)
async def test_compressed_bodies_are_accepted(stack: Stack, encoding: str, compress: Any) -> None:
    tenant = await fresh(stack, f"enc-{encoding}")
    example = timberlogs_examples()[-2]  # the 3-log batch
    ex = with_key(example, tenant.key)
    ex.headers["Content-Encoding"] = encoding
    ex.body = compress(ex.body)
    status, body, _ = await send(stack, ex)
    assert (status, body["count"]) == (200, 3)
    assert await stack.wait_rows(tenant.project, 3) == 3
