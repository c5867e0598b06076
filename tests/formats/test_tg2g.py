"""TG2G IngestAPI parser: the seed payload, and every rule of the dialect and of the parser."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from formats.base import ParseError, Rejection
from formats.tg2g import parse
from gateway.dialects.tg2g import TG2G
from tests.formats.conftest import RECEIVED_AT_NS, deep_arrays, deep_object, make_ctx, utc_ns
from tests.seeds import seed_text

# Copied verbatim from the seed document (000), "Basic payload (with entity + batched logs)".
SEED_BODY = b"""{
  "source": "checkout-service",
  "entity": {
    "name": "checkout-service",
    "kind": "service",
    "tags": ["prod", "payments"]
  },
  "logs": [
    {
      "timestamp": "2024-01-01T12:00:00Z",
      "level": "error",
      "message": "Payment gateway timeout",
      "requestId": "abc-123",
      "region": "us-east-1"
    },
    {
      "timestamp": "2024-01-01T12:00:03Z",
      "level": "info",
      "message": "Retry succeeded",
      "requestId": "abc-123"
    }
  ]
}"""


def run(doc: Any) -> Any:
    return parse(orjson.dumps(doc), make_ctx())


def one(log: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    parsed = run({**envelope, "logs": [log]})
    assert parsed.rejected == []
    (row,) = parsed.rows
    return dict(row)


def test_seed_payload() -> None:
    parsed = parse(SEED_BODY, make_ctx())

    entity = {
        "entity_name": "checkout-service",
        "entity_kind": "service",
        "entity_tags": ["prod", "payments"],
    }
    assert parsed.rejected == []
    assert parsed.table == "logs"
    assert parsed.rows == [
        {
            "timestamp": utc_ns(2024, 1, 1, 12, 0, 0),
            "level": "error",
            "severity_text": "error",
            "severity_number": 17,
            "message": "Payment gateway timeout",
            "service": "checkout-service",
            "request_id": "abc-123",
            **entity,
            "attributes": {"region": "us-east-1"},
        },
        {
            "timestamp": utc_ns(2024, 1, 1, 12, 0, 3),
            "level": "info",
            "severity_text": "info",
            "severity_number": 9,
            "message": "Retry succeeded",
            "service": "checkout-service",
            "request_id": "abc-123",
            **entity,
            "attributes": {},
        },
    ]


def test_seed_copy_matches_the_document() -> None:
    try:
        text = seed_text("000")
    except FileNotFoundError:
        pytest.skip("shared/seeds is not beside the checkout")
    start = text.index("{", text.index("Basic payload"))
    documented, _ = json.JSONDecoder().raw_decode(text[start:])
    assert documented == json.loads(SEED_BODY)


# -- the whole request ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty_body"),
        (b"  \n", "empty_body"),
        (b"\xff\xfe{}", "invalid_json"),
        (b'{"logs": [', "invalid_json"),
        (b"[]", "invalid_shape"),
        (b'"logs"', "invalid_shape"),
        (b"{}", "invalid_shape"),
        (b'{"logs": {"message": "x"}}', "invalid_shape"),
        (b'{"logs": null}', "invalid_shape"),
        (deep_arrays(10_000), "invalid_json"),
        (b'{"logs": ' + deep_arrays(10_000) + b"}", "invalid_json"),
    ],
)
def test_unusable_body_is_refused(body: bytes, code: str) -> None:
    with pytest.raises(ParseError) as err:
        parse(body, make_ctx())
    assert (err.value.code, TG2G.refusal(err.value).status) == (code, 400)


@pytest.mark.parametrize(
    ("envelope", "field"),
    [
        ({"source": 42}, "source"),
        ({"entity": "checkout"}, "entity"),
        ({"entity": {"name": ["a"]}}, "entity.name"),
        ({"entity": {"kind": 1}}, "entity.kind"),
        ({"entity": {"tags": "prod"}}, "entity.tags"),
    ],
)
def test_malformed_envelope_field_is_refused_naming_it(envelope: dict[str, Any], field: str) -> None:
    with pytest.raises(ParseError, match=f"'{field}'"):
        run({**envelope, "logs": [{"message": "m"}]})


def test_empty_logs_array_is_accepted_with_nothing_to_store() -> None:
    parsed = run({"source": "s", "logs": []})
    assert (parsed.rows, parsed.rejected) == ([], [])


# -- per item ---------------------------------------------------------------------------------


def test_only_message_is_required_and_defaults_fill_the_rest() -> None:
    row = one({"message": "hello"})
    assert row == {
        "timestamp": RECEIVED_AT_NS,
        "level": "info",
        "severity_text": "",
        "severity_number": 9,
        "message": "hello",
        "attributes": {},
    }


def test_invalid_items_are_rejected_one_by_one_and_the_rest_kept() -> None:
    parsed = run(
        {
            "logs": [
                {"message": "ok 0"},
                {"level": "error"},
                "not an object",
                {"message": 42},
                {"message": None},
                {"message": "bad time", "timestamp": "yesterday"},
                {"message": "ok 6", "timestamp": None},
            ]
        }
    )
    assert [r["message"] for r in parsed.rows] == ["ok 0", "ok 6"]
    assert parsed.rejected == [
        Rejection(1, "logs[1].message is required"),
        Rejection(2, "logs[2] must be an object"),
        Rejection(3, "logs[3].message must be a string"),
        Rejection(4, "logs[4].message is required"),
        Rejection(5, "logs[5].timestamp 'yesterday' is not an ISO 8601 time"),
    ]
    assert parsed.rows[1]["timestamp"] == RECEIVED_AT_NS


def test_an_item_nested_too_deep_is_rejected_alone() -> None:
    deep_list = b'{"message": "list", "ctx": ' + deep_arrays(1000) + b"}"
    body = b'{"logs": [' + orjson.dumps({"message": "deep", "ctx": deep_object(100)}) + b", " + deep_list
    parsed = parse(body + b', {"message": "fine"}, ' + deep_arrays(1000) + b"]}", make_ctx())
    assert [r["message"] for r in parsed.rows] == ["fine"]
    assert [r.index for r in parsed.rejected] == [0, 1, 3]
    assert "nested deeper" in parsed.rejected[0].reason
    assert "nested too deeply" in parsed.rejected[1].reason
    assert parsed.rejected[2].reason == "logs[3] must be an object"


def test_empty_message_is_a_string_and_accepted() -> None:
    assert one({"message": ""})["message"] == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01T12:00:00Z", utc_ns(2024, 1, 1, 12)),
        ("2024-01-01T14:00:00.250+02:00", utc_ns(2024, 1, 1, 12, micro=250_000)),
        ("2024-01-01 12:00:00", utc_ns(2024, 1, 1, 12)),
        (1704110400, utc_ns(2024, 1, 1, 12)),
        (1704110400123, utc_ns(2024, 1, 1, 12, micro=123_000)),
    ],
)
def test_timestamps(value: Any, expected: int) -> None:
    assert one({"message": "m", "timestamp": value})["timestamp"] == expected


@pytest.mark.parametrize("value", ["not a time", "", 0, "0", True, {"at": 1}, -5, "2024-13-01T00:00:00Z"])
def test_unusable_timestamp_rejects_the_item(value: Any) -> None:
    parsed = run({"logs": [{"message": "m", "timestamp": value}]})
    assert parsed.rows == []
    assert parsed.rejected[0].reason.startswith("logs[0].timestamp")


@pytest.mark.parametrize(
    ("value", "level", "severity_text"),
    [
        ("error", "error", "error"),
        ("WARNING", "warn", "WARNING"),
        ("crit", "error", "crit"),
        ("whatever", "info", "whatever"),
        (50, "error", "50"),
        (20, "debug", "20"),
        (3, "info", "3"),
        (None, "info", ""),
    ],
)
def test_level_is_normalized_and_kept_as_sent(value: Any, level: str, severity_text: str) -> None:
    row = one({"message": "m", "level": value})
    assert (row["level"], row["severity_text"]) == (level, severity_text)


def test_well_known_fields_go_to_their_columns() -> None:
    row = one(
        {
            "message": "m",
            "traceId": "t1",
            "span_id": "s1",
            "userId": 123,
            "session_id": "sess",
            "flowId": "f",
            "errorName": "TypeError",
            "errorStack": "at x",
            "env": "prod",
            "hostname": "web-1",
            "dataset": "payments",
            "tags": ["a", "b"],
        }
    )
    assert {k: v for k, v in row.items() if k not in ("timestamp", "severity_number")} == {
        "level": "info",
        "severity_text": "",
        "message": "m",
        "trace_id": "t1",
        "span_id": "s1",
        "user_id": "123",
        "session_id": "sess",
        "flow_id": "f",
        "error_name": "TypeError",
        "error_stack": "at x",
        "environment": "prod",
        "host": "web-1",
        "dataset": "payments",
        "tags": ["a", "b"],
        "attributes": {},
    }


def test_nothing_is_dropped_extra_fields_are_flattened_attributes() -> None:
    row = one(
        {
            "message": "m",
            "region": "us-east-1",
            "retries": 3,
            "ok": False,
            "none": None,
            "http": {"status": 502, "route": {"path": "/pay"}},
            "list": [1, {"a": 2}],
            "empty": {},
            "host": {"name": "web-1"},  # an object under a column's name stays an attribute
            "request_id": "r1",
            "requestId": "r2",  # a second spelling of a filled column stays too
        }
    )
    assert row["request_id"] == "r1"
    assert "host" not in row
    assert row["attributes"] == {
        "region": "us-east-1",
        "retries": "3",
        "ok": "false",
        "none": "null",
        "http.status": "502",
        "http.route.path": "/pay",
        "list": '[1,{"a":2}]',
        "empty": "{}",
        "host.name": "web-1",
        "requestId": "r2",
    }


def test_service_comes_from_source_unless_the_log_names_its_own() -> None:
    parsed = run({"source": "s", "logs": [{"message": "a"}, {"message": "b", "service": "own"}]})
    assert [r["service"] for r in parsed.rows] == ["s", "own"]


def test_entity_extras_are_kept_and_envelope_extras_apply_to_every_log() -> None:
    row = one(
        {"message": "m", "team": "own"},
        entity={"name": "n", "region": "eu", "owner": {"team": "pay"}},
        team="payments",
        host="web-9",
    )
    assert row["entity_name"] == "n"
    assert row["host"] == "web-9"
    assert row["attributes"] == {"entity.region": "eu", "entity.owner.team": "pay", "team": "own"}


def test_entity_tags_that_are_not_strings_are_kept_as_text() -> None:
    assert one({"message": "m"}, entity={"tags": ["a", 1, None]})["entity_tags"] == ["a", "1", "null"]
