"""Dynatrace log ingest parser: the seed model body, payload types, key aliases, limits."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from formats import dynatrace
from formats.base import Parsed, ParseError, Rejection
from formats.dynatrace import parse
from gateway.dialects.dynatrace import DYNATRACE
from tests.formats.conftest import RECEIVED_AT_NS, deep_arrays, deep_object, make_ctx, utc_ns
from tests.seeds import seed_text

# Copied verbatim from the seed document (002), "Request body JSON model".
SEED_BODY = (
    b'[ { "content": "Exception: Custom error log sent via Generic Log Ingest", "log.source":'
    b' "/var/log/syslog", "timestamp": "2022-01-17T22:12:31.0000", "severity": "error", "custom.attribute":'
    b' "attribute value" }, { "content": "Exception: Custom error log sent via Generic Log Ingest",'
    b' "log.source": "/var/log/syslog", "timestamp": "2022-01-17T22:12:35.0000" }, { "content": "Exception:'
    b' Custom error log sent via Generic Log Ingest", "log.source": "/var/log/syslog" }, { "content":'
    b' "Exception: Custom error log sent via Generic Log Ingest" } ]'
)
CONTENT = "Exception: Custom error log sent via Generic Log Ingest"
JSON = "application/json; charset=utf-8"


def run(doc: Any, content_type: str = JSON, received_at_ns: int = RECEIVED_AT_NS) -> Parsed:
    return parse(orjson.dumps(doc), make_ctx(content_type, received_at_ns=received_at_ns))


def one(event: dict[str, Any], received_at_ns: int = RECEIVED_AT_NS) -> dict[str, Any]:
    parsed = run([event], received_at_ns=received_at_ns)
    assert parsed.rejected == []
    (row,) = parsed.rows
    return dict(row)


def test_seed_model_body() -> None:
    parsed = parse(SEED_BODY, make_ctx(JSON))

    def row(ts: int, attributes: dict[str, str], level: str = "info", text: str = "") -> dict[str, Any]:
        number = {"info": 9, "error": 17}[level]
        return {
            "timestamp": ts,
            "level": level,
            "severity_text": text,
            "severity_number": number,
            "message": CONTENT,
            "attributes": attributes,
        }

    source = {"log.source": "/var/log/syslog"}
    assert parsed.rejected == []
    assert parsed.rows == [
        row(
            utc_ns(2022, 1, 17, 22, 12, 31),
            {**source, "custom.attribute": "attribute value"},
            "error",
            "error",
        ),
        row(utc_ns(2022, 1, 17, 22, 12, 35), source),
        row(RECEIVED_AT_NS, source),
        row(RECEIVED_AT_NS, {}),
    ]


def test_seed_copy_matches_the_document() -> None:
    try:
        text = seed_text("002")
    except FileNotFoundError:
        pytest.skip("shared/seeds is not beside the checkout")
    documented, _ = json.JSONDecoder().raw_decode(text[text.index("[ {") :])
    assert documented == json.loads(SEED_BODY)


# -- payload types ----------------------------------------------------------------------------


def test_text_plain_is_one_event_with_one_trailing_newline_stripped() -> None:
    parsed = parse(b"line one\nline two\n\n", make_ctx("text/plain; charset=utf-8"))
    assert parsed.rows == [
        {
            "timestamp": RECEIVED_AT_NS,
            "level": "info",
            "severity_text": "",
            "severity_number": 9,
            "message": "line one\nline two\n",
            "attributes": {},
        }
    ]
    assert parse(b"crlf\r\n", make_ctx("text/plain")).rows[0]["message"] == "crlf"


def test_text_plain_keeps_invalid_utf8_as_replacement_characters() -> None:
    assert parse(b"bad \xff byte", make_ctx("text/plain")).rows[0]["message"] == "bad \ufffd byte"


def test_text_plain_looking_like_json_is_still_text() -> None:
    assert parse(b'{"content": "x"}', make_ctx("text/plain")).rows[0]["message"] == '{"content": "x"}'


@pytest.mark.parametrize("content_type", ["text/plain", JSON, "application/x-ndjson", ""])
def test_empty_body_is_refused(content_type: str) -> None:
    with pytest.raises(ParseError) as err:
        parse(b" \n", make_ctx(content_type))
    assert (err.value.code, DYNATRACE.refusal(err.value).status) == ("empty_body", 400)


def test_json_single_object_is_one_event() -> None:
    assert [r["message"] for r in run({"content": "solo"}).rows] == ["solo"]


def test_empty_json_array_stores_nothing() -> None:
    assert (run([]).rows, run([]).rejected) == ([], [])


@pytest.mark.parametrize(
    "body",
    [
        b"[{",
        b'"just a string"',
        b"42",
        b"null",
        b"\xff[]",
        deep_arrays(10_000),
        b"[" + deep_arrays(2000) + b"]",
    ],
)
def test_unusable_json_is_refused(body: bytes) -> None:
    with pytest.raises(ParseError) as err:
        parse(body, make_ctx(JSON))
    assert DYNATRACE.refusal(err.value).status == 400


def test_json_lines_bad_lines_are_rejected_and_the_rest_kept() -> None:
    body = b'{"content": "a"}\n\n{"content": \n["not", "object"]\n{"message": "d"}\r\n'
    parsed = parse(body, make_ctx("application/x-ndjson"))
    assert [r["message"] for r in parsed.rows] == ["a", "d"]
    assert parsed.rejected == [
        Rejection(1, "line 3 is not valid JSON"),
        Rejection(2, "event 2 is not a JSON object"),
    ]


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("", b'[{"content": "json"}]', "json"),
        ("application/x-www-form-urlencoded", b' {"content": "json"}', "json"),
        ("", b"a plain line", "a plain line"),
        ("application/octet-stream", b"<13>raw", "<13>raw"),
    ],
)
def test_other_content_types_are_sniffed(content_type: str, body: bytes, message: str) -> None:
    assert parse(body, make_ctx(content_type)).rows[0]["message"] == message


# -- fields -----------------------------------------------------------------------------------


def test_event_without_content_is_rejected_and_the_rest_kept() -> None:
    parsed = run([{"content": "a"}, {"severity": "error"}, "text", {"content": None}, {"content": "e"}])
    assert [r["message"] for r in parsed.rows] == ["a", "e"]
    assert parsed.rejected == [
        Rejection(1, "event 1 has no content (content, message, payload, body or log)"),
        Rejection(2, "event 2 is not a JSON object"),
        Rejection(3, "event 3 has no content (content, message, payload, body or log)"),
    ]


def test_content_aliases_in_priority_order_the_others_kept() -> None:
    row = one({"log": "l", "message": "m", "body": "b"})
    assert row["message"] == "m"
    assert row["attributes"] == {"log": "l", "body": "b"}


def test_special_keys_match_case_insensitively() -> None:
    row = one({"Content": "c", "TimeStamp": "2022-01-17T22:12:31Z", "LogLevel": "WARN"})
    assert (row["message"], row["timestamp"], row["level"], row["severity_text"]) == (
        "c",
        utc_ns(2022, 1, 17, 22, 12, 31),
        "warn",
        "WARN",
    )
    assert row["attributes"] == {}


def test_non_string_content_is_kept_as_json_text() -> None:
    assert one({"content": {"a": [1, 2]}})["message"] == '{"a":[1,2]}'


@pytest.mark.parametrize(
    ("event", "level", "text", "attributes"),
    [
        ({"severity": "error"}, "error", "error", {}),
        ({"level": "warning", "loglevel": "DEBUG"}, "debug", "DEBUG", {"level": "warning"}),
        ({"status": 200, "level": "info"}, "info", "info", {"status": "200"}),
        ({"syslog.severity": "crit"}, "error", "crit", {}),
        ({"severity": "serious"}, "error", "serious", {}),
        ({"severity": "Failure"}, "fatal", "Failure", {}),
        ({"severity": "alarm"}, "error", "alarm", {}),
        ({"severity": "note"}, "info", "note", {}),
        ({"severity": "emergency"}, "error", "emergency", {}),
        ({"severity": "trace-level"}, "debug", "trace-level", {}),
        ({"severity": "verbose"}, "trace", "verbose", {}),
        ({"severity": "fine"}, "debug", "fine", {}),
        ({"severity": "?"}, "info", "?", {}),
    ],
)
def test_severity_keys_and_values(
    event: dict[str, Any], level: str, text: str, attributes: dict[str, str]
) -> None:
    row = one({"content": "c", **event})
    assert (row["level"], row["severity_text"], row["attributes"]) == (level, text, attributes)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2022-01-17T22:12:31.0000", utc_ns(2022, 1, 17, 22, 12, 31)),
        ("2022-01-17T23:12:31.5+01:00", utc_ns(2022, 1, 17, 22, 12, 31, 500_000)),
        (1642457551000, utc_ns(2022, 1, 17, 22, 12, 31)),
        (1642457551123, utc_ns(2022, 1, 17, 22, 12, 31, 123_000)),
        ("1642457551123", utc_ns(2022, 1, 17, 22, 12, 31, 123_000)),
        (1642457551, utc_ns(2022, 1, 17, 22, 12, 31)),
        ("1642457551", utc_ns(2022, 1, 17, 22, 12, 31)),
        (1642457551.25, utc_ns(2022, 1, 17, 22, 12, 31, 250_000)),
        ("Jan 17 22:12:31", utc_ns(2022, 1, 17, 22, 12, 31)),
    ],
)
def test_timestamp_formats(value: Any, expected: int) -> None:
    received = utc_ns(2022, 1, 18)
    assert one({"content": "c", "timestamp": value}, received_at_ns=received)["timestamp"] == expected


def test_timestamp_aliases_in_priority_order() -> None:
    row = one({"content": "c", "ts": 1642457551, "@timestamp": "2022-01-17T00:00:00Z"})
    assert row["timestamp"] == utc_ns(2022, 1, 17)
    assert row["attributes"] == {"ts": "1642457551"}


@pytest.mark.parametrize(
    ("value", "kept"), [("last tuesday", "last tuesday"), (True, "true"), ([1], "[1]"), ("0", "0"), (0, "0")]
)
def test_unsupported_timestamp_uses_ingest_time_and_is_kept(value: Any, kept: str) -> None:
    row = one({"content": "c", "timestamp": value})
    assert row["timestamp"] == RECEIVED_AT_NS
    assert row["attributes"] == {"unparsed_timestamp": kept}


def test_time_more_than_ten_minutes_ahead_is_replaced_by_the_receive_time() -> None:
    ahead = "2024-01-15T12:10:01Z"  # RECEIVED_AT_NS is 12:00:00
    row = one({"content": "c", "timestamp": ahead})
    assert row["timestamp"] == RECEIVED_AT_NS
    assert row["attributes"] == {"timestamp": ahead}
    assert one({"content": "c", "timestamp": "2024-01-15T12:09:59Z"})["timestamp"] == utc_ns(
        2024, 1, 15, 12, 9, 59
    )


def test_old_times_are_kept_not_discarded() -> None:
    assert one({"content": "c", "timestamp": "2001-01-01T00:00:00Z"})["timestamp"] == utc_ns(2001, 1, 1)


def test_semantic_attributes_map_to_columns_and_the_rest_is_flattened() -> None:
    row = one(
        {
            "content": "c",
            "service.name": "checkout",
            "host.name": "web-1",
            "deployment.environment": "prod",
            "trace_id": "abc",
            "span_id": "def",
            "log.source": "/var/log/app.log",
            "k8s": {"pod": {"name": "p-1"}, "ns": "shop"},
            "count": 3,
            "flag": None,
        }
    )
    assert {k: row[k] for k in ("service", "host", "environment", "trace_id", "span_id")} == {
        "service": "checkout",
        "host": "web-1",
        "environment": "prod",
        "trace_id": "abc",
        "span_id": "def",
    }
    assert row["attributes"] == {
        "log.source": "/var/log/app.log",
        "k8s.pod.name": "p-1",
        "k8s.ns": "shop",
        "count": "3",
        "flag": "null",
    }


def test_event_nested_too_deep_is_rejected_alone() -> None:
    parsed = run([{"content": "deep", "x": deep_object(40)}, {"content": "ok"}])
    assert [r["message"] for r in parsed.rows] == ["ok"]
    assert parsed.rejected[0].index == 0


# -- limits -----------------------------------------------------------------------------------


def test_content_limit_is_65536_utf8_bytes() -> None:
    at_limit, over = "x" * 65_536, "x" * 65_535 + "é"
    parsed = run([{"content": at_limit}, {"content": over}, {"content": "€" * 21_846}])
    assert [len(r["message"]) for r in parsed.rows] == [65_536]
    assert [r.index for r in parsed.rejected] == [1, 2]
    assert "65,536 bytes" in parsed.rejected[0].reason
    too_long = parse(b"y" * 65_537, make_ctx("text/plain"))
    assert (too_long.rows, [r.index for r in too_long.rejected]) == ([], [0])


def test_attribute_limits_reject_the_event() -> None:
    many = {"content": "c", **{f"a{i}": i for i in range(501)}}
    fine = {"content": "c", **{f"a{i}": i for i in range(500)}}
    long_key = {"content": "c", "k" * 101: 1}
    long_value = {"content": "c", "v": "x" * 32_769}
    parsed = run([many, fine, long_key, long_value, {"content": "c", "k" * 100: "x" * 32_768}])
    assert [r.index for r in parsed.rejected] == [0, 2, 3]
    assert [len(r["attributes"]) for r in parsed.rows] == [500, 1]
    assert "501 attributes" in parsed.rejected[0].reason


def test_more_than_50000_events_is_413() -> None:
    body = b"[" + b'{"content":"c"},' * 50_000 + b'{"content":"c"}]'
    with pytest.raises(ParseError) as err:
        parse(body, make_ctx(JSON))
    assert (DYNATRACE.refusal(err.value).status, err.value.code) == (413, "too_many_events")
    assert (
        len(parse(b"[" + b'{"content":"c"},' * 49_999 + b'{"content":"c"}]', make_ctx(JSON)).rows) == 50_000
    )


def test_more_than_50000_json_lines_is_413() -> None:
    with pytest.raises(ParseError) as err:
        parse(b'{"content":"c"}\n' * 50_001, make_ctx("application/x-ndjson"))
    assert (err.value.code, DYNATRACE.refusal(err.value).status) == ("too_many_events", 413)


def test_body_over_10_mib_is_413() -> None:
    with pytest.raises(ParseError) as err:
        parse(b" " * (dynatrace.MAX_REQUEST_BYTES + 1), make_ctx("text/plain"))
    assert (DYNATRACE.refusal(err.value).status, err.value.code) == (413, "request_too_large")
