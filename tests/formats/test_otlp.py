"""OTLP parser details the shipper tests do not reach (they drive the real SDK end to end)."""

from __future__ import annotations

import orjson
import pytest

from formats import otlp
from formats.base import ParseContext

JSON = ParseContext(received_at_ns=1_700_000_000_000_000_000, content_type="application/json")


def one_record(**fields: object) -> bytes:
    record = {"body": {"stringValue": "m"}, **fields}
    return orjson.dumps(
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [record, {"body": {"stringValue": "ok"}}]}]}]}
    )


@pytest.mark.parametrize("bad", ["--12", "²", "1_000", "12x", " - 3"])
def test_an_integer_field_int_cannot_read_refuses_its_record_alone(bad: str) -> None:
    """Text that looks numeric to str.isdigit() but not to int() ('--12', '²') is a refused
    record, never an exception out of the parser (which the gateway would answer 500)."""
    parsed = otlp.parse(one_record(timeUnixNano=bad), JSON)
    assert [r["message"] for r in parsed.rows] == ["ok"]
    assert [(r.index, r.reason) for r in parsed.rejected] == [
        (0, f"log record 0: timeUnixNano {bad} is not an integer")
    ]


def test_scalar_and_kvlist_attributes_are_stored_as_text_a_repeated_key_keeping_its_last_value() -> None:
    attributes = [
        {"key": "s", "value": {"stringValue": "text"}},
        {"key": "i", "value": {"intValue": "42"}},
        {"key": "d", "value": {"doubleValue": 2.5}},
        {"key": "b", "value": {"boolValue": True}},
        {
            "key": "http",
            "value": {
                "kvlistValue": {
                    "values": [
                        {"key": "method", "value": {"stringValue": "GET"}},
                        {"key": "status", "value": {"intValue": 200}},
                        {"key": "method", "value": {"stringValue": "POST"}},
                    ]
                }
            },
        },
    ]
    (row, _) = otlp.parse(one_record(attributes=attributes), JSON).rows
    assert list(row["attributes"].items()) == [
        ("s", "text"),
        ("i", "42"),
        ("d", "2.5"),
        ("b", "true"),
        ("http.method", "POST"),
        ("http.status", "200"),
    ]
