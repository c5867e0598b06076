"""GoodLogs parsers (`/v1/logs`, `/v1/events`): the seed requests and every documented rule."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from formats.base import Parsed, ParseError, Rejection
from formats.goodlogs import parse_events, parse_logs
from gateway.dialects.goodlogs import GOODLOGS_LOGS
from tests.formats.conftest import RECEIVED_AT_NS, deep_arrays, deep_object, make_ctx, utc_ns
from tests.seeds import curl_examples

# Copied verbatim from the seed document (003): the -d bodies of the two ingest curl examples.
EVENTS_BODY = b"""{
"batch": [
{
"event": "signup",
"distinctId": "user_123",
"properties": {
"plan": "pro",
"source": "google",
"amount": 29.99
}
},
{
"event": "page_view",
"properties": {
"path": "/pricing",
"referrer": "https://google.com"
}
}
]
}"""

LOGS_BODY = b"""{
"batch": [
{
"severity": "error",
"message": "Payment failed: card_declined",
"properties": {
"orderId": "ord_123",
"amount": 29,
"service": "billing",
"env": "prod"
}
},
{
"severity": "info",
"message": "User signed up",
"properties": {
"userId": "u_456",
"method": "google"
}
}
]
}"""


# What GoodLogs injects into every item's map; empty here (no User-Agent, no address).
CLIENT = {"$browser": "", "$os": "", "$device": "", "$ip": ""}


def logs(*items: Any) -> Parsed:
    return parse_logs(orjson.dumps({"batch": list(items)}), make_ctx())


def events(*items: Any) -> Parsed:
    return parse_events(orjson.dumps({"batch": list(items)}), make_ctx())


def test_seed_logs_request() -> None:
    parsed = parse_logs(LOGS_BODY, make_ctx())
    assert parsed.table == "logs"
    assert parsed.rejected == []
    assert parsed.rows == [
        {
            "timestamp": RECEIVED_AT_NS,
            "level": "error",
            "severity_text": "error",
            "severity_number": 17,
            "message": "Payment failed: card_declined",
            "service": "billing",
            "environment": "prod",
            "attributes": {
                "orderId": "ord_123",
                "amount": "29",
                "service": "billing",
                "env": "prod",
                **CLIENT,
            },
        },
        {
            "timestamp": RECEIVED_AT_NS,
            "level": "info",
            "severity_text": "info",
            "severity_number": 9,
            "message": "User signed up",
            "user_id": "u_456",
            "attributes": {"userId": "u_456", "method": "google", **CLIENT},
        },
    ]


def test_seed_events_request() -> None:
    parsed = parse_events(EVENTS_BODY, make_ctx())
    assert parsed.table == "events"
    assert parsed.rejected == []
    assert parsed.rows == [
        {
            "timestamp": RECEIVED_AT_NS,
            "event": "signup",
            "distinct_id": "user_123",
            "properties": {
                "plan": "pro",
                "source": "google",
                "amount": "29.99",
                "distinct_id": "user_123",
                **CLIENT,
            },
        },
        {
            "timestamp": RECEIVED_AT_NS,
            "event": "page_view",
            "properties": {"path": "/pricing", "referrer": "https://google.com", **CLIENT},
        },
    ]


def test_seed_copies_match_the_document() -> None:
    try:
        examples = {e.path: e.body for e in curl_examples("003") if e.path in ("/v1/logs", "/v1/events")}
    except FileNotFoundError:
        pytest.skip("shared/seeds is not beside the checkout")
    assert examples == {"/v1/logs": LOGS_BODY, "/v1/events": EVENTS_BODY}


# -- the whole request ------------------------------------------------------------------------


@pytest.mark.parametrize("parse", [parse_logs, parse_events])
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff",
        b"{",
        b"[]",
        b'{"batch": {}}',
        b'{"logs": []}',
        b'{"batch": null}',
        deep_arrays(10_000),
        b'{"batch": ' + deep_arrays(5000) + b"}",
    ],
)
def test_unusable_body_is_a_validation_error(parse: Any, body: bytes) -> None:
    with pytest.raises(ParseError) as err:
        parse(body, make_ctx())
    assert (GOODLOGS_LOGS.refusal(err.value).status, err.value.code) == (400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("parse", "item"), [(parse_logs, {"severity": "info", "message": "m"}), (parse_events, {"event": "e"})]
)
def test_batch_limit_is_500_items(parse: Any, item: dict[str, Any]) -> None:
    assert len(parse(orjson.dumps({"batch": [item] * 500}), make_ctx()).rows) == 500
    with pytest.raises(ParseError) as err:
        parse(orjson.dumps({"batch": [item] * 501}), make_ctx())
    assert (GOODLOGS_LOGS.refusal(err.value).status, err.value.code) == (400, "VALIDATION_ERROR")
    assert "501" in err.value.message


@pytest.mark.parametrize("parse", [parse_logs, parse_events])
def test_body_over_2_mb_is_413(parse: Any) -> None:
    body = b'{"batch": [], "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    with pytest.raises(ParseError) as err:
        parse(body, make_ctx())
    assert (err.value.code, GOODLOGS_LOGS.refusal(err.value).status) == ("PAYLOAD_TOO_LARGE", 413)


def test_empty_batch_is_accepted_with_nothing_to_store() -> None:
    assert (logs().rows, logs().rejected) == ([], [])


# -- logs -------------------------------------------------------------------------------------


def test_invalid_log_items_are_rejected_one_by_one() -> None:
    parsed = logs(
        {"severity": "info", "message": "ok 0"},
        {"message": "no severity"},
        {"severity": "warning", "message": "not in the enum"},
        {"severity": "ERROR", "message": "case matters"},
        {"severity": "info"},
        {"severity": "info", "message": 7},
        {"severity": "info", "message": "m", "properties": ["a"]},
        {"severity": "info", "message": "m", "timestamp": "soon"},
        42,
        {"severity": "debug", "message": "ok 9"},
    )
    assert [r["message"] for r in parsed.rows] == ["ok 0", "ok 9"]
    assert parsed.rejected == [
        Rejection(1, "batch[1]: severity is required"),
        Rejection(2, "batch[2]: severity must be one of debug, info, warn, error, fatal, not 'warning'"),
        Rejection(3, "batch[3]: severity must be one of debug, info, warn, error, fatal, not 'ERROR'"),
        Rejection(4, "batch[4]: message is required"),
        Rejection(5, "batch[5]: message must be a string"),
        Rejection(6, "batch[6]: properties must be an object"),
        Rejection(7, "batch[7]: timestamp 'soon' is not an ISO 8601 time"),
        Rejection(8, "batch[8] must be an object"),
    ]


@pytest.mark.parametrize(
    ("severity", "number"), [("debug", 5), ("info", 9), ("warn", 13), ("error", 17), ("fatal", 21)]
)
def test_every_severity(severity: str, number: int) -> None:
    (row,) = logs({"severity": severity, "message": "m"}).rows
    assert (row["level"], row["severity_text"], row["severity_number"]) == (severity, severity, number)


def test_message_limit_is_64_kb_of_utf8() -> None:
    parsed = logs(
        {"severity": "info", "message": "x" * 65_536},
        {"severity": "info", "message": "x" * 65_537},
        {"severity": "info", "message": "€" * 21_845},  # 65,535 bytes
        {"severity": "info", "message": "€" * 21_846},  # 65,538 bytes in 21,846 characters
    )
    assert [len(r["message"]) for r in parsed.rows] == [65_536, 21_845]
    assert [r.index for r in parsed.rejected] == [1, 3]
    assert "65,536 bytes" in parsed.rejected[0].reason


def test_timestamp_override() -> None:
    (row,) = logs({"severity": "info", "message": "m", "timestamp": "2024-06-01T10:00:00.5Z"}).rows
    assert row["timestamp"] == utc_ns(2024, 6, 1, 10, micro=500_000)


def test_properties_nested_are_dotted_and_legacy_fields_merge_in() -> None:
    (row,) = logs(
        {
            "severity": "warn",
            "message": "m",
            "properties": {"order": {"id": "o1", "lines": [1, 2]}, "file": "from properties"},
            "metadata": {"userId": "u1", "deep": {"x": True}},
            "context": {"requestId": "r1"},
            "code_location": {"file": "app.py", "line": 42},
            "extra": "kept",
        }
    ).rows
    assert row["attributes"] == {
        "extra": "kept",
        "userId": "u1",
        "deep.x": "true",
        "requestId": "r1",
        "file": "from properties",
        "line": "42",
        "order.id": "o1",
        "order.lines": "[1,2]",
        **CLIENT,
    }
    assert (row["user_id"], row["request_id"]) == ("u1", "r1")


def test_legacy_field_that_is_not_an_object_is_kept_under_its_name() -> None:
    (row,) = logs({"severity": "info", "message": "m", "context": "checkout"}).rows
    assert row["attributes"] == {"context": "checkout", **CLIENT}


def test_well_known_properties_fill_columns_and_stay_in_attributes() -> None:
    props = {"service": "api", "environment": "staging", "hostname": "h1", "traceId": "t", "tags": ["a"]}
    (row,) = logs({"severity": "info", "message": "m", "properties": props}).rows
    assert (row["service"], row["environment"], row["host"], row["trace_id"], row["tags"]) == (
        "api",
        "staging",
        "h1",
        "t",
        ["a"],
    )
    assert row["attributes"]["tags"] == '["a"]'


def test_log_item_nested_too_deep_is_rejected_alone() -> None:
    parsed = logs(
        {"severity": "info", "message": "deep", "properties": deep_object(50)},
        {"severity": "info", "message": "ok"},
    )
    assert [r["message"] for r in parsed.rows] == ["ok"]
    assert parsed.rejected[0].index == 0


# -- events -----------------------------------------------------------------------------------


def test_invalid_event_items_are_rejected_one_by_one() -> None:
    parsed = events(
        {"event": "ok"},
        {"properties": {}},
        {"event": ""},
        {"event": 5},
        {"event": "e", "distinctId": {"id": 1}},
        {"event": "e", "properties": "p"},
        {"event": "e", "timestamp": "later"},
        [],
    )
    assert [r["event"] for r in parsed.rows] == ["ok"]
    assert parsed.rejected == [
        Rejection(1, "batch[1]: event is required"),
        Rejection(2, "batch[2]: event must be a non-empty string"),
        Rejection(3, "batch[3]: event must be a non-empty string"),
        Rejection(4, "batch[4]: distinctId must be a string"),
        Rejection(5, "batch[5]: properties must be an object"),
        Rejection(6, "batch[6]: timestamp 'later' is not an ISO 8601 time"),
        Rejection(7, "batch[7] must be an object"),
    ]


def test_event_fields() -> None:
    (row,) = events(
        {
            "event": "purchase",
            "distinctId": 42,
            "timestamp": "2024-06-01T10:00:00Z",
            "properties": {"cart": {"total": 9.5, "items": ["a"]}, "distinct_id": "overridden"},
            "$lib": "web",
        }
    ).rows
    assert row == {
        "timestamp": utc_ns(2024, 6, 1, 10),
        "event": "purchase",
        "distinct_id": "42",
        "properties": {
            "$lib": "web",
            "cart.total": "9.5",
            "cart.items": '["a"]',
            "distinct_id": "42",
            **CLIENT,
        },
    }


def test_client_fields_come_from_the_request_and_win_over_the_items_own() -> None:
    """`$browser`, `$os`, `$device` from the User-Agent and `$ip` from the client address."""
    agent = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/125.0 Safari/537.36"
    ctx = replace(make_ctx(), user_agent=agent, client_ip="203.0.113.9")
    body = orjson.dumps({"batch": [{"event": "e", "properties": {"$ip": "forged", "plan": "pro"}}]})
    (row,) = parse_events(body, ctx).rows
    assert row["properties"] == {
        "$ip": "203.0.113.9",
        "plan": "pro",
        "$browser": "Chrome 125",
        "$os": "macOS 10",
        "$device": "Desktop",
    }
