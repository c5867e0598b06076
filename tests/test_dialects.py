"""Every example request in the seed documents, replayed verbatim (host and key swapped),
gets the documented answer, and its logs land with their fields mapped."""

from __future__ import annotations

import base64
import gzip
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.dialects.astralog import ASTRALOG
from gateway.dialects.base import Problem, basic_key
from gateway.dialects.dynatrace import DYNATRACE
from gateway.dialects.goodlogs import GOODLOGS_EVENTS, GOODLOGS_LOGS
from gateway.dialects.otlp import OTLP_JSON
from gateway.dialects.shared_logs import choose
from gateway.dialects.tg2g import TG2G
from gateway.dialects.timberlogs import TIMBERLOGS
from millrace.keys import SCOPE_EVENTS
from tests.bodies import compress
from tests.conftest import Stack, Tenant
from tests.seeds import (
    CurlExample,
    curl_commands,
    curl_examples,
    http_examples,
    json_documents,
    section,
    with_key,
)

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
        stack,
        tenant.project,
        "toUnixTimestamp64Nano(timestamp) = toUnixTimestamp64Nano(observed_timestamp), "
        "toString(timestamp), level, severity_text, message, attributes, dialect",
    )
    content = "Exception: Custom error log sent via Generic Log Ingest"
    source = {"log.source": "/var/log/syslog"}
    ingest_time = [r[2:] for r in stored if r[0]]
    assert [r[1:] for r in stored if not r[0]] == [
        (
            "2022-01-17 22:12:31.000000000",
            "error",
            "error",
            content,
            {**source, "custom.attribute": "attribute value"},
            "dynatrace",
        ),
        ("2022-01-17 22:12:35.000000000", "info", "", content, source, "dynatrace"),
    ]
    assert sorted(ingest_time, key=lambda r: len(r[3])) == [
        ("info", "", content, {}, "dynatrace"),
        ("info", "", content, source, "dynatrace"),
    ]


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


async def test_dynatrace_too_large_is_413_in_the_error_envelope(stack: Stack) -> None:
    tenant = await fresh(stack, "dynatrace-413")
    headers = {"Authorization": f"Api-Token {tenant.key}", "Content-Type": "application/json"}
    # Over Dynatrace's 50,000 events per request, in a small body.
    too_many = b"[" + b",".join([b'{"content":"x"}'] * 50_001) + b"]"
    status, answer, _ = await send(stack, CurlExample("POST", "/api/v2/logs/ingest", headers, too_many))
    assert (status, answer["error"]["code"]) == (413, 413)
    assert "50,000" in answer["error"]["message"]
    # Over the decompressed-size cap: a small gzip body that inflates past it.
    bomb = gzip.compress(b" " * (stack.settings.max_decompressed_bytes + 1))
    status, answer, _ = await send(
        stack,
        CurlExample("POST", "/api/v2/logs/ingest", {**headers, "Content-Encoding": "gzip"}, bomb),
    )
    assert (status, answer["error"]["code"]) == (413, 413)
    assert "decompressed" in answer["error"]["message"]
    # Nothing of either request was stored: the next good one is the only row.
    ok = CurlExample("POST", "/api/v2/logs/ingest", headers, b'{"content": "after"}')
    assert (await send(stack, ok))[0] == 204
    assert await stack.wait_rows(tenant.project, 1) == 1


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

TIMBERLOG_COLUMNS = (
    "message",
    "level",
    "severity_text",
    "service",
    "environment",
    "dataset",
    "host",
    "user_id",
    "session_id",
    "request_id",
    "flow_id",
    "error_name",
    "error_stack",
    "tags",
    "attributes",
    "ts",
    "dialect",
)
INGEST_TIME = -1  # expected `ts` of a log sent without a time: the receive time


def tl(message: str, level: str, service: str, **columns: Any) -> dict[str, Any]:
    """One stored Timberlogs row as expected: what is not given is the column's empty value."""
    row: dict[str, Any] = {name: "" for name in TIMBERLOG_COLUMNS}
    row.update(
        message=message,
        level=level,
        severity_text=level,
        service=service,
        environment="production",
        dataset="default",
        tags=[],
        attributes={},
        ts=INGEST_TIME,
        dialect="timberlogs",
    )
    row.update(columns)
    return row


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) * 10**9


def stored_timberlogs(stack: Stack, project: str) -> list[dict[str, Any]]:
    columns = ", ".join(TIMBERLOG_COLUMNS[:-2])
    found = stack.query(
        f"SELECT {columns}, if(timestamp = observed_timestamp, {INGEST_TIME}, "
        "toUnixTimestamp64Nano(timestamp)), dialect FROM logs WHERE project = {p:String}",
        p=project,
    )
    return sorted(
        (dict(zip(TIMBERLOG_COLUMNS, r, strict=True)) for r in found), key=lambda r: (r["message"], r["ts"])
    )


def _session(event_id: str, kind: str, **data: str) -> dict[str, str]:
    """The attributes of an event of the seed's OBL session `sess_1`."""
    return {
        **data,
        "event_type": kind,
        "event_id": event_id,
        "session.id": "sess_1",
        "session.type": "log",
        "session.started": "2024-01-15T10:00:00Z",
        "session.ended": "2024-01-15T11:00:00Z",
        "obl.format": "open-board-log-0.1",
    }


_TL_SYSLOG_5424 = {"hostname": "myhost", "procid": "1234"}
# The stored rows of each curl example of the seed, in the document's order, by message.
# The seed's RFC 5424 line, stored: both in its curl example and in its "Body (Syslog)" section.
TL_SYSLOG_NOTICE = tl(
    "Connection refused",
    "info",
    "api",
    severity_text="notice",
    host="myhost",
    ts=utc(2024, 1, 15, 10, 30, 0),
    attributes={**_TL_SYSLOG_5424, "severity": "notice", "facility": "local4"},
)

TIMBERLOGS_STORED: list[list[dict[str, Any]]] = [
    [tl("Application started", "info", "my-app")],
    [tl("Connection refused", "error", "api"), tl("Request completed", "info", "api")],
    [
        TL_SYSLOG_NOTICE,
        tl(
            "Retrying connection",
            "info",
            "api",
            host="myhost",
            ts=utc(2024, 1, 15, 10, 30, 1),
            attributes={**_TL_SYSLOG_5424, "severity": "info", "facility": "user"},
        ),
    ],
    [
        tl(
            "Connection refused to database",
            "error",
            "nginx",
            severity_text="ERROR",
            ts=utc(2024, 1, 15, 10, 30, 0),
        ),
        tl("Retrying connection...", "info", "nginx", severity_text="INFO", ts=utc(2024, 1, 15, 10, 30, 1)),
    ],
    [
        tl("Connection refused", "error", "api", ts=1705312200000 * 10**6),
        tl("Request completed", "info", "api", ts=1705312201000 * 10**6),
    ],
    [
        tl(
            f"Button: {label}",
            "info",
            "my-aac-app",
            user_id="user_abc",
            ts=utc(2024, 1, 15, 10, 5, second),
            attributes=_session(event_id, "button", label=label, spoken="true"),
        )
        for event_id, label, second in (("e1", "I", 0), ("e2", "want", 1))
    ]
    + [
        tl(
            "Utterance: I want juice",
            "info",
            "my-aac-app",
            user_id="user_abc",
            ts=utc(2024, 1, 15, 10, 5, 2),
            attributes=_session("e3", "utterance", text="I want juice"),
        )
    ],
    [
        tl(
            "User signed in",
            "info",
            "auth-service",
            user_id="user_123",
            session_id="sess_abc",
            tags=["auth", "login"],
            attributes={"method": "oauth", "provider": "google"},
        )
    ],
    [
        tl(
            "Database connection failed",
            "error",
            "api-server",
            error_name="ConnectionError",
            error_stack="ConnectionError: ECONNREFUSED\n    at connect (/app/db.js:42:11)\n    at ...",
            tags=["database", "critical"],
        )
    ],
    [
        tl("Processing request", "debug", "api", request_id="req_xyz"),
        tl("Request completed", "info", "api", request_id="req_xyz", attributes={"duration": "145"}),
        tl("Request received", "info", "api", request_id="req_xyz"),
    ],
    [
        tl(
            "Checkout started",
            "info",
            "checkout-service",
            flow_id="checkout-a1b2c3d4",
            attributes={"stepIndex": "0"},
        ),
        tl(
            "Payment processed",
            "info",
            "checkout-service",
            flow_id="checkout-a1b2c3d4",
            attributes={"stepIndex": "1"},
        ),
    ],
]


def timberlogs_examples() -> list[CurlExample]:
    # The last example is the SDK's `-d "$body"` shell variable, not a request body.
    return [e for e in curl_examples("004") if e.body != b"$body"]


def test_the_timberlogs_seed_has_the_examples_we_replay() -> None:
    assert len(TIMBERLOGS_STORED) == len(timberlogs_examples())


@pytest.mark.parametrize("index", range(len(TIMBERLOGS_STORED)))
async def test_timberlogs_examples(stack: Stack, index: int) -> None:
    tenant = await fresh(stack, f"timber{index}")
    example = timberlogs_examples()[index]
    status, body, _ = await send(stack, with_key(example, tenant.key))
    expected = TIMBERLOGS_STORED[index]
    assert status == 200, body
    assert {"success": True, "count": len(expected)} == {k: body[k] for k in ("success", "count")}
    assert isinstance(body["timestamp"], int) and body["timestamp"] > 1_700_000_000_000
    assert len(expected) == await stack.wait_rows(tenant.project, len(expected))
    assert expected == stored_timberlogs(stack, tenant.project)


async def test_timberlogs_sdk_raw_ingestion_example(stack: Stack) -> None:
    """The `ingestRaw(body, 'csv', ...)` equivalent curl, with the document's CSV body as `$body`."""
    tenant = await fresh(stack, "timber-raw")
    (raw,) = [e for e in curl_examples("004") if e.body == b"$body"]
    assert raw.path == "/v1/logs?format=csv&source=nginx&environment=production"
    csv_body = section("004", "Body (CSV)", "First row")
    example = CurlExample(raw.method, raw.path, raw.headers, csv_body.encode())
    status, body, _ = await send(stack, with_key(example, tenant.key))
    assert (status, body["count"]) == (200, 2)
    assert await stack.wait_rows(tenant.project, 2) == 2
    # The CSV's own `source` column wins over the ?source= default.
    assert stored_timberlogs(stack, tenant.project) == TIMBERLOGS_STORED[4]


def _recent_jan_15(now: datetime) -> int:
    """Where an RFC 3164 `Jan 15 10:30:00` lands: this year's, unless that is still ahead."""
    this_year = datetime(now.year, 1, 15, 10, 30, tzinfo=UTC)
    year = now.year if this_year <= now + timedelta(days=1) else now.year - 1
    return utc(year, 1, 15, 10, 30, 0)


async def test_timberlogs_body_examples(stack: Stack) -> None:
    """The request bodies the document shows per format (beyond the curl examples), each stored."""
    tenant = await fresh(stack, "timber-bodies")
    syslog_lines = [
        line for line in section("004", "Body (Syslog)", "Syslog severity").splitlines() if line[:1] == "<"
    ]
    requests = [
        ("/v1/logs", "application/json", section("004", "Body (JSON)", "The JSON parser")),
        ("/v1/logs?environment=production", "application/x-syslog", "\n".join(syslog_lines)),
        ("/v1/logs?environment=production", "application/x-obl", section("004", "Body (OBL)", "Open Board")),
    ]
    for path, content_type, body in requests:
        headers = {"Authorization": f"Bearer {tenant.key}", "Content-Type": content_type}
        status, answer, _ = await send(stack, CurlExample("POST", path, headers, body.encode()))
        assert status == 200, answer
    assert await stack.wait_rows(tenant.project, 5) == 5
    obl = {"session.id": "sess_1", "session.type": "log", "obl.format": "open-board-log-0.1"}
    obl["session.started"], obl["session.ended"] = "2024-01-15T10:00:00Z", "2024-01-15T11:00:00Z"
    assert stored_timberlogs(stack, tenant.project) == [
        tl(
            "Button: hello",
            "info",
            "my-aac-app",
            user_id="user_abc",
            ts=utc(2024, 1, 15, 10, 5, 0),
            attributes={**obl, "label": "hello", "spoken": "true", "event_id": "e1", "event_type": "button"},
        ),
        TL_SYSLOG_NOTICE,
        tl(
            "Connection refused",
            "error",
            "api",
            severity_text="critical",
            host="myhost",
            ts=_recent_jan_15(datetime.now(UTC)),
            attributes={**_TL_SYSLOG_5424, "severity": "critical", "facility": "auth"},
        ),
        tl(
            "User signed in",
            "info",
            "api-server",
            attributes={"userId": "user_123"},
        ),
        tl(
            "Utterance: hello world",
            "info",
            "my-aac-app",
            user_id="user_abc",
            ts=utc(2024, 1, 15, 10, 6, 0),
            attributes={**obl, "text": "hello world", "event_id": "e2", "event_type": "utterance"},
        ),
    ]


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


async def test_timberlogs_validation_errors_list_issues_and_store_nothing(stack: Stack) -> None:
    tenant = await fresh(stack, "timber-invalid")
    headers = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"}
    good = {"level": "info", "message": "m", "source": "api", "environment": "production"}
    # One bad log refuses the whole request: Timberlogs has no partial success.
    mixed = orjson.dumps({"logs": [good, {**good, "level": "verbose"}]})
    status, body, _ = await send(stack, CurlExample("POST", "/v1/logs", headers, mixed))
    assert (status, body["code"]) == (400, "PARSE_ERROR")
    assert "index 1" in body["error"] and "level" in body["error"]
    assert body["issues"][0]["path"] == [1, "level"]

    too_many = orjson.dumps({"logs": [good] * 101})
    status, body, _ = await send(stack, CurlExample("POST", "/v1/logs", headers, too_many))
    assert (status, body["code"]) == (400, "PARSE_ERROR")
    assert "100" in body["error"]

    status, body, _ = await send(stack, CurlExample("POST", "/v1/logs", headers, b'{"logs": []}'))
    assert (status, body["code"]) == (400, "PARSE_ERROR")

    status, body, _ = await send(stack, CurlExample("POST", "/v1/logs", headers, orjson.dumps([good] * 100)))
    assert (status, body["count"]) == (200, 100)
    assert await stack.wait_rows(tenant.project, 100) == 100


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
        # A Timberlogs JSON envelope may carry `source` beside `logs`: Bearer says it is not TG2G.
        (
            {"Authorization": "Bearer {key}"},
            {"source": "s", "logs": [{"level": "info", "message": "m", "environment": "production"}]},
            "timberlogs",
        ),
        # `?format=` is Timberlogs' alone, whatever the body looks like.
        (
            {"Authorization": "Bearer {key}", "?": "format=json"},
            {"level": "info", "message": "m", "source": "s", "environment": "production", "batch": 1},
            "timberlogs",
        ),
        # The Content-Type decides nothing for TG2G: its header does.
        ({"X-TG2G-Api-Key": "{key}", "Content-Type": "text/plain"}, {"logs": [{"message": "m"}]}, "tg2g"),
        # No Content-Type at all (curl's form default): the body shape decides.
        (
            {"Authorization": "Bearer {key}", "Content-Type": "application/x-www-form-urlencoded"},
            {"batch": [{"severity": "info", "message": "m"}]},
            "goodlogs_logs",
        ),
        # A GoodLogs batch sent compressed is routed on its decompressed body.
        (
            {"Authorization": "Bearer {key}", "Content-Encoding": "gzip"},
            {"batch": [{"severity": "info", "message": "m"}]},
            "goodlogs_logs",
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
        "bearer-logs-with-source",
        "format-param-beats-batch",
        "tg2g-header-beats-text-plain",
        "form-content-type-batch",
        "gzip-batch",
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
    query = headers.pop("?", "")
    data = orjson.dumps(body)
    if headers.get("Content-Encoding") == "gzip":
        data = gzip.compress(data)
    path = f"/v1/logs?{query}" if query else "/v1/logs"
    status, answer, _ = await send(stack, CurlExample("POST", path, headers, data))
    assert status in (200, 202), answer
    assert await stack.wait_rows(tenant.project, 1) == 1
    assert [(dialect,)] == rows(stack, tenant.project, "dialect")


@pytest.mark.parametrize(
    ("body", "dialect", "decoded"),
    [
        (b'{"resourceLogs": []}', "otlp", False),
        (b' \n{ "resourceLogs" :[], "batch": []}', "otlp", False),
        (b'{"resourceLogs": [}', "otlp", False),
        (b'{"batch": [], "resourceLogs": []}', "otlp", True),
        (b'{"batch": []}', "goodlogs_logs", True),
        (b'{"batch": [}', "goodlogs_logs", False),
        (b'{"logs": [], "resourceLogs": 1}', "otlp", True),
    ],
    ids=["otlp", "otlp-spaced", "otlp-broken", "otlp-key-second", "batch", "batch-broken", "otlp-last"],
)
def test_shared_logs_rule_5_leaves_a_body_opening_with_resource_logs_to_the_otlp_parser(
    body: bytes, dialect: str, decoded: bool
) -> None:
    """A body that opens with `{"resourceLogs":` is OTLP whatever follows, so the router does
    not decode it (the OTLP parser does, typed); any other JSON body is decoded once, here."""
    request = make_mocked_request(
        "POST", "/v1/logs", headers={"Content-Type": "application/json", "Authorization": "Bearer k"}
    )
    chosen, document = choose(request, body)
    assert (chosen.name, document is not None) == (dialect, decoded)
    if decoded:
        assert document == orjson.loads(body)
    assert (chosen is OTLP_JSON) == (dialect == "otlp")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"X-TG2G-Api-Key": "wrong"},
            {"error": {"code": "unauthorized", "message": "missing or invalid API key"}},
        ),
        ({"Authorization": "Bearer wrong", "Content-Type": "text/plain"}, {"error": "Invalid API key"}),
        ({"X-API-Key": "wrong"}, {"error": "Invalid API key"}),
        ({}, {"error": "Invalid API key"}),
    ],
    ids=["tg2g", "bearer-text", "x-api-key", "no-key"],
)
async def test_shared_logs_route_answers_401_in_the_chosen_dialect(
    stack: Stack, headers: dict[str, str], expected: Any
) -> None:
    ex = CurlExample("POST", "/v1/logs", headers, b'{"logs": [{"message": "m"}]}')
    status, body, _ = await send(stack, ex)
    assert (401, expected) == (status, body)


async def test_goodlogs_client_with_broken_json_gets_a_goodlogs_error(stack: Stack) -> None:
    tenant = await fresh(stack, "route-broken")
    ex = CurlExample(
        "POST",
        "/v1/logs",
        {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"},
        b'{"batch": [{"severity": "info", "message": "m"},]}',
    )
    status, body, _ = await send(stack, ex)
    assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")
    assert "JSON" in body["error"]["message"]


async def test_goodlogs_bearer_batch_401_is_goodlogs_format(stack: Stack) -> None:
    ex = CurlExample(
        "POST",
        "/v1/logs",
        {"Authorization": "Bearer wrong", "Content-Type": "application/json"},
        b'{"batch": []}',
    )
    status, body, _ = await send(stack, ex)
    assert (status, body["error"]["code"]) == (401, "UNAUTHORIZED")


# -- Across dialects: hostile input --------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """How to reach one dialect, and what its answers look like."""

    path: str
    auth: Callable[[str], dict[str, str]]
    wrap: Callable[[list[Any]], Any]  # items -> the dialect's request document
    item: dict[str, Any]  # one valid item
    message: str  # the item's free-text field
    error_ok: Callable[[int, Any], bool]  # is this the dialect's own error body?
    accepted: Callable[[int, Any, int], int]  # (status, body, items sent) -> items stored
    table: str = "logs"


def _details_count(status: int, body: Any, sent: int) -> int:
    if status == 204:
        return sent
    return int(body["details"]["message"].split(" ", 1)[0])


# GoodLogs' error codes table, as the seed lists it.
GOODLOGS_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    402: "QUOTA_EXCEEDED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
}


ENDPOINTS = {
    "astralog": Endpoint(
        "/v1/drain",
        lambda key: {"Authorization": key},
        lambda items: {"logs": items},
        {"project_id": "p", "timestamp": "2024-05-31T15:30:45Z", "level": "info", "service": "s"}
        | {"message": "m"},
        "message",
        lambda st, b: b.keys() == {"status", "code", "error"} and b["status"] == "error",
        lambda st, b, sent: sent,
    ),
    "tg2g": Endpoint(
        "/v1/logs",
        lambda key: {"X-TG2G-Api-Key": key},
        lambda items: {"source": "s", "logs": items},
        {"message": "m"},
        "message",
        lambda st, b: b.keys() == {"error"} and b["error"].keys() == {"code", "message"},
        lambda st, b, sent: int(b["accepted"]),
    ),
    "dynatrace": Endpoint(
        "/api/v2/logs/ingest",
        lambda key: {"Authorization": f"Api-Token {key}"},
        lambda items: items,
        {"content": "m"},
        "content",
        lambda st, b: b.keys() == {"error"} and b["error"]["code"] == st and bool(b["error"]["message"]),
        _details_count,
    ),
    "goodlogs_logs": Endpoint(
        "/v1/logs",
        lambda key: {"Authorization": f"Bearer {key}"},
        lambda items: {"batch": items},
        {"severity": "info", "message": "m"},
        "message",
        lambda st, b: b.keys() == {"error"} and b["error"]["code"] in GOODLOGS_CODES.values(),
        lambda st, b, sent: int(b["accepted"]),
    ),
    "goodlogs_events": Endpoint(
        "/v1/events",
        lambda key: {"Authorization": f"Bearer {key}"},
        lambda items: {"batch": items},
        {"event": "e"},
        "event",
        lambda st, b: b.keys() == {"error"} and b["error"]["code"] in GOODLOGS_CODES.values(),
        lambda st, b, sent: int(b["accepted"]),
        table="events",
    ),
    "timberlogs": Endpoint(
        "/v1/logs",
        lambda key: {"X-API-Key": key},
        lambda items: {"logs": items},
        {"level": "info", "message": "m", "source": "s", "environment": "production"},
        "message",
        lambda st, b: b["code"] == "PARSE_ERROR" and isinstance(b["error"], str),
        lambda st, b, sent: int(b["count"]),
    ),
}
# The whole body is unusable: every dialect refuses it (GoodLogs' /v1/logs is left out here,
# since a body that is not a `batch` is not GoodLogs' on the shared route).
HOSTILE_BODIES = {
    "empty": b"",
    "whitespace": b"  \r\n\t ",
    "invalid-utf8": b'{"logs": [{"message": "\xff\xfe"}], "batch": [{"event": "\xc3"}]}',
    "binary": bytes(range(256)) * 4,
    "deep-arrays": b"[" * 5000 + b"]" * 5000,
    "deep-objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "string": b'"just a string"',
    "number": b"123",
    "null": b"null",
    "infinite-number": b'{"logs": [{"message": 1e999}], "batch": [{"event": 1e999}]}',
    "wrong-containers": b'{"logs": "nope", "batch": "nope", "source": 5, "entity": []}',
}


def hostile_items(ep: Endpoint) -> dict[str, list[Any]]:
    """Items that break a rule one at a time, next to a valid one where partial acceptance is allowed."""
    deep: Any = {"leaf": 1}
    for _ in range(100):
        deep = {"k": deep}
    return {
        "not-objects": [1, "a", None, [ep.item]],
        "wrong-types": [{**ep.item, ep.message: value} for value in (42, ["x"], {"a": 1}, True)]
        + [{**ep.item, **{key: {"a": [1]} for key in ("level", "severity", "timestamp", "tags")}}],
        "deep-field": [{**ep.item, "extra": deep}],
        "many-fields": [{**ep.item, **{f"k{i}": i for i in range(5000)}}],
        "huge-line": [{**ep.item, ep.message: "x" * 1_000_000}],
        "valid-beside-invalid": [ep.item, {"nothing": "useful"}, ep.item],
    }


@pytest.mark.parametrize("name", list(ENDPOINTS))
async def test_hostile_input_gets_a_4xx_in_the_dialects_own_format_and_never_a_500(
    stack: Stack, name: str
) -> None:
    """Unusable bodies and broken items: a 4xx in the dialect's error format, or a success that counts
    what was kept; never a 5xx; and everything a success counted is stored (the worker survives)."""
    ep = ENDPOINTS[name]
    tenant = await fresh(stack, f"hostile-{name}")
    headers = {**ep.auth(tenant.key), "Content-Type": "application/json"}
    cases: list[tuple[str, bytes, int]] = [
        (case, orjson.dumps(ep.wrap(items)), len(items)) for case, items in hostile_items(ep).items()
    ]
    if name != "goodlogs_logs":
        cases += [(case, body, 0) for case, body in HOSTILE_BODIES.items()]
    stored = 0
    wrong = []
    for case, body, sent in cases:
        status, answer, _ = await send(stack, CurlExample("POST", ep.path, headers, body))
        if 400 <= status < 500 and answer is not None and ep.error_ok(status, answer):
            continue
        if 200 <= status < 300 and sent:
            stored += ep.accepted(status, answer, sent)
            continue
        wrong.append((case, status, answer))
    assert wrong == []
    # The worker parsed all of it too, stored what the gateway counted, and is still running.
    last = orjson.dumps(ep.wrap([ep.item]))
    assert (await send(stack, CurlExample("POST", ep.path, headers, last)))[0] < 300
    assert await stack.wait_rows(tenant.project, stored + 1, table=ep.table) == stored + 1


# -- The documented error envelopes, for every status a dialect can be refused with -------


@pytest.mark.parametrize(("status", "code"), list(GOODLOGS_CODES.items()))
def test_goodlogs_error_codes_table(status: int, code: str) -> None:
    for dialect in (GOODLOGS_LOGS, GOODLOGS_EVENTS):
        resp = dialect.error(Problem(status, "whatever", "what went wrong"))
        assert (resp.status, orjson.loads(body_of(resp))) == (
            status,
            {"error": {"code": code, "message": "what went wrong"}},
        )


def body_of(resp: web.Response) -> bytes:
    assert isinstance(resp.body, bytes)
    return resp.body


def test_rate_limited_answers_in_each_dialects_format() -> None:
    """429 with Retry-After everywhere; the body as each API documents (or, undocumented, its error shape)."""
    problem = Problem(429, "rate_limited", "too many requests", retry_after=60)
    expected = {
        DYNATRACE: {"error": {"code": 429, "message": "too many requests"}},
        TIMBERLOGS: {"error": "Rate limit exceeded", "retryAfter": 60},
        GOODLOGS_LOGS: {"error": {"code": "RATE_LIMITED", "message": "too many requests"}},
        GOODLOGS_EVENTS: {"error": {"code": "RATE_LIMITED", "message": "too many requests"}},
        TG2G: {"error": {"code": "rate_limited", "message": "too many requests"}},
        ASTRALOG: {"status": "error", "code": "rate_limited", "error": "too many requests"},
    }
    for dialect, body in expected.items():
        resp = dialect.error(problem)
        assert (dialect.name, resp.status, resp.headers["Retry-After"]) == (dialect.name, 429, "60")
        assert (dialect.name, orjson.loads(body_of(resp))) == (dialect.name, body)


def test_too_large_answers_in_each_dialects_format() -> None:
    problem = Problem(413, "body_too_large", "request body is 3 bytes; the limit is 2")
    for dialect in (DYNATRACE, TIMBERLOGS, GOODLOGS_LOGS, TG2G, ASTRALOG):
        resp = dialect.error(problem)
        assert resp.status == 413
        assert "the limit is 2" in body_of(resp).decode()
    assert orjson.loads(body_of(DYNATRACE.error(problem))) == {
        "error": {"code": 413, "message": "request body is 3 bytes; the limit is 2"}
    }


# -- Across dialects: encodings ---------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zlib", "zstd", "snappy", "lz4"])
async def test_compressed_bodies_are_accepted(stack: Stack, encoding: str) -> None:
    tenant = await fresh(stack, f"enc-{encoding}")
    example = timberlogs_examples()[-2]  # the 3-log batch
    ex = with_key(example, tenant.key)
    ex.headers["Content-Encoding"] = encoding
    ex.body = compress(ex.body, encoding)
    status, body, _ = await send(stack, ex)
    assert (status, body["count"]) == (200, 3)
    assert await stack.wait_rows(tenant.project, 3) == 3


# -- The README's own examples ----------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_sending_examples() -> list[tuple[CurlExample, str]]:
    """Each shell block of README "## Sending logs": its curl command and the answer it shows."""
    text = README.read_text()
    part = text[text.index("## Sending logs") : text.index("\n## ", text.index("## Sending logs") + 1)]
    out = []
    for block in re.findall(r"```sh\n(.*?)```", part, flags=re.S):
        (example,) = curl_commands(block)
        answer = [line[2:] for line in block.splitlines() if line.startswith("# ")][-1]
        out.append((example, answer))
    return out


def test_readme_has_a_curl_example_per_dialect() -> None:
    paths = sorted({e.path.partition("?")[0] for e, _ in readme_sending_examples()})
    assert paths == [
        "/api/v2/logs/ingest",
        "/loki/api/v1/push",
        "/services/collector/event",
        "/shop-logs/_bulk",
        "/v1/drain",
        "/v1/events",
        "/v1/logs",
    ]
    assert len(readme_sending_examples()) == 9


async def test_readme_curl_examples_work(stack: Stack) -> None:
    tenant = await fresh(stack, "readme")
    for example, answer in readme_sending_examples():
        headers = {k: v.replace("$KEY", tenant.key) for k, v in example.headers.items()}
        status, body, _ = await send(stack, CurlExample(example.method, example.path, headers, example.body))
        if answer.isdigit():
            assert (example.path, status, body) == (example.path, int(answer), None)
            continue
        shown = orjson.loads(answer)
        if "timestamp" in shown:  # Timberlogs' server time differs per request
            shown["timestamp"] = body.get("timestamp")
        if "took" in shown:  # so does Elasticsearch's time taken
            shown["took"] = body.get("took")
        assert (example.path, 200 <= status < 300, body) == (example.path, True, shown)
    assert await stack.wait_rows(tenant.project, 8) == 8
    assert await stack.wait_rows(tenant.project, 1, table="events") == 1


@pytest.mark.parametrize(
    ("credential", "key"),
    [
        (base64.b64encode(b"millrace:the-key").decode(), "the-key"),
        (base64.b64encode(b"the-key").decode(), "the-key"),  # one field: the user name
        (base64.b64encode(b"the-key:").decode(), "the-key"),
        ("", None),
        ("not base64!", None),
        ("bWlsbHJhY2U6a2V5é", None),  # non-ASCII: refused, never an exception
        (base64.b64encode(b"\xff\xfe").decode(), None),  # not UTF-8
    ],
)
def test_one_basic_credential_rule_for_loki_hec_and_es_bulk(credential: str, key: str | None) -> None:
    assert basic_key(credential) == key


def test_hec_ack_ids_name_a_kafka_position_and_nothing_past_what_they_can_hold() -> None:
    """An ackId is (offset, partition) packed into one non-negative 63-bit integer, both ways."""
    from gateway.dialects.hec import PARTITION_BITS, ack_id

    mask = (1 << PARTITION_BITS) - 1
    top = (1 << (63 - PARTITION_BITS)) - 1
    for partition, offset in [(0, 0), (1, 0), (0, 1), (mask, top), (7, 123_456_789), (mask, 0), (0, top)]:
        number = ack_id(partition, offset)
        assert number is not None and 0 <= number < 1 << 63
        assert (number & mask, number >> PARTITION_BITS) == (partition, offset)
    assert len({ack_id(p, o) for p in range(64) for o in range(64)}) == 64 * 64
    assert ack_id(mask + 1, 0) is None and ack_id(0, top + 1) is None
