"""Timberlogs parser: every seed example in every format, format resolution, and the schema rules."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest

from formats.base import ParseContext, ParseError
from formats.timberlogs import parse, resolve_format
from gateway.dialects.timberlogs import TIMBERLOGS
from tests.formats.conftest import RECEIVED_AT_NS, deep_arrays, deep_object, make_ctx, utc_ns
from tests.seeds import curl_examples

PROD = {"environment": "production"}

# -- the seed document's curl examples, copied verbatim (path with query, Content-Type, -d body) ----

BASIC = b"""{
    "logs": [{
      "level": "info",
      "message": "Application started",
      "source": "my-app",
      "environment": "production"
    }]
  }"""
JSONL = b"""{"level":"error","message":"Connection refused","source":"api","environment":"production"}
{"level":"info","message":"Request completed","source":"api","environment":"production"}"""
SYSLOG = b"""<165>1 2024-01-15T10:30:00.000Z myhost api 1234 - - Connection refused
<14>1 2024-01-15T10:30:01.000Z myhost api 1234 - - Retrying connection"""
TEXT = b"""2024-01-15 10:30:00 ERROR Connection refused to database
2024-01-15 10:30:01 INFO Retrying connection..."""
CSV = b"""level,message,source,timestamp
error,Connection refused,api,1705312200000
info,Request completed,api,1705312201000"""
OBL = b"""{
    "format": "open-board-log-0.1",
    "user_id": "user_abc",
    "sessions": [{
      "id": "sess_1",
      "type": "log",
      "started": "2024-01-15T10:00:00Z",
      "ended": "2024-01-15T11:00:00Z",
      "events": [
        {"id": "e1", "timestamp": "2024-01-15T10:05:00Z", "type": "button", "label": "I", "spoken": true},
        {"id": "e2", "timestamp": "2024-01-15T10:05:01Z", "type": "button", "label": "want", "spoken": true},
        {"id": "e3", "timestamp": "2024-01-15T10:05:02Z", "type": "utterance", "text": "I want juice"}
      ]
    }]
  }"""
WITH_DATA = b"""{
    "logs": [{
      "level": "info",
      "message": "User signed in",
      "source": "auth-service",
      "environment": "production",
      "userId": "user_123",
      "sessionId": "sess_abc",
      "data": {
        "method": "oauth",
        "provider": "google"
      },
      "tags": ["auth", "login"]
    }]
  }"""
ERROR_LOG = rb"""{
    "logs": [{
      "level": "error",
      "message": "Database connection failed",
      "source": "api-server",
      "environment": "production",
      "errorName": "ConnectionError",
      "errorStack": "ConnectionError: ECONNREFUSED\n    at connect (/app/db.js:42:11)\n    at ...",
      "tags": ["database", "critical"]
    }]
  }"""
BATCH = b"""{
    "logs": [
      {
        "level": "info",
        "message": "Request received",
        "source": "api",
        "environment": "production",
        "requestId": "req_xyz"
      },
      {
        "level": "debug",
        "message": "Processing request",
        "source": "api",
        "environment": "production",
        "requestId": "req_xyz"
      },
      {
        "level": "info",
        "message": "Request completed",
        "source": "api",
        "environment": "production",
        "requestId": "req_xyz",
        "data": {"duration": 145}
      }
    ]
  }"""
FLOW = b"""{
    "logs": [
      {
        "level": "info",
        "message": "Checkout started",
        "source": "checkout-service",
        "environment": "production",
        "flowId": "checkout-a1b2c3d4",
        "stepIndex": 0
      },
      {
        "level": "info",
        "message": "Payment processed",
        "source": "checkout-service",
        "environment": "production",
        "flowId": "checkout-a1b2c3d4",
        "stepIndex": 1
      }
    ]
  }"""

# (path, Content-Type, body) as curl sends them; -d without -H sends the form content type.
CURL_EXAMPLES = [
    ("/v1/logs", "application/json", BASIC),
    ("/v1/logs", "application/x-ndjson", JSONL),
    ("/v1/logs?format=syslog&environment=production", "application/x-www-form-urlencoded", SYSLOG),
    ("/v1/logs?source=nginx&environment=production", "text/plain", TEXT),
    ("/v1/logs?environment=production", "text/csv", CSV),
    ("/v1/logs?source=my-aac-app&environment=production", "application/x-obl", OBL),
    ("/v1/logs", "application/json", WITH_DATA),
    ("/v1/logs", "application/json", ERROR_LOG),
    ("/v1/logs", "application/json", BATCH),
    ("/v1/logs", "application/json", FLOW),
]

# The "Body" examples of the formats section that are not also curl examples.
BODY_JSON = b"""{
  "logs": [
    {
      "level": "info",
      "message": "User signed in",
      "source": "api-server",
      "environment": "production",
      "data": {
        "userId": "user_123"
      }
    }
  ]
}"""
BODY_RFC3164 = b"<34>Jan 15 10:30:00 myhost api[1234]: Connection refused"
BODY_OBL = b"""{
  "format": "open-board-log-0.1",
  "user_id": "user_abc",
  "source": "my-aac-app",
  "sessions": [
    {
      "id": "sess_1",
      "type": "log",
      "started": "2024-01-15T10:00:00Z",
      "ended": "2024-01-15T11:00:00Z",
      "events": [
        {
          "id": "e1",
          "timestamp": "2024-01-15T10:05:00Z",
          "type": "button",
          "label": "hello",
          "spoken": true
        },
        {
          "id": "e2",
          "timestamp": "2024-01-15T10:06:00Z",
          "type": "utterance",
          "text": "hello world"
        }
      ]
    }
  ]
}"""


def ctx_for(path: str, content_type: str) -> ParseContext:
    return make_ctx(content_type, dict(parse_qsl(urlsplit(path).query)), path=path)


def run(body: bytes, content_type: str = "application/json", **query: str) -> list[dict[str, Any]]:
    return parse(body, make_ctx(content_type, query)).rows


def refused(body: bytes, content_type: str = "application/json", **query: str) -> ParseError:
    with pytest.raises(ParseError) as err:
        parse(body, make_ctx(content_type, query))
    assert (TIMBERLOGS.refusal(err.value).status, err.value.code) == (400, "PARSE_ERROR")
    return err.value


def log_json(*logs: dict[str, Any], **query: str) -> list[dict[str, Any]]:
    return run(orjson.dumps({"logs": list(logs)}), **query)


def valid(**fields: Any) -> dict[str, Any]:
    return {"level": "info", "message": "m", "source": "s", "environment": "production", **fields}


def row(**fields: Any) -> dict[str, Any]:
    """A row as the schema maps a log, the defaults of a minimal valid one filled in."""
    level = fields.pop("level", "info")
    return {
        "timestamp": RECEIVED_AT_NS,
        "level": level,
        "severity_text": fields.pop("severity_text", level),
        "severity_number": {"debug": 5, "info": 9, "warn": 13, "error": 17}[level],
        "environment": "production",
        "dataset": "default",
        "attributes": {},
        **fields,
    }


def test_seed_copies_match_the_document() -> None:
    try:
        examples = [e for e in curl_examples("004") if "$body" not in e.body.decode()]
    except FileNotFoundError:
        pytest.skip("shared/seeds is not beside the checkout")
    assert [(e.path, e.headers["Content-Type"], e.body) for e in examples] == CURL_EXAMPLES


def golden(n: int) -> list[dict[str, Any]]:
    path, content_type, body = CURL_EXAMPLES[n]
    return parse(body, ctx_for(path, content_type)).rows


def test_curl_basic_json() -> None:
    assert golden(0) == [row(message="Application started", service="my-app")]


def test_curl_jsonl() -> None:
    assert golden(1) == [
        row(level="error", message="Connection refused", service="api"),
        row(message="Request completed", service="api"),
    ]


def test_curl_syslog() -> None:
    def syslog_row(ts: int, level_text: str, facility: str, message: str) -> dict[str, Any]:
        attributes = {"severity": level_text, "facility": facility, "hostname": "myhost", "procid": "1234"}
        return row(
            timestamp=ts,
            severity_text=level_text,
            message=message,
            service="api",
            host="myhost",
            attributes=attributes,
        )

    assert golden(2) == [
        syslog_row(utc_ns(2024, 1, 15, 10, 30, 0), "notice", "local4", "Connection refused"),
        syslog_row(utc_ns(2024, 1, 15, 10, 30, 1), "info", "user", "Retrying connection"),
    ]


def test_curl_text() -> None:
    assert golden(3) == [
        row(
            timestamp=utc_ns(2024, 1, 15, 10, 30, 0),
            level="error",
            severity_text="ERROR",
            message="Connection refused to database",
            service="nginx",
        ),
        row(
            timestamp=utc_ns(2024, 1, 15, 10, 30, 1),
            severity_text="INFO",
            message="Retrying connection...",
            service="nginx",
        ),
    ]


def test_curl_csv() -> None:
    assert golden(4) == [
        row(timestamp=1705312200000 * 10**6, level="error", message="Connection refused", service="api"),
        row(timestamp=1705312201000 * 10**6, message="Request completed", service="api"),
    ]
    assert golden(4)[0]["timestamp"] == utc_ns(2024, 1, 15, 9, 50)


def test_curl_obl() -> None:
    session = {
        "session.id": "sess_1",
        "session.type": "log",
        "session.started": "2024-01-15T10:00:00Z",
        "session.ended": "2024-01-15T11:00:00Z",
        "obl.format": "open-board-log-0.1",
    }

    def button(n: int, label: str) -> dict[str, Any]:
        return row(
            timestamp=utc_ns(2024, 1, 15, 10, 5, n - 1),
            message=f"Button: {label}",
            service="my-aac-app",
            user_id="user_abc",
            attributes={
                "label": label,
                "spoken": "true",
                "event_type": "button",
                "event_id": f"e{n}",
                **session,
            },
        )

    assert golden(5) == [
        button(1, "I"),
        button(2, "want"),
        row(
            timestamp=utc_ns(2024, 1, 15, 10, 5, 2),
            message="Utterance: I want juice",
            service="my-aac-app",
            user_id="user_abc",
            attributes={"text": "I want juice", "event_type": "utterance", "event_id": "e3", **session},
        ),
    ]


def test_curl_log_with_data() -> None:
    assert golden(6) == [
        row(
            message="User signed in",
            service="auth-service",
            user_id="user_123",
            session_id="sess_abc",
            attributes={"method": "oauth", "provider": "google"},
            tags=["auth", "login"],
        )
    ]


def test_curl_error_log() -> None:
    assert golden(7) == [
        row(
            level="error",
            message="Database connection failed",
            service="api-server",
            error_name="ConnectionError",
            error_stack="ConnectionError: ECONNREFUSED\n    at connect (/app/db.js:42:11)\n    at ...",
            tags=["database", "critical"],
        )
    ]


def test_curl_batch() -> None:
    assert golden(8) == [
        row(message="Request received", service="api", request_id="req_xyz"),
        row(level="debug", message="Processing request", service="api", request_id="req_xyz"),
        row(message="Request completed", service="api", request_id="req_xyz", attributes={"duration": "145"}),
    ]


def test_curl_flow_tracking() -> None:
    flow = {"service": "checkout-service", "flow_id": "checkout-a1b2c3d4"}
    assert golden(9) == [
        row(message="Checkout started", **flow, attributes={"stepIndex": "0"}),
        row(message="Payment processed", **flow, attributes={"stepIndex": "1"}),
    ]


def test_body_examples() -> None:
    assert run(BODY_JSON) == [
        row(message="User signed in", service="api-server", attributes={"userId": "user_123"})
    ]
    assert run(JSONL, "application/x-ndjson") == golden(1)
    (critical,) = run(BODY_RFC3164, "application/x-syslog", **PROD)
    assert critical == row(
        timestamp=utc_ns(2024, 1, 15, 10, 30),
        level="error",
        severity_text="critical",
        message="Connection refused",
        service="api",
        host="myhost",
        attributes={"severity": "critical", "facility": "auth", "hostname": "myhost", "procid": "1234"},
    )
    hello, utterance = run(BODY_OBL, "application/x-obl", **PROD)
    assert (hello["message"], hello["service"], hello["user_id"]) == (
        "Button: hello",
        "my-aac-app",
        "user_abc",
    )
    assert (utterance["message"], utterance["timestamp"]) == (
        "Utterance: hello world",
        utc_ns(2024, 1, 15, 10, 6),
    )


# -- format resolution ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "content_type", "body", "expected"),
    [
        ({"format": "text"}, "application/json", b'{"level": "info"}', "text"),
        ({"format": "CSV"}, "text/plain", b"message\nx", "csv"),
        ({"format": ""}, "text/csv", b"message\nx", "csv"),
        ({}, "application/json", b"plain words", "json"),
        ({}, "application/x-ndjson; charset=utf-8", b"{}", "jsonl"),
        ({}, "application/x-syslog", b"x", "syslog"),
        ({}, "Text/Plain", b"{}", "text"),
        ({}, "text/csv", b"x", "csv"),
        ({}, "application/x-obl", b"{}", "obl"),
        ({}, "", b'{"logs": []}', "json"),
        ({}, "", b"[1, 2]", "json"),
        ({}, "", b'{"format": "open-board-log-0.1", "sessions": []}', "obl"),
        ({}, "", b'/* notice */ {"format": "open-board-log-0.1"}', "obl"),
        ({}, "", b'{"a": 1}\n{"b": 2}', "jsonl"),
        ({}, "", b'{"a": 1', "json"),
        ({}, "application/x-www-form-urlencoded", b"<34>Jan 15 10:30:00 h a: m", "syslog"),
        ({}, "", b"level,message,source\ninfo,hi,api", "csv"),
        ({}, "", b"message\tsource\nhi\tapi", "csv"),
        ({}, "", b"hello, world", "text"),
        ({}, "", b"2024-01-15 10:30:00 INFO up", "text"),
    ],
)
def test_format_resolution(query: dict[str, str], content_type: str, body: bytes, expected: str) -> None:
    assert resolve_format(body, make_ctx(content_type, query))[0] == expected


def test_unknown_format_parameter_is_refused() -> None:
    assert "Unsupported format 'xml'" in refused(b"<a/>", format="xml").message


# -- the schema, on every log -----------------------------------------------------------------


def test_json_accepts_a_bare_array_and_a_single_object() -> None:
    assert [r["message"] for r in run(orjson.dumps([valid(message="a"), valid(message="b")]))] == ["a", "b"]
    assert [r["message"] for r in run(orjson.dumps(valid(message="solo")))] == ["solo"]
    # An object with a message is one log even when one of its fields is called "logs".
    assert run(orjson.dumps(valid(logs=[1])))[0]["attributes"] == {"logs": "[1]"}


def test_envelope_fields_apply_to_every_log() -> None:
    rows = run(
        orjson.dumps({"source": "api", "environment": "staging", "logs": [{"level": "info", "message": "m"}]})
    )
    assert (rows[0]["service"], rows[0]["environment"]) == ("api", "staging")


def test_query_defaults_fill_missing_fields_but_never_override() -> None:
    rows = log_json(
        {"message": "a"},
        {"message": "b", "source": "own", "level": "error", "environment": "staging", "dataset": "d1"},
        {"message": "c", "source": None},
        source="api",
        environment="production",
        level="warn",
        dataset="web",
    )
    assert [(r["service"], r["level"], r["environment"], r["dataset"]) for r in rows] == [
        ("api", "warn", "production", "web"),
        ("own", "error", "staging", "d1"),
        ("api", "warn", "production", "web"),
    ]


def test_one_invalid_log_refuses_the_whole_request_with_zod_like_issues() -> None:
    err = refused(orjson.dumps({"logs": [valid(), valid(level="verbose"), {"message": ""}]}))
    assert err.details == [
        {
            "path": [1, "level"],
            "message": "Invalid enum value. Expected 'debug' | 'info' | 'warn' | 'error', received 'verbose'",
        },
        {"path": [2, "level"], "message": "Required"},
        {"path": [2, "message"], "message": "String must contain at least 1 character(s)"},
        {"path": [2, "source"], "message": "Required"},
        {"path": [2, "environment"], "message": "Required"},
    ]
    assert err.message.startswith("Invalid log at index 1: level: Invalid enum value.")
    assert "(and 4 more issue(s))" in err.message


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        (
            {"level": "ERROR"},
            ["level"],
            "Invalid enum value. Expected 'debug' | 'info' | 'warn' | 'error', received 'ERROR'",
        ),
        (
            {"level": "fatal"},
            ["level"],
            "Invalid enum value. Expected 'debug' | 'info' | 'warn' | 'error', received 'fatal'",
        ),
        (
            {"level": 3},
            ["level"],
            "Invalid enum value. Expected 'debug' | 'info' | 'warn' | 'error', received number",
        ),
        ({"message": 5}, ["message"], "Expected string, received number"),
        ({"message": "x" * 10_001}, ["message"], "String must contain at most 10000 character(s)"),
        ({"message": "😀" * 5_001}, ["message"], "String must contain at most 10000 character(s)"),
        ({"source": ""}, ["source"], "String must contain at least 1 character(s)"),
        ({"source": "s" * 101}, ["source"], "String must contain at most 100 character(s)"),
        (
            {"environment": "prod"},
            ["environment"],
            "Invalid enum value. Expected 'development' | 'staging' | 'production', received 'prod'",
        ),
        ({"dataset": 1}, ["dataset"], "Expected string, received number"),
        ({"version": True}, ["version"], "Expected string, received boolean"),
        ({"userId": 123}, ["userId"], "Expected string, received number"),
        ({"sessionId": []}, ["sessionId"], "Expected string, received array"),
        ({"requestId": {}}, ["requestId"], "Expected string, received object"),
        ({"errorName": 1}, ["errorName"], "Expected string, received number"),
        ({"errorStack": 1}, ["errorStack"], "Expected string, received number"),
        ({"flowId": 1}, ["flowId"], "Expected string, received number"),
        ({"data": [1]}, ["data"], "Expected object, received array"),
        ({"data": "x"}, ["data"], "Expected object, received string"),
        ({"tags": "a"}, ["tags"], "Expected array, received string"),
        ({"tags": ["t"] * 21}, ["tags"], "Array must contain at most 20 element(s)"),
        ({"tags": ["ok", 2]}, ["tags", 1], "Expected string, received number"),
        ({"tags": ["x" * 51]}, ["tags", 0], "String must contain at most 50 character(s)"),
        ({"timestamp": "soon"}, ["timestamp"], "Expected number (Unix milliseconds), received string"),
        ({"timestamp": True}, ["timestamp"], "Expected number, received boolean"),
        ({"timestamp": -1}, ["timestamp"], "Invalid timestamp: expected Unix milliseconds (1970..2100)"),
        ({"timestamp": 0}, ["timestamp"], "Invalid timestamp: expected Unix milliseconds (1970..2100)"),
        (
            {"timestamp": 5_000_000_000_000},
            ["timestamp"],
            "Invalid timestamp: expected Unix milliseconds (1970..2100)",
        ),
        ({"stepIndex": -1}, ["stepIndex"], "Number must be greater than or equal to 0"),
        ({"stepIndex": 1001}, ["stepIndex"], "Number must be less than or equal to 1000"),
        ({"stepIndex": 1.5}, ["stepIndex"], "Expected integer, received float"),
        ({"stepIndex": "1"}, ["stepIndex"], "Expected number, received string"),
    ],
)
def test_schema_rule(fields: dict[str, Any], path: list[Any], message: str) -> None:
    err = refused(orjson.dumps({"logs": [valid(**fields)]}))
    assert err.details == [{"path": [0, *path], "message": message}]


@pytest.mark.parametrize(
    "fields",
    [
        {"message": "x" * 10_000},
        {"message": "😀" * 5_000},
        {"message": "é" * 10_000},
        {"source": "s" * 100},
        {"tags": ["t" * 50] * 20},
        {"tags": []},
        {"stepIndex": 0},
        {"stepIndex": 1000},
        {"stepIndex": 7.0},
        {"level": "debug"},
        {"level": "warn"},
        {"environment": "development"},
        {"environment": "staging"},
        {"dataset": ""},
        {"version": None, "userId": None, "data": None, "tags": None, "timestamp": None},
    ],
)
def test_schema_bounds_that_pass(fields: dict[str, Any]) -> None:
    assert len(log_json(valid(**fields))) == 1


def test_field_mapping() -> None:
    (mapped,) = log_json(
        valid(
            dataset="payments",
            version="1.4.2",
            userId="u",
            sessionId="s1",
            requestId="r",
            flowId="f",
            stepIndex=3,
            errorName="E",
            errorStack="at x",
            tags=["a"],
            timestamp=1705312200123,
            data={"nested": {"k": 1}, "version": "data's own", "list": [1]},
            ipAddress="1.2.3.4",
        )
    )
    assert mapped == row(
        timestamp=utc_ns(2024, 1, 15, 9, 50, 0, 123_000),
        message="m",
        service="s",
        dataset="payments",
        user_id="u",
        session_id="s1",
        request_id="r",
        flow_id="f",
        error_name="E",
        error_stack="at x",
        tags=["a"],
        attributes={
            "version": "1.4.2",
            "stepIndex": "3",
            "ipAddress": "1.2.3.4",
            "nested.k": "1",
            "data.version": "data's own",
            "list": "[1]",
        },
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1705312200000, utc_ns(2024, 1, 15, 9, 50)),
        (1705312200000.5, utc_ns(2024, 1, 15, 9, 50) + 500_000),
        (1705312200, 1705312200 * 10**6),  # exactly milliseconds: no guessing by magnitude
        ("2024-01-15T09:50:00.250Z", utc_ns(2024, 1, 15, 9, 50, 0, 250_000)),
        ("1705312200000", utc_ns(2024, 1, 15, 9, 50)),
    ],
)
def test_timestamp_is_unix_milliseconds(value: Any, expected: int) -> None:
    assert log_json(valid(timestamp=value))[0]["timestamp"] == expected


def test_batch_limits_are_1_to_100_logs() -> None:
    assert len(log_json(*[valid()] * 100)) == 100
    assert (
        refused(orjson.dumps({"logs": [valid()] * 101})).message
        == "Too many logs: the limit is 100 per request"
    )
    assert "at least 1 log" in refused(b'{"logs": []}').message
    assert "at least 1 log" in refused(b"[]").message
    assert "Too many logs" in refused(b'{"level":"info"}\n' * 150, "application/x-ndjson").message


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", "application/json", "Request body is empty"),
        (b" \n\t", "text/plain", "Request body is empty"),
        (b'{"logs": [', "application/json", "Failed to parse body: invalid JSON"),
        (b"\xff\xfe", "application/json", "Failed to parse body: invalid JSON"),
        (b"\xffline", "text/plain", "Failed to parse body: not valid UTF-8"),
        (b'{"logs": {"level": "info"}}', "application/json", "Invalid request: 'logs' must be an array"),
        (b'"a string"', "application/json", "Invalid request: expected a JSON object or an array of logs"),
        (deep_arrays(10_000), "application/json", "Failed to parse body: invalid JSON"),
    ],
)
def test_unusable_bodies(body: bytes, content_type: str, message: str) -> None:
    assert refused(body, content_type).message.startswith(message)


def test_deep_nesting_in_data_is_refused() -> None:
    refused(orjson.dumps({"logs": [valid(data=deep_object(60))]}))
    refused(b'{"logs": [' + orjson.dumps(valid())[:-1] + b', "x": ' + deep_arrays(1000) + b"}]}")


def test_array_element_that_is_not_an_object() -> None:
    assert refused(b"[1]").details == [{"path": [0], "message": "Expected object, received number"}]


# -- JSONL ------------------------------------------------------------------------------------


def test_jsonl_names_the_bad_line_counting_blank_lines() -> None:
    body = b'{"level":"info","message":"a","source":"s","environment":"production"}\n\n{not json}\n'
    err = refused(body, "application/x-ndjson")
    assert err.message == "Failed to parse line 3: invalid JSON"
    assert (
        refused(b"\n[1]", "application/x-ndjson").message == "Failed to parse line 2: expected a JSON object"
    )


def test_jsonl_skips_blank_lines_and_accepts_crlf() -> None:
    line = b'{"level":"info","message":"m","source":"s","environment":"production"}'
    assert len(run(b"\r\n" + line + b"\r\n  \r\n" + line + b"\r\n", "application/x-ndjson")) == 2


# -- syslog -----------------------------------------------------------------------------------


def syslog(line: str, received_at_ns: int = RECEIVED_AT_NS, **query: str) -> dict[str, Any]:
    (only,) = parse(line.encode(), make_ctx("application/x-syslog", {**PROD, **query}, received_at_ns)).rows
    return dict(only)


@pytest.mark.parametrize(
    ("severity", "level", "name"),
    [
        (0, "error", "emergency"),
        (1, "error", "alert"),
        (2, "error", "critical"),
        (3, "error", "error"),
        (4, "warn", "warning"),
        (5, "info", "notice"),
        (6, "info", "info"),
        (7, "debug", "debug"),
    ],
)
def test_syslog_severity_mapping(severity: int, level: str, name: str) -> None:
    for line in (f"<{8 + severity}>1 - h app - - - m", f"<{8 + severity}>Jan 15 10:30:00 h app: m"):
        mapped = syslog(line)
        assert (mapped["level"], mapped["severity_text"], mapped["attributes"]["severity"]) == (
            level,
            name,
            name,
        )


def test_rfc5424_nil_values_structured_data_and_bom() -> None:
    mapped = syslog(
        '<13>1 - - - - ID47 [exampleSDID@32473 iut="3" eventSource="App\\"lic\\]ation"][origin ip="1.2.3.4"] '
        "\ufeffhello there",
        source="fallback",
    )
    assert mapped["timestamp"] == RECEIVED_AT_NS
    assert mapped["service"] == "fallback"
    assert "host" not in mapped
    assert mapped["message"] == "hello there"
    assert mapped["attributes"] == {
        "severity": "notice",
        "facility": "user",
        "msgid": "ID47",
        "exampleSDID@32473.iut": "3",
        "exampleSDID@32473.eventSource": 'App"lic]ation',
        "origin.ip": "1.2.3.4",
    }


def test_rfc5424_fractional_time_with_offset() -> None:
    mapped = syslog("<165>1 2024-01-15T12:30:00.123456+02:00 h a p - - m")
    assert mapped["timestamp"] == utc_ns(2024, 1, 15, 10, 30, 0, 123_456)


def test_rfc3164_forms() -> None:
    no_pid = syslog("<13>Jan  5 10:30:00 web-1 cron: job done")
    assert (no_pid["service"], no_pid["host"], no_pid["message"]) == ("cron", "web-1", "job done")
    assert no_pid["timestamp"] == utc_ns(2024, 1, 5, 10, 30)
    assert "procid" not in no_pid["attributes"]
    no_host = syslog("<13>Jan 15 10:30:00 sshd[77]: Accepted key")
    assert (no_host["service"], no_host["message"], no_host["attributes"]["procid"]) == (
        "sshd",
        "Accepted key",
        "77",
    )
    assert "host" not in no_host
    no_tag = syslog("<13>Jan 15 10:30:00 web-1 plain message here", source="default-src")
    assert (no_tag["service"], no_tag["message"]) == ("default-src", "plain message here")
    iso = syslog("<13>2024-01-15T10:30:00Z web-1 app: m")
    assert (iso["timestamp"], iso["service"]) == (utc_ns(2024, 1, 15, 10, 30), "app")


@pytest.mark.parametrize(
    ("stamp", "received", "expected"),
    [
        ("Dec 31 23:59:59", utc_ns(2025, 1, 1, 0, 0, 5), utc_ns(2024, 12, 31, 23, 59, 59)),
        ("Jan  1 00:00:01", utc_ns(2024, 12, 31, 23, 59, 0), utc_ns(2025, 1, 1, 0, 0, 1)),
        ("Jun 15 12:00:00", utc_ns(2024, 6, 16), utc_ns(2024, 6, 15, 12)),
        ("Feb 29 12:00:00", utc_ns(2024, 3, 1), utc_ns(2024, 2, 29, 12)),
        ("Feb 29 12:00:00", utc_ns(2025, 3, 1), utc_ns(2024, 2, 29, 12)),
        ("Feb 29 12:00:00", utc_ns(2028, 2, 28), utc_ns(2024, 2, 29, 12)),
        # Months back, not months ahead: logs come from the past.
        ("Jan 15 10:30:00", utc_ns(2026, 11, 24), utc_ns(2026, 1, 15, 10, 30)),
        ("Jun 15 12:00:00", utc_ns(2025, 1, 10), utc_ns(2024, 6, 15, 12)),
        # The sender's local time east of UTC is read as UTC: hours ahead stay this year.
        ("Jun 15 12:00:00", utc_ns(2024, 6, 15, 0, 30), utc_ns(2024, 6, 15, 12)),
    ],
)
def test_rfc3164_year_is_the_latest_not_in_the_future(stamp: str, received: int, expected: int) -> None:
    assert syslog(f"<13>{stamp} h app: m", received)["timestamp"] == expected


@pytest.mark.parametrize(
    "line",
    [
        "no priority",
        "<192>1 - h a - - - m",
        "<13>2 - h a - - - m",
        "<13>1 yesterday h a - - - m",
        "<13>1 - h a - -",
        "<13>1 - h a - - [broken m",
        "<13>Foo 15 10:30:00 h a: m",
        "<13>Jan 32 10:30:00 h a: m",
        "<x>Jan 15 10:30:00 h a: m",
        "<²>Jan 15 10:30:00 h a: m",
    ],
)
def test_unparseable_syslog_line_names_the_line(line: str) -> None:
    body = ("<13>1 - h a - - - fine\n\n" + line).encode()
    err = refused(body, "application/x-syslog", **PROD)
    assert err.message == "Failed to parse line 3: not an RFC 5424 or RFC 3164 syslog message"


def test_syslog_without_app_name_or_source_default_fails_validation() -> None:
    err = refused(b"<13>1 - h - - - - m", "application/x-syslog", **PROD)
    assert err.details == [{"path": [0, "source"], "message": "Required"}]


# -- text -------------------------------------------------------------------------------------


def text(body: str, **query: str) -> list[dict[str, Any]]:
    return run(body.encode(), "text/plain", source="app", environment="production", **query)


@pytest.mark.parametrize(
    ("line", "ts", "level", "written", "message"),
    [
        ("2024-01-15T10:30:00Z error boom", utc_ns(2024, 1, 15, 10, 30), "error", "error", "boom"),
        (
            "2024-01-15T12:30:00.5+02:00 [WARNING] disk",
            utc_ns(2024, 1, 15, 10, 30, 0, 500_000),
            "warn",
            "WARNING",
            "disk",
        ),
        (
            "2024-01-15 10:30:00,250 Warn: slow",
            utc_ns(2024, 1, 15, 10, 30, 0, 250_000),
            "warn",
            "Warn",
            "slow",
        ),
        ("01/15/2024 10:30:00 DEBUG x=1", utc_ns(2024, 1, 15, 10, 30), "debug", "DEBUG", "x=1"),
        ("INFO no time here", RECEIVED_AT_NS, "info", "INFO", "no time here"),
        ("2024-01-15 10:30:00 no level", utc_ns(2024, 1, 15, 10, 30), "info", "", "no level"),
        ("no error found", RECEIVED_AT_NS, "info", "", "no error found"),
        (
            "2024-13-45 10:30:00 ERROR bad date",
            RECEIVED_AT_NS,
            "info",
            "",
            "2024-13-45 10:30:00 ERROR bad date",
        ),
        ("  indented line  ", RECEIVED_AT_NS, "info", "", "indented line"),
    ],
)
def test_text_lines(line: str, ts: int, level: str, written: str, message: str) -> None:
    (only,) = text(line)
    assert (only["timestamp"], only["level"], only["severity_text"], only["message"]) == (
        ts,
        level,
        written,
        message,
    )
    assert (only["service"], only["environment"]) == ("app", "production")


def test_text_level_default_applies_to_lines_without_a_keyword() -> None:
    assert [r["level"] for r in text("ERROR a\nplain b\n", level="warn")] == ["error", "warn"]


def test_text_skips_blank_lines_and_needs_a_source() -> None:
    assert len(text("a\n\n   \r\nb\r\n")) == 2
    err = refused(b"just text", "text/plain", environment="production")
    assert err.details == [{"path": [0, "source"], "message": "Required"}]


def test_text_line_with_only_a_level_has_no_message() -> None:
    err = refused(b"ERROR", "text/plain", source="a", environment="production")
    assert err.details == [{"path": [0, "message"], "message": "String must contain at least 1 character(s)"}]


# -- CSV --------------------------------------------------------------------------------------


def test_csv_tab_delimited_quoted_and_typed_cells() -> None:
    body = (
        "Level\tmessage\tsource\tstepIndex\ttags\tdata\tuserid\tregion\n"
        'warn\t"tab\there, and ""quotes"""\tapi\t4\tauth,login\t{"a": {"b": 1}}\tu1\teu\n'
        'info\tsecond\tapi\t\t["x"]\t\t\t\n'
    )
    first, second = run(body.encode(), "text/csv", environment="production")
    assert first == row(
        level="warn",
        message='tab\there, and "quotes"',
        service="api",
        user_id="u1",
        tags=["auth", "login"],
        attributes={"stepIndex": "4", "region": "eu", "a.b": "1"},
    )
    assert (second["message"], second["tags"], second["attributes"]) == ("second", ["x"], {})


def test_csv_quoted_field_with_comma_and_newline() -> None:
    body = b'level,message,source\ninfo,"hello, world\nsecond line",api\n'
    assert run(body, "text/csv", environment="production")[0]["message"] == "hello, world\nsecond line"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"level,message\ninfo,a,extra", "Failed to parse line 2: expected 2 fields, found 3"),
        (b"level,,message\n", "Failed to parse CSV header: column 2 has no name"),
        (b"level,message,Level\n", "Failed to parse CSV header: column 'level' appears twice"),
    ],
)
def test_csv_structure_errors(body: bytes, message: str) -> None:
    assert refused(body, "text/csv").message == message


def test_csv_cells_that_do_not_convert_are_named_by_the_schema() -> None:
    body = b"level,message,source,timestamp,data\ninfo,m,api,later,not json\n"
    err = refused(body, "text/csv", environment="production")
    assert err.details == [
        {"path": [0, "data"], "message": "Expected object, received string"},
        {"path": [0, "timestamp"], "message": "Expected number (Unix milliseconds), received string"},
    ]


def test_csv_header_only_has_no_logs() -> None:
    assert "at least 1 log" in refused(b"level,message\n", "text/csv").message


# -- OBL --------------------------------------------------------------------------------------


def obl(doc: dict[str, Any], prefix: bytes = b"") -> list[dict[str, Any]]:
    return run(prefix + orjson.dumps(doc), "application/x-obl", **PROD)


def test_obl_event_types_comment_and_device() -> None:
    doc = {
        "format": "open-board-log-0.1",
        "user_id": "root-user",
        "source": "aac",
        "locale": "en",
        "sessions": [
            {
                "id": "s1",
                "type": "log",
                "device_id": "dev-1",
                "ext_app": {"v": 2},
                "events": [
                    {"type": "button", "label": "hi", "button_id": "b1", "board_id": "bd", "spoken": False},
                    {"type": "utterance", "text": "hi you", "buttons": [{"label": "hi"}, {"label": "you"}]},
                    {"type": "action", "action": ":clear", "destination_board_id": "bd2", "text": "x"},
                    {"type": "note", "text": "good day", "author_name": "Ann"},
                    {"type": "button"},
                ],
            },
            {"id": "s2", "user_id": "other-user", "events": []},
            {"id": "s3"},
        ],
    }
    rows = obl(doc, b"/* NOTICE: treat respectfully */\n/* second */\n")
    assert [r["message"] for r in rows] == [
        "Button: hi",
        "Utterance: hi you",
        "Action: :clear",
        "Note: good day",
        "Button: ",
    ]
    assert {(r["service"], r["user_id"], r["session_id"], r["level"]) for r in rows} == {
        ("aac", "root-user", "dev-1", "info")
    }
    shared = {
        "session.id": "s1",
        "session.type": "log",
        "session.ext_app.v": "2",
        "obl.format": "open-board-log-0.1",
    }
    shared["obl.locale"] = "en"
    assert rows[0]["attributes"] == {
        "label": "hi",
        "button_id": "b1",
        "board_id": "bd",
        "spoken": "false",
        "event_type": "button",
        **shared,
    }
    assert rows[1]["attributes"]["buttons"] == '[{"label":"hi"},{"label":"you"}]'
    assert rows[2]["attributes"]["destination_board_id"] == "bd2"
    assert rows[3]["attributes"]["author_name"] == "Ann"


def test_obl_derived_names_do_not_overwrite_event_fields() -> None:
    doc = {
        "format": "open-board-log-0.1",
        "source": "a",
        "sessions": [
            {
                "id": "s",
                "events": [
                    {"type": "note", "text": "n", "id": "e9", "event_id": "mine", "session": "also mine"}
                ],
            }
        ],
    }
    (only,) = obl(doc)
    assert {k: v for k, v in only["attributes"].items() if "id" in k or "session" in k} == {
        "event_id": "mine",
        "_event_id": "e9",
        "session": "also mine",
        "_session.id": "s",
    }


def test_obl_query_source_is_the_default_and_level_default_applies() -> None:
    doc = {"format": "open-board-log-0.1", "sessions": [{"events": [{"type": "note", "text": "n"}]}]}
    (only,) = run(orjson.dumps(doc), "application/x-obl", source="q-src", level="debug", **PROD)
    assert (only["service"], only["level"], only["timestamp"]) == ("q-src", "debug", RECEIVED_AT_NS)


def test_obl_sent_as_json_is_read_as_obl() -> None:
    doc = {
        "format": "open-board-log-0.1",
        "source": "a",
        "sessions": [{"events": [{"type": "note", "text": "n"}]}],
    }
    assert run(orjson.dumps(doc), "application/json", **PROD)[0]["message"] == "Note: n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"/* never closed {}", "Failed to parse OBL: the leading /* comment is not closed"),
        (b"/* c */ [1]", "Invalid OBL: the document must be a JSON object"),
        (b'{"sessions": {}}', "Invalid OBL: 'sessions' must be an array"),
        (b'{"sessions": [1]}', "Invalid OBL: sessions[0] must be an object"),
        (b'{"sessions": [{"events": {}}]}', "Invalid OBL: sessions[0].events must be an array"),
        (b'{"sessions": [{"events": [2]}]}', "Invalid OBL: sessions[0].events[0] must be an object"),
        (
            b'{"sessions": [{"events": [{"type": "tap"}]}]}',
            "Invalid OBL: sessions[0].events[0].type must be button",
        ),
        (
            b'{"sessions": [{"events": [{"type": "note", "timestamp": "later"}]}]}',
            "Invalid OBL: sessions[0].events[0].timestamp 'later' is not an ISO 8601 time",
        ),
        (b"/* c */ {", "Failed to parse OBL: invalid JSON"),
    ],
)
def test_obl_errors(body: bytes, message: str) -> None:
    assert refused(body, "application/x-obl", **PROD).message.startswith(message)
