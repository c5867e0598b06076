"""The envelope's framing: what the gateway writes (version 3, rows as one zstd frame) and
what the worker still reads (versions 1 and 2)."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
import zstandard

from schemas import envelope as envelope_codec
from schemas import rows
from schemas.envelope import (
    PLAIN_ROWS_VERSION,
    RAW_BODY_VERSION,
    VERSION,
    Envelope,
    EnvelopeError,
    decode,
    encode,
)

ROWS = [{"message": f"line {i}", "level": "info", "attributes": {"k": "v" * 40}} for i in range(200)]
PLAIN = rows.encode(ROWS)
ENVELOPE = Envelope(
    request_id="req-1",
    project="p",
    key_id="k",
    dialect="astralog",
    path="/v1/drain",
    content_type="application/json",
    user_agent="curl/8",
    client_ip="198.51.100.7",
    received_at_ns=1_700_000_000_000_000_000,
    body=PLAIN,
    query={"a": "b"},
    rows=len(ROWS),
)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _frame_of(message: bytes) -> bytes:
    meta_size = int.from_bytes(message[3:7], "big")
    return message[7 + meta_size :]


def test_the_gateway_writes_version_3_with_the_rows_as_one_zstd_frame() -> None:
    message = encode(ENVELOPE)
    assert message[:3] == b"MR" + bytes((VERSION,)) and VERSION == 3
    frame = _frame_of(message)
    assert frame[:4] == ZSTD_MAGIC and len(frame) * 5 < len(PLAIN)
    assert zstandard.frame_content_size(frame) == len(PLAIN)  # the size is stated, so it is bounded
    decoded = decode(message)
    assert bytes(decoded.body) == PLAIN and orjson.loads(decoded.body) == ROWS
    assert decoded == dataclasses.replace(ENVELOPE, body=decoded.body)


@pytest.mark.parametrize("version", [RAW_BODY_VERSION, PLAIN_ROWS_VERSION])
def test_older_versions_still_decode_with_their_body_as_written(version: int) -> None:
    message = encode(dataclasses.replace(ENVELOPE, version=version))
    assert _frame_of(message) == PLAIN  # written as they were: nothing compressed
    decoded = decode(message)
    assert bytes(decoded.body) == PLAIN and decoded.version == version


def _with_frame(frame: bytes) -> bytes:
    message = encode(ENVELOPE)
    return message[: len(message) - len(_frame_of(message))] + frame


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"not zstd at all", "not a readable zstd frame"),
        (zstandard.ZstdCompressor(write_content_size=False).compress(PLAIN), "no size"),
        (zstandard.ZstdCompressor().compress(PLAIN)[:-9], "not a readable zstd frame"),
    ],
    ids=["garbage", "unsized", "truncated"],
)
def test_an_unreadable_frame_is_an_envelope_error(frame: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        decode(_with_frame(frame))


def test_a_frame_claiming_more_than_the_bound_is_refused_before_it_is_inflated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(envelope_codec, "MAX_ROWS_BYTES", len(PLAIN) - 1)
    with pytest.raises(EnvelopeError, match="too large"):
        decode(encode(ENVELOPE))


def test_a_version_this_build_does_not_know_names_the_ones_it_reads() -> None:
    message = encode(ENVELOPE)
    with pytest.raises(EnvelopeError, match=r"version 9 is not supported \(this build reads 1, 2, 3\)"):
        decode(message[:2] + b"\x09" + message[3:])
