"""The gateway's validate-only fast paths answer exactly as the full parsers do.

For every body, `validate` raises the same ParseError (code, status, message, details) as
`parse`, or neither raises and both count the same records. Bodies are generated around
the edges the fast path takes shortcuts on: field types, empty strings, ISO times near the
1970/2100 limits and with whitespace or offsets, numeric times, nested and list metadata,
extra fields, deep nesting and the attribute-count limit.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench import payloads
from formats import PARSERS, VALIDATORS, Parsed, ParseError, astralog, astralog_store
from formats.astralog import validate as astralog_validate
from formats.common import MAX_ATTRIBUTE_KEYS, parse_timestamp
from formats.validate import iso_time
from tests.bodies import astralog_record
from tests.formats.conftest import deep_object, make_ctx
from tests.test_store_parse import bodies as store_parse_bodies
from tests.test_store_parse import quick_bodies

TIMES = st.sampled_from(
    [
        "2024-05-31T15:30:45Z",
        "2024-05-31T15:30:45.250+02:00",
        "2024-05-31 15:30:45",
        "2024-05-31",
        " 2024-05-31T15:30:45Z ",
        "2024-05-31T15:30:45Z\n",
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:00:00+01:00",
        "1971-01-01T00:00:00-23:59",
        "2098-12-31T23:59:59-23:59",
        "2099-12-31T23:00:00-23:00",
        "2100-01-01T00:00:00Z",
        "2100-01-01T00:00:01Z",
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "20240531T153045Z",
        "20240531",
        "1717169445",
        "1717169445.25",
        "1717169445000",
        "99999999999999999999",
        "²",
        "2024-",
        "-2024-05-31",
        "yesterday",
        "",
        "   ",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = st.one_of(
    st.text(max_size=6), st.just(""), SCALARS, st.lists(SCALARS, max_size=2), st.just({})
)


@st.composite
def records(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 30)) == 0:
        return draw(JSON)  # not even an object
    record: dict[str, Any] = {
        "project_id": "org-xyz",
        "timestamp": draw(TIMES),
        "level": draw(st.sampled_from(["info", "WARN", " error ", "nonsense"])),
        "service": "api",
        "message": "hello",
    }
    for name in draw(st.sets(st.sampled_from(sorted(record)), max_size=2)):
        if draw(st.booleans()):
            del record[name]
        else:
            record[name] = draw(FIELD_VALUES)
    if draw(st.booleans()):
        record["timestamp"] = draw(st.one_of(TIMES, SCALARS))
    choice = draw(st.integers(0, 6))
    if choice == 1:
        record["metadata"] = draw(st.dictionaries(st.text(max_size=4), JSON, max_size=6))
    elif choice == 2:
        record["metadata"] = draw(JSON)
    elif choice == 3:
        record["metadata"] = {"user_id": 123, "http": {"status": 200, "tags": ["a", 1, None]}}
    elif choice == 4:  # the shape the plain fast path takes: scalars and one level of objects
        keys = st.text(max_size=3)
        flat = st.dictionaries(keys, st.one_of(SCALARS, st.lists(SCALARS, max_size=2)), max_size=3)
        record["metadata"] = draw(st.dictionaries(keys, st.one_of(SCALARS, flat), max_size=5))
    if draw(st.integers(0, 5)) == 0:
        record[draw(st.text(max_size=4))] = draw(JSON)  # an undocumented field (or an override)
    return record


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 20))
    if kind == 0:
        return draw(st.binary(max_size=40))
    if kind == 1:
        return orjson.dumps(draw(JSON))
    if kind == 2:
        return orjson.dumps({"logs": draw(JSON)})
    return orjson.dumps({"logs": draw(st.lists(records(), min_size=0, max_size=6))})


def outcome(fn: Any, body: bytes) -> tuple[Any, ...]:
    try:
        parsed: Parsed = fn(body, make_ctx(path="/v1/drain"))
    except ParseError as exc:
        return ("error", exc.code, exc.status, exc.message, exc.details)
    return ("ok", len(parsed.rows), parsed.rejected, parsed.table)


def test_astralog_registered() -> None:
    """The gateway finds AstraLog's fast path in the registry, next to the parser."""
    assert VALIDATORS["astralog"] is astralog_validate
    assert set(VALIDATORS) <= set(PARSERS)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
@example(b"")
@example(b'{"logs": []}')
@example(orjson.dumps({"logs": [{"project_id": "p"}]}))
def test_astralog_validate_answers_as_parse(body: bytes) -> None:
    """validate raises iff parse raises, with the same error; otherwise both count the same logs."""
    assert outcome(astralog_validate, body) == outcome(PARSERS["astralog"], body)


KEYS = st.text(max_size=3)
FLAT = st.dictionaries(KEYS, st.one_of(SCALARS, st.lists(SCALARS, max_size=2)), max_size=3)


@st.composite
def plain_records(draw: st.DrawFn) -> dict[str, Any]:
    """Valid records whose metadata has the shape the fast path takes (and its neighbours)."""
    record = {
        "project_id": draw(st.text(min_size=1, max_size=3)),
        "timestamp": draw(
            st.sampled_from(["2024-05-31T15:30:45Z", "2024-05-31 15:30:45.5+02:00", 1717169445])
        ),
        "level": draw(st.sampled_from(["info", "WARN", " error ", "nonsense"])),
        "service": "api",
        "message": draw(st.text(min_size=1, max_size=3)),
    }
    if draw(st.booleans()):
        record["metadata"] = draw(st.dictionaries(KEYS, st.one_of(SCALARS, FLAT, JSON), max_size=5))
    return record


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(plain_records(), records()), min_size=1, max_size=4))
def test_astralog_rows_as_general_path(logs: list[Any]) -> None:
    """parse's fast path for plain records builds the very rows the general `_row` builds."""
    body = orjson.dumps({"logs": logs})
    try:
        expected = [astralog._row(i, item) for i, item in enumerate(logs)]
    except ParseError as exc:
        with pytest.raises(ParseError) as err:
            astralog.parse(body, make_ctx())
        assert (exc.code, exc.message) == (err.value.code, err.value.message)
    else:
        assert astralog.parse(body, make_ctx()).rows == expected


@pytest.mark.parametrize(
    "logs",
    [
        [astralog_record()] * 3,
        [astralog_record(), astralog_record(timestamp="2100-01-02T00:00:00Z")],
        [astralog_record(metadata={"k": deep_object(40)})],
        [astralog_record(metadata={str(i): i for i in range(MAX_ATTRIBUTE_KEYS)})],
        [astralog_record(metadata={str(i): i for i in range(MAX_ATTRIBUTE_KEYS + 1)})],
        [
            astralog_record(
                metadata={"a": {str(i): i for i in range(600)}, "b": {str(i): i for i in range(600)}}
            )
        ],
        [astralog_record(metadata={str(i): i for i in range(MAX_ATTRIBUTE_KEYS)}, extra=1)],
        [astralog_record(metadata={"a": [[[[1]]]], "b": {"c": {"d": 1}}})],
        [astralog_record(timestamp=1717169445123), astralog_record(level="")],
        [astralog_record(), 7],
    ],
)
def test_astralog_edges(logs: list[Any]) -> None:
    """The limits (depth, attribute count, time range) and numeric times give parse's answer."""
    body = orjson.dumps({"logs": logs})
    assert outcome(astralog_validate, body) == outcome(PARSERS["astralog"], body)


def test_astralog_seed_shape_is_counted() -> None:
    """The benchmark's shape (nested `http` object, ISO times with ms) is accepted and counted."""
    logs = [
        astralog_record(
            timestamp="2026-11-24T00:30:26.123Z",
            metadata={"user_id": 7, "ip": "10.0.0.1", "http": {"status": 200, "path": "/x"}, "ms": 1.5},
        )
    ] * 4
    assert outcome(astralog_validate, orjson.dumps({"logs": logs})) == ("ok", 4, [], "logs")


def reference_ns(text: str) -> int | None:
    """parse_timestamp's ISO branch as it was before its integer fast path (via timestamp())."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ns = (int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond) * 1000
    return ns if 0 <= ns <= 4_102_444_800 * 10**9 else None


@settings(max_examples=400, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.one_of(
        st.none(),
        st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)),
    ),
    st.sampled_from(["", "Z", " "]),
)
def test_iso_timestamps_as_before(when: datetime, offset: timedelta | None, suffix: str) -> None:
    """parse_timestamp's integer fast path gives the ns the timestamp() formula gave, offsets included."""
    if offset is not None:
        text = when.replace(tzinfo=timezone(offset)).isoformat()
    else:
        text = when.isoformat() + suffix
    assert parse_timestamp(text) == reference_ns(text)


_HEADS = st.one_of(
    st.sampled_from(
        [
            "2024-05-31T15:30:45",
            "2024-05-31 15:30:45",
            "1971-01-01T00:00:00",
            "1970-12-31T23:59:59",
            "2098-12-31T23:59:59",
            "2099-01-01T00:00:00",
            "2024-13-31T15:30:45",
            "2024-02-30T15:30:45",
            "2024-05-31T24:00:00",
            " 2024-05-31T15:30:4",
            "2024-05-31t15:30:45",
            "\uff12024-05-31T15:30:45",
            "2024-05-31T15:30",
            "2024-05-31",
        ]
    ),
    st.text(alphabet="0123456789-: T", min_size=17, max_size=21),
)
_TAILS = st.one_of(
    st.sampled_from(
        [
            "",
            "Z",
            ".5",
            ".123Z",
            ".123456789Z",
            ".1234567890Z",
            "+02:00",
            "-23:59",
            "+24:00",
            "+02:60",
            "z",
            " ",
            "Z ",
            ".",
            ".Z",
            "+0200",
            "+02:00:00",
            ".250+02:00",
            ",5Z",
            "\n",
        ]
    ),
    st.text(alphabet="0123456789.:+-Z ", max_size=12),
)


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(
        st.tuples(_HEADS, _TAILS).map("".join),
        st.builds(
            lambda when, offset: when.replace(
                tzinfo=None if offset is None else timezone(offset)
            ).isoformat(),
            st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2110, 1, 1)),
            st.one_of(
                st.none(), st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
            ),
        ),
    )
)
@example("2024-05-31T15:30:45+24:00")  # a shape that fromisoformat refuses, in the tail
@example("2024-02-30T15:30:45Z")  # and in the head
@example("2024-05-31T15:30:45.1234567890Z")
def test_cached_time_verdicts_are_the_shape_and_time_checks(text: str) -> None:
    """`time_ready` judges each half of a time once; its verdict is the uncached checks' on the whole."""
    assert astralog_store.time_ready(text) == (astralog_store._iso_shape(text) and iso_time(text)), text


def record_by_record(body: bytes) -> int | None:
    """What `body_ready` stands in for: orjson's reading, then `ready` on every record."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    logs = doc.get("logs") if isinstance(doc, dict) else None
    if not isinstance(logs, list) or not logs:
        return None
    return len(logs) if all(astralog_store.ready(item) for item in logs) else None


def with_metadata(metadata: Any) -> bytes:
    return json.dumps({"logs": [astralog_record(metadata=metadata)]}).encode()  # ints past 64 bits too


# Where two JSON readers could part ways, spelled by hand: numbers at the edges of int64, of
# what orjson reads as an int, and of `_float_ready`; repeated keys; escapes orjson refuses; key
# counts at the typed limits.
WHOLE_BODY_EDGES = [
    with_metadata({"n": 2**63 - 1}),
    with_metadata({"n": 2**63}),
    with_metadata({"n": 2**64 - 1}),
    with_metadata({"n": -(2**63)}),
    with_metadata({"n": -(2**63) - 1}),
    with_metadata({"n": 1e-4, "m": 9.99e-5}),
    with_metadata({"n": -0.0}),
    with_metadata({"n": 999999999999999.9, "m": 1e15}),
    with_metadata({"": 1}),
    with_metadata({"a": {"": 1}}),
    with_metadata({f"k{i}": i for i in range(22)}),
    with_metadata({f"k{i}": i for i in range(23)}),
    with_metadata({"a": {f"k{i}": i for i in range(21)}}),
    with_metadata({"a": {f"k{i}": i for i in range(22)}}),
    with_metadata({"a": [1]}),
    with_metadata({"a": {"b": {"c": 1}}}),
    with_metadata("text"),
    with_metadata({}),
    with_metadata(None),
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","metadata":{"n":123456789012345678901234567890}}]}',
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","metadata":{"n":1e-5,"m":1E400}}]}',
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","metadata":{"a":1,"a":{"b":2}}}]}',
    b'{"logs":[{"project_id":"p","project_id":"","timestamp":"2024-05-31T15:30:45Z","level":"info",'
    b'"service":"s","message":"m"}]}',
    b'{"logs":[{"project_id":"","project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info",'
    b'"service":"s","message":"m"}]}',
    b'{"logs":[],"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info",'
    b'"service":"s","message":"m"}]}',
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"\\ud800"}]}',
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"\xff"}]}',
    b'\xef\xbb\xbf{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info",'
    b'"service":"s","message":"m"}]}',
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":" info","service":"s",'
    b'"message":"m"}]}',
    b'{"logs":[{"project_id":"p","timestamp":1717169445,"level":"info","service":"s","message":"m"}]}',
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m","extra":1}]}',
    b'{"other":1,"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info",'
    b'"service":"s","message":"m"}]}',
    # Values msgspec would only skip in a field it does not know, where orjson refuses the body.
    b'{"x":"\xff","logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info",'
    b'"service":"s","message":"m"}]}',
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m"}],"x":[1e400]}',
    b'{"\xc0\xaf":1,"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info",'
    b'"service":"s","message":"m"}]}',
    b'{"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m"},]}',
    b'{"x":' + b"[" * 5000 + b"]" * 5000 + b',"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z",'
    b'"level":"info","service":"s","message":"m"}]}',
    b' {"logs":[{"project_id":"p","timestamp":"2024-05-31T15:30:45Z","level":"info","service":"s",'
    b'"message":"m"}]}\n',
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(bodies(), store_parse_bodies(), quick_bodies()))
@example(b"")
def test_the_whole_body_check_agrees_with_the_record_checks(body: bytes) -> None:
    """`body_ready` (typed decoding) counts a body only when orjson + `ready` on each record would."""
    fast = astralog_store.body_ready(body)
    assert fast is None or fast == record_by_record(body), body


@pytest.mark.parametrize("body", WHOLE_BODY_EDGES)
def test_the_whole_body_check_at_the_edges(body: bytes) -> None:
    fast = astralog_store.body_ready(body)
    assert fast is None or fast == record_by_record(body), body


def test_the_usual_bodies_are_checked_whole() -> None:
    """The fast way is taken where it matters: the bench's bodies and the plain edges above."""
    usual = [
        with_metadata({"n": 2**63 - 1, "a": {"": 1}, "f": 1e-4}),
        with_metadata({f"k{i}": i for i in range(22)}),
        WHOLE_BODY_EDGES[-1],
        *payloads.bodies(payloads.DIALECTS["astralog"], 500, 3),
    ]
    assert [astralog_store.body_ready(body) for body in usual] == [1, 1, 1, 500, 500, 500]


def test_a_long_time_is_refused_without_being_cached() -> None:
    """A client's megabyte 'timestamp' is judged without staying in the gateway's memory."""
    before = len(astralog_store._TAILS)
    junk = "2024-05-31T15:30:45" + "9" * 1_000_000
    assert not astralog_store.time_ready(junk)
    assert not (astralog_store._iso_shape(junk) and iso_time(junk))
    assert len(astralog_store._TAILS) <= before and junk[19:] not in astralog_store._TAILS
    longest = "2024-05-31T15:30:45.123456789+05:30"
    assert astralog_store.time_ready(longest)  # the longest text the shape takes still passes
