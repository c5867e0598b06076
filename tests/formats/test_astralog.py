"""AstraLog drain parser: the seed example and its refusals (the dialect has no partial success)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from formats.astralog import REQUIRED, parse
from formats.base import ParseError
from gateway.dialects.astralog import ASTRALOG
from tests.bodies import astralog_record
from tests.formats.conftest import deep_arrays, make_ctx, utc_ns
from tests.seeds import curl_examples

# Copied verbatim from the seed document (001): the -d body of the curl example.
SEED_BODY = b"""{
"logs": [
{
"project_id": "org-xyz",
"timestamp": "2024-05-31T15:30:45Z",
"level": "info",
"service": "api-gateway",
"message": "User logged in",
"metadata": { "user_id": 123, "ip": "1.1.1.1" }
}
]
}"""


def refused(body: bytes) -> ParseError:
    with pytest.raises(ParseError) as err:
        parse(body, make_ctx())
    assert ASTRALOG.refusal(err.value).status == 400
    return err.value


def test_seed_example() -> None:
    parsed = parse(SEED_BODY, make_ctx())
    assert parsed.rejected == []
    assert parsed.rows == [
        {
            "timestamp": utc_ns(2024, 5, 31, 15, 30, 45),
            "level": "info",
            "severity_text": "info",
            "severity_number": 9,
            "service": "api-gateway",
            "message": "User logged in",
            "attributes": {"user_id": "123", "ip": "1.1.1.1", "project_id": "org-xyz"},
        }
    ]


def test_seed_copy_matches_the_document() -> None:
    try:
        (example,) = curl_examples("001")
    except FileNotFoundError:
        pytest.skip("shared/seeds is not beside the checkout")
    assert example.body == SEED_BODY


@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("how", ["absent", "null", "empty"])
def test_missing_required_field_is_refused_naming_record_and_field(field: str, how: str) -> None:
    log = astralog_record()
    if how == "absent":
        del log[field]
    else:
        log[field] = None if how == "null" else ""
    err = refused(orjson.dumps({"logs": [astralog_record(), log]}))
    assert err.code == "missing_field"
    assert err.message == f"logs[1] is missing required field(s): {field}"


@pytest.mark.parametrize("field", ["project_id", "level", "service", "message"])
def test_non_string_field_is_refused(field: str) -> None:
    err = refused(orjson.dumps({"logs": [astralog_record(**{field: 5})]}))
    assert (err.code, err.message) == ("invalid_type", f"logs[0].{field} must be a string")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty_body"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (deep_arrays(10_000), "invalid_json"),
        (b"[]", "invalid_shape"),
        (b'{"logs": {}}', "invalid_shape"),
        (b'{"logs": []}', "empty_batch"),
        (b'{"logs": [1]}', "invalid_shape"),
    ],
)
def test_unusable_body(body: bytes, code: str) -> None:
    assert refused(body).code == code


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", "²", True, [1]])
def test_bad_timestamp_is_refused(value: Any) -> None:
    assert refused(orjson.dumps({"logs": [astralog_record(timestamp=value)]})).code == "invalid_timestamp"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-31T15:30:45Z", utc_ns(2024, 5, 31, 15, 30, 45)),  # RFC 3339
        ("2024-05-31T15:30:45.250+02:00", utc_ns(2024, 5, 31, 13, 30, 45, 250_000)),  # ISO 8601 with offset
        ("2024-05-31T15:30:45", utc_ns(2024, 5, 31, 15, 30, 45)),  # ISO 8601 without zone = UTC
        ("2024-05-31 15:30:45", utc_ns(2024, 5, 31, 15, 30, 45)),  # SQL
        ("2024-05-31 15:30:45.5", utc_ns(2024, 5, 31, 15, 30, 45, 500_000)),
        (1717169445, utc_ns(2024, 5, 31, 15, 30, 45)),
    ],
)
def test_timestamp_formats(value: Any, expected: int) -> None:
    assert (
        parse(orjson.dumps({"logs": [astralog_record(timestamp=value)]}), make_ctx()).rows[0]["timestamp"]
        == expected
    )


def test_deeply_nested_metadata_is_refused_not_crashing() -> None:
    body = (
        orjson.dumps({"logs": [astralog_record()]})[:-3]
        + b', "metadata": {"x": '
        + deep_arrays(1000)
        + b"}}]}"
    )
    assert refused(body).code == "too_deep"


def test_the_one_time_rule_applies_exact_integer_times_and_refuses_the_epoch() -> None:
    """AstraLog uses the time rule every parser uses (formats.common.parse_timestamp)."""

    def body(ts: object) -> bytes:
        log = {"project_id": "p", "timestamp": ts, "level": "info", "service": "s", "message": "m"}
        return orjson.dumps({"logs": [log]})

    (row,) = parse(body(1704110400123), make_ctx()).rows
    assert row["timestamp"] == 1704110400123 * 10**6  # through a float it was 64 ns off
    for epoch in (0, "0", "1970-01-01T00:00:00Z"):
        assert refused(body(epoch)).code == "invalid_timestamp"
