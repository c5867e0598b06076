"""The envelope: one Kafka message per accepted HTTP request.

It carries the request's rows, normalized once by the gateway's parser and encoded by
`schemas.rows` (a JSON array the engine reads as it is), and the request facts the
worker cannot recover later. Framing is binary so the rows are never re-encoded:

    b"MR" | version (1 byte) | meta length (4 bytes, big endian) | meta (JSON) | body

Version 1 envelopes carried the raw request body instead (parsed again by the worker);
the worker still reads them, so a topic or a dead letter written before the upgrade
is stored the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson

from schemas.record import LOGS_TABLE

MAGIC = b"MR"
VERSION = 2
RAW_BODY_VERSION = 1  # `body` is the request body as received; `table` and `rows` unset
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
    # The rows (`schemas.rows.encode`); the raw request body (bytes) in version 1. Decoded, a
    # version 2 envelope's rows are a view of the message itself: the worker's batch then holds
    # each message once, not once as read and once more as its rows.
    body: bytes | memoryview
    query: dict[str, str] = field(default_factory=dict)
    table: str = LOGS_TABLE  # where the rows go
    rows: int = 0  # how many the body holds
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
    if version not in (RAW_BODY_VERSION, VERSION):
        raise EnvelopeError(
            f"envelope version {version} is not supported (this build reads {RAW_BODY_VERSION} and {VERSION})"
        )
    size = int.from_bytes(data[3:_HEADER], "big")
    end = _HEADER + size
    if end > len(data):
        raise EnvelopeError("envelope metadata is truncated")
    try:
        meta = orjson.loads(data[_HEADER:end])
        if version == RAW_BODY_VERSION:  # its own flags of the store-parsed path are gone
            meta.pop("store_parses", None)
            meta.pop("records", None)
        body = data[end:] if version == RAW_BODY_VERSION else memoryview(data)[end:]
        return Envelope(body=body, **{**meta, "version": version})
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise EnvelopeError(f"envelope metadata is unreadable: {exc}") from None
