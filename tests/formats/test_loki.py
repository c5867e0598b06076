"""Loki push parser: both JSON shapes, the snappy protobuf, label sets, per-entry refusals."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import cramjam
import orjson
import pytest

from formats.base import Parsed, ParseError
from formats.common import MAX_ATTRIBUTE_KEYS
from formats.loki import MAX_DECOMPRESSED, parse, parse_labels
from gateway.dialects.loki import LOKI
from tests.formats.conftest import make_ctx
from tests.fuzz.corpus import loki_push_body

NS = 1_705_312_200 * 10**9
# The push body of Loki's HTTP API documentation, in its shape (our own labels and lines).
SEED_BODY = orjson.dumps(
    {
        "streams": [
            {
                "stream": {"label": "value", "service_name": "api"},
                "values": [
                    [str(NS), "fizzbuzz"],
                    [str(NS + 1), "with metadata", {"trace_id": "0242ac120002"}],
                ],
            }
        ]
    }
)


def run(doc: Any, content_type: str = "application/json", **headers: str) -> Parsed:
    return parse(orjson.dumps(doc), replace(make_ctx(content_type), headers=headers))


def test_seed_body_maps_labels_and_structured_metadata() -> None:
    parsed = parse(SEED_BODY, make_ctx())
    assert parsed.rejected == []
    first, second = parsed.rows
    assert first == {
        "timestamp": NS,
        "message": "fizzbuzz",
        "level": "info",
        "severity_number": 9,
        "severity_text": "",
        "service": "api",
        "attributes": {"label": "value", "service_name": "api"},
    }
    assert second["trace_id"] == "0242ac120002"
    assert second["attributes"]["trace_id"] == "0242ac120002"


@pytest.mark.parametrize(
    ("labels", "service"),
    [
        ({"service_name": "a", "app": "b", "job": "c"}, "a"),
        ({"app": "b", "job": "c"}, "b"),
        ({"application": "d", "job": "c"}, "d"),
        ({"job": "c"}, "c"),
        ({"pod": "x"}, None),
    ],
)
def test_service_comes_from_the_first_service_label(labels: dict[str, str], service: str | None) -> None:
    (row,) = run({"streams": [{"stream": labels, "values": [[str(NS), "m"]]}]}).rows
    assert row.get("service") == service
    assert row["attributes"] == labels  # every label is kept as it came


@pytest.mark.parametrize(
    ("labels", "level", "text"),
    [
        ({"level": "ERROR"}, "error", "ERROR"),
        ({"detected_level": "warn"}, "warn", "warn"),
        ({"severity": "critical"}, "error", "critical"),
        ({"lvl": "dbg"}, "debug", "dbg"),
        ({}, "info", ""),
    ],
)
def test_level_labels(labels: dict[str, str], level: str, text: str) -> None:
    (row,) = run({"streams": [{"stream": labels, "values": [[str(NS), "m"]]}]}).rows
    assert (row["level"], row["severity_text"]) == (level, text)


def test_org_id_header_is_an_attribute() -> None:
    (row,) = run({"streams": [{"stream": {}, "values": [[str(NS), "m"]]}]}, **{"X-Scope-OrgID": "t1"}).rows
    assert row["attributes"] == {"scope_org_id": "t1"}


def test_bad_entries_are_rejected_alone_and_numbered_across_streams() -> None:
    doc = {
        "streams": [
            {"stream": {"a": "1"}, "values": [[str(NS), "ok"], ["0", "epoch"], [NS, "int ns is fine"]]},
            {
                "stream": {"a": "2"},
                "values": [[str(NS), 5], "x", [str(NS), "m", {"k": 1}], [str(10**20), "2286"]],
            },
        ],
        "unknown": True,
    }
    parsed = run(doc)
    assert [r["message"] for r in parsed.rows] == ["ok", "int ns is fine"]
    assert [(r.index, r.reason.split(" ")[0]) for r in parsed.rejected] == [
        (1, "streams[0].values[1]"),
        (3, "streams[1].values[0]"),
        (4, "streams[1].values[1]"),
        (5, "streams[1].values[2]"),
        (6, "streams[1].values[3]"),
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty_body"),
        (b"[]", "invalid_snappy"),  # no JSON object, no JSON type: taken as protobuf, as Loki does
        (b'{"streams": 1}', "invalid_shape"),
        (b'{"streams": [1]}', "invalid_shape"),
        (b'{"streams": [{"stream": {"a": 1}}]}', "invalid_labels"),
        (b'{"streams": [{"stream": {}, "values": {}}]}', "invalid_shape"),
        (b'{"streams": [{"labels": "a=b", "entries": []}]}', "invalid_labels"),
        (b'{"streams": [{"foo": 1}]}', "invalid_shape"),
        (b'{"streams": [', "invalid_json"),
    ],
)
def test_request_refusals(body: bytes, code: str) -> None:
    with pytest.raises(ParseError) as err:
        parse(body, make_ctx(""))
    assert err.value.code == code
    assert LOKI.refusal(err.value).status == 400


def test_protobuf_snappy_body() -> None:
    body = loki_push_body(('{job="varlogs", level="error"}', NS + 5, "boom"))
    (row,) = parse(body, make_ctx("application/x-protobuf")).rows
    assert row["timestamp"] == NS + 5
    assert (row["message"], row["service"], row["level"]) == ("boom", "varlogs", "error")
    assert row["attributes"] == {"job": "varlogs", "level": "error", "trace_id": "4bf92f35"}
    assert row["trace_id"] == "4bf92f35"
    # With no Content-Type, a body that does not open with `{` is protobuf too.
    assert parse(body, make_ctx("")).rows == [row]


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x01\x02",
        bytes(cramjam.snappy.compress_raw(b"\x0a\x05\xff\xff")),  # truncated protobuf
        bytes(cramjam.snappy.compress_raw(b"\x0a\x04\x0a\x02\xff\xfe")),  # invalid UTF-8 in the labels
        loki_push_body(('{a="b"}', NS, "x"))[:-3],  # truncated snappy
    ],
)
def test_broken_protobuf_is_a_400(body: bytes) -> None:
    with pytest.raises(ParseError) as err:
        parse(body, make_ctx("application/x-protobuf"))
    assert err.value.code in ("invalid_snappy", "invalid_protobuf")
    assert LOKI.refusal(err.value).status == 400


def test_snappy_bomb_is_refused_from_its_header() -> None:
    claimed = MAX_DECOMPRESSED + 1
    header = bytearray()
    while claimed >= 0x80:
        header.append(claimed & 0x7F | 0x80)
        claimed >>= 7
    header.append(claimed)
    with pytest.raises(ParseError) as err:
        parse(bytes(header) + b"\x00" * 8, make_ctx("application/x-protobuf"))
    assert (err.value.code, LOKI.refusal(err.value).status) == ("request_too_large", 413)


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("{}", {}),
        (' { a = "1" , b="x,y}" } ', {"a": "1", "b": "x,y}"}),
        ('{a="q\\"uote", b="back\\\\slash\\n"}', {"a": 'q"uote', "b": "back\\slash\n"}),
        ('{k8s.pod="p", __name__="n"}', {"k8s.pod": "p", "__name__": "n"}),
    ],
)
def test_label_sets(text: str, labels: dict[str, str]) -> None:
    assert parse_labels(text, 0) == labels


@pytest.mark.parametrize(
    "text", ["", "a", "{a}", '{a="1"', '{a="1",}', '{a="1"} x', '{1a="b"}', '{a="1" b="2"}']
)
def test_malformed_label_sets(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_labels(text, 3)
    assert err.value.code == "invalid_labels"
    assert "streams[3]" in err.value.message


def test_too_many_attributes_refuse_the_entry() -> None:
    metadata = {f"k{i}": "v" for i in range(MAX_ATTRIBUTE_KEYS + 1)}
    parsed = run({"streams": [{"stream": {}, "values": [[str(NS), "m", metadata], [str(NS), "kept"]]}]})
    assert [r["message"] for r in parsed.rows] == ["kept"]
    assert parsed.rejected[0].index == 0


def test_received_time_is_never_used_for_an_entry() -> None:
    """Loki requires a time per entry; a missing one is refused, not replaced by the receive time."""
    parsed = run({"streams": [{"stream": {}, "values": [[None, "m"]]}]})
    assert parsed.rows == [] and len(parsed.rejected) == 1
