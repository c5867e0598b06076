"""OTLP parser details the shipper tests do not reach (they drive the real SDK end to end)."""

from __future__ import annotations

import math

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


def test_non_finite_doubles_are_stored_as_proto3_spells_them_in_either_encoding() -> None:
    """A NaN or infinite double is stored as `NaN`/`Infinity`/`-Infinity` (it was `null`, which
    says nothing); inside an array, which is stored as JSON, it stays JSON's `null`."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    values = {"nan": math.nan, "inf": math.inf, "minus": -math.inf}
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value = "m"
    for key, number in values.items():
        record.attributes.append(KeyValue(key=key, value=AnyValue(double_value=number)))
    array = record.attributes.add(key="array").value.array_value
    array.values.append(AnyValue(double_value=math.nan))
    array.values.append(AnyValue(double_value=1.5))
    protobuf = ParseContext(received_at_ns=JSON.received_at_ns, content_type="application/x-protobuf")
    (from_protobuf,) = otlp.parse(request.SerializeToString(), protobuf).rows
    spelled = [
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "inf", "value": {"doubleValue": "Infinity"}},
        {"key": "minus", "value": {"doubleValue": "-Infinity"}},
        {"key": "array", "value": {"arrayValue": {"values": [{"doubleValue": "NaN"}, {"doubleValue": 1.5}]}}},
    ]
    (from_json, _) = otlp.parse(one_record(attributes=spelled), JSON).rows
    expected = {"nan": "NaN", "inf": "Infinity", "minus": "-Infinity", "array": "[null,1.5]"}
    assert from_protobuf["attributes"] == expected
    assert from_json["attributes"] == expected


@pytest.mark.parametrize("depth", [31, 32, 33])
def test_how_deep_a_kvlist_may_nest_in_each_encoding(depth: int) -> None:
    """docs/shippers.md: OTLP JSON stores an attribute nested 32 kvlists deep and refuses a
    deeper one with its record alone; protobuf's decoder (upb, ~100 message levels, each kvlist
    three) refuses a request nesting 32 or more as undecodable, before any record is read."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from formats.base import ParseError

    value: dict[str, object] = {"stringValue": "leaf"}
    for i in range(depth):
        value = {"kvlistValue": {"values": [{"key": f"k{i}", "value": value}]}}
    body = one_record(attributes=[{"key": "a", "value": value}])
    parsed = otlp.parse(body, JSON)
    if depth <= 32:
        assert len(parsed.rows) == 2 and not parsed.rejected
        assert parsed.rows[0]["attributes"] == {
            "a." + ".".join(f"k{i}" for i in reversed(range(depth))): "leaf"
        }
    else:
        assert len(parsed.rows) == 1
        assert [r.reason for r in parsed.rejected] == [
            "log record 0: a value is nested deeper than 32 levels"
        ]

    request = ExportLogsServiceRequest()
    attribute = request.resource_logs.add().scope_logs.add().log_records.add().attributes.add(key="a")
    leaf = attribute.value
    for i in reversed(range(depth)):
        leaf = leaf.kvlist_value.values.add(key=f"k{i}").value
    leaf.string_value = "leaf"
    protobuf = ParseContext(received_at_ns=JSON.received_at_ns, content_type="application/x-protobuf")
    if depth < 32:
        (row,) = otlp.parse(request.SerializeToString(), protobuf).rows
        assert row["attributes"] == parsed.rows[0]["attributes"]
    else:
        with pytest.raises(ParseError) as refused:
            otlp.parse(request.SerializeToString(), protobuf)
        assert refused.value.code == "invalid_protobuf"
