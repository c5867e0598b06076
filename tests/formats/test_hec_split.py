"""Splunk HEC's concatenated events as the fast split reads them: the cases where `}{` or a
number could mislead it must give what the event-by-event walk gives."""

from __future__ import annotations

import pytest

from formats.base import Rejection
from formats.hec import INVALID_FORMAT, parse_event
from tests.formats.conftest import make_ctx

CTX = make_ctx("")


@pytest.mark.parametrize("gap", [b"", b"\n", b" \r\n\t"])
@pytest.mark.parametrize("joints", [1, 50])  # a few misses, and more than the split tries
def test_a_joint_inside_a_string_is_not_where_an_event_ends(gap: bytes, joints: int) -> None:
    tricky = b'{"event": "a}{b", "fields": {"k": "}  {"}}'  # a joint with spaces, inside a string
    body = tricky + gap + b'{"event": "' + b"}{" * joints + b'"}' + gap + b'{"event": "last"}'
    parsed = parse_event(body, CTX)
    assert [r["message"] for r in parsed.rows] == ["a}{b", "}{" * joints, "last"]
    assert parsed.rows[0]["attributes"] == {"k": "}  {"}
    assert parsed.rejected == []


def test_an_integer_past_64_bits_keeps_every_digit() -> None:
    body = b'{"event": {"message": "m", "n": 123456789012345678901234567890}}{"event": "b"}'
    parsed = parse_event(body, CTX)
    assert parsed.rows[0]["attributes"] == {"n": "123456789012345678901234567890"}
    assert [r["message"] for r in parsed.rows] == ["m", "b"]


@pytest.mark.parametrize(
    ("tail", "kept"),
    [
        (b'{"event": "b"} junk', ["a", "b"]),  # the first unreadable event stops the request
        (b'{"event": "b"}, {"event": "c"}', ["a", "b"]),
        (b'{"event": NaN}', ["a"]),
        (b'{"nothing": 1}{"event": "c"}', ["a"]),
    ],
)
def test_a_body_the_split_cannot_take_gets_hecs_answer_all_the_same(tail: bytes, kept: list[str]) -> None:
    parsed = parse_event(b'{"event": "a"}' + tail, CTX)
    assert [r["message"] for r in parsed.rows] == kept
    assert [r.index for r in parsed.rejected] == [len(kept)]
    assert isinstance(parsed.rejected[0], Rejection) and parsed.rejected[0].reason in (
        INVALID_FORMAT,
        "Event field is required",
    )
