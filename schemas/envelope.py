"""The envelope: one Kafka message per accepted HTTP request.

It carries the body exactly as received (after decompression) and the request facts
the worker cannot recover later. Framing is binary so the body is never re-encoded:

    b"MR" | version (1 byte) | meta length (4 bytes, big endian) | meta (JSON) | body
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson

MAGIC = b"MR"
VERSION = 1
_HEADER = len(MAGIC) + 1 + 4


class EnvelopeError(ValueError):
    """The bytes are not an envelope this version of Millrace understands."""


@dataclass(frozen=True, slots=True)
class Envelope:
    request_id: str
    project: str
    key_id: str
    dialect: str
    path: str
    content_type: str
    user_agent: str
    client_ip: str
    received_at_ns: int
    body: bytes
    query: dict[str, str] = field(default_factory=dict)
    # The gateway found every record of the body in a shape the store parses itself
    # (formats/astralog_store.py); `records` is then their count.
    store_parses: bool = False
    records: int = 0
    version: int = VERSION


def encode(envelope: Envelope) -> bytes:
    meta = asdict(envelope)
    body = meta.pop("body")
    raw = orjson.dumps(meta)
    return b"".join((MAGIC, bytes((envelope.version,)), len(raw).to_bytes(4, "big"), raw, body))


def decode(data: bytes) -> Envelope:
    if len(data) < _HEADER or data[:2] != MAGIC:
        raise EnvelopeError("not a Millrace envelope (bad magic)")
    version = data[2]
    if version != VERSION:
        raise EnvelopeError(f"envelope version {version} is not supported (this build reads {VERSION})")
    size = int.from_bytes(data[3:_HEADER], "big")
    end = _HEADER + size
    if end > len(data):
        raise EnvelopeError("envelope metadata is truncated")
    try:
        meta = orjson.loads(data[_HEADER:end])
        return Envelope(body=data[end:], **meta)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise EnvelopeError(f"envelope metadata is unreadable: {exc}") from None
