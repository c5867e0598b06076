"""Splunk HEC parsers: concatenated events, the event object, fields and metadata, raw lines."""

from __future__ import annotations

from dataclasses import replace

import pytest

from formats.base import ParseError, Rejection
from formats.hec import EVENT_BLANK, EVENT_REQUIRED, INVALID_FORMAT, parse_event, parse_raw
from gateway.dialects.hec import HEC_EVENT
from tests.formats.conftest import RECEIVED_AT_NS, make_ctx

CTX = make_ctx("")


@pytest.mark.parametrize("gap", [b"", b" ", b"\n", b"\r\n\t "])
def test_concatenated_events_with_or_without_whitespace(gap: bytes) -> None:
    body = b'{"event": "a", "time": 1705312200.5}' + gap + b'{"event": "b", "time": "1705312201"}' + gap
    parsed = parse_event(body, CTX)
    assert [(r["message"], r["timestamp"]) for r in parsed.rows] == [
        ("a", 1705312200_500_000_000),
        ("b", 1705312201_000_000_000),
    ]


def test_event_object_fields_and_metadata() -> None:
    body = (
        b'{"host": "h", "source": "s", "sourcetype": "st", "index": "main", "extra": {"x": 1},'
        b' "event": {"msg": "m", "severity": "ERROR", "user": {"id": 3}, "message": 5},'
        b' "fields": {"service": "api", "env": "prod", "trace_id": "t", "tags": ["a"]}}'
    )
    (row,) = parse_event(body, CTX).rows
    assert row == {
        "timestamp": RECEIVED_AT_NS,
        "message": "m",
        "level": "error",
        "severity_number": 17,
        "severity_text": "ERROR",
        "service": "api",
        "environment": "prod",
        "trace_id": "t",
        "host": "h",
        "dataset": "main",
        "attributes": {
            "user.id": "3",
            "message": "5",
            "tags": '["a"]',
            "source": "s",
            "sourcetype": "st",
            "extra.x": "1",
        },
    }


def test_an_event_object_without_a_message_is_kept_whole() -> None:
    (row,) = parse_event(b'{"event": {"k": [1, 2]}}', CTX).rows
    assert row["message"] == '{"k":[1,2]}'


@pytest.mark.parametrize(
    ("body", "index", "reason"),
    [
        (b'{"event": "a"} {"time": 1}', 1, EVENT_REQUIRED),
        (b'{"event": "a"} {"event": null}', 1, EVENT_BLANK),
        (b'{"event": "a"} {"event": {}}', 1, EVENT_BLANK),
        (b'{"event": "a"} [1]', 1, INVALID_FORMAT),
        (b'{"event": "a"} {"event": "b", "time": "yesterday"}', 1, INVALID_FORMAT),
        (b'{"event": "a"} {"event": "b", "time": Infinity}', 1, INVALID_FORMAT),
        (b'{"event": "a"} {"event": "b", "fields": []}', 1, INVALID_FORMAT),
        (b'{"event": "a"} {"event": "b"', 1, INVALID_FORMAT),
        (b'{"event": ' + b"[" * 5000 + b"]" * 5000 + b"}", 0, INVALID_FORMAT),
    ],
)
def test_the_first_bad_event_stops_the_request(body: bytes, index: int, reason: str) -> None:
    parsed = parse_event(body, CTX)
    assert [r["message"] for r in parsed.rows] == ["a"] * index
    assert parsed.rejected == [Rejection(index, reason)]


@pytest.mark.parametrize(
    ("body", "code"), [(b"", "no_data"), (b" \n", "no_data"), (b'{"event": "\xff"}', "invalid_format")]
)
def test_request_refusals(body: bytes, code: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_event(body, CTX)
    assert err.value.code == code
    assert HEC_EVENT.refusal(err.value).status == 400


def test_raw_lines_take_the_query_metadata() -> None:
    ctx = replace(CTX, query={"sourcetype": "syslog", "host": "h1", "index": "main", "source": "/var/log/x"})
    parsed = parse_raw(b"first\r\n\n  \nsecond \xff\n", ctx)
    assert [r["message"] for r in parsed.rows] == ["first", "second \ufffd"]
    assert parsed.rows[0]["host"] == "h1" and parsed.rows[0]["dataset"] == "main"
    assert parsed.rows[0]["attributes"] == {"source": "/var/log/x", "sourcetype": "syslog"}
    with pytest.raises(ParseError):
        parse_raw(b"\n\n", ctx)
