"""The envelope: one Kafka message per accepted HTTP request.

It carries the request's rows, normalized once by the gateway's parser and encoded by
`schemas.rows` (a JSON array the engine reads as it is), and the request facts the
worker cannot recover later. Framing is binary so the rows are never re-encoded:

    b"MR" | version (1 byte) | meta length (4 bytes, big endian) | meta (JSON) | body

Version 3 (written today): the body is the rows as one zstd frame at level 1, compressed
here rather than by the Kafka producer, whose codecs run at the broker's default levels
(zstd 3, lz4 9) and which the broker then decompresses again to validate every batch
(docs/performance.md has the figures). Version 2 carried the same rows uncompressed, and
version 1 the raw request body (parsed again by the worker); the worker still reads both,
so a topic or a dead letter written before an upgrade is stored the same way. Decoded, an
envelope's body is always plain: the rows (versions 2 and 3) or the request body (1).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Final

import orjson
import zstandard

from schemas.record import LOGS_TABLE

MAGIC = b"MR"
VERSION = 3
PLAIN_ROWS_VERSION = 2  # the rows uncompressed
RAW_BODY_VERSION = 1  # `body` is the request body as received; `table` and `rows` unset
_VERSIONS = (RAW_BODY_VERSION, PLAIN_ROWS_VERSION, VERSION)
_HEADER = len(MAGIC) + 1 + 4
# Level 1 compresses the rows as well as level 3 here, for two thirds of the CPU.
LEVEL = 1
# A guard against a corrupt or foreign frame claiming a huge size: far above the rows of
# any request the gateway takes (MILLRACE_MAX_DECOMPRESSED_BYTES of body, 20 MiB by default).
MAX_ROWS_BYTES = 1 << 30


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
    # The rows (`schemas.rows.encode`), always plain here: `encode` compresses them; the raw
    # request body (bytes) in version 1. Decoded, a version 3 envelope's rows are inflated from
    # the message (which stays compressed); a version 2 envelope's are a view of it.
    body: bytes | memoryview
    query: dict[str, str] = field(default_factory=dict)
    table: str = LOGS_TABLE  # where the rows go
    rows: int = 0  # how many the body holds
    version: int = VERSION


# The metadata's fields, in order: `dataclasses.asdict` would deep-copy them, ~12 µs a request.
_META: Final = tuple(f.name for f in fields(Envelope) if f.name != "body")


def encode(envelope: Envelope) -> bytes:
    raw = orjson.dumps({name: getattr(envelope, name) for name in _META})
    body = envelope.body
    if envelope.version == VERSION:
        body = _CODECS.compressor.compress(body)
    return b"".join((MAGIC, bytes((envelope.version,)), len(raw).to_bytes(4, "big"), raw, body))


def decode(data: bytes) -> Envelope:
    if len(data) < _HEADER or data[:2] != MAGIC:
        raise EnvelopeError("not a Millrace envelope (bad magic)")
    version = data[2]
    if version not in _VERSIONS:
        raise EnvelopeError(
            f"envelope version {version} is not supported (this build reads {', '.join(map(str, _VERSIONS))})"
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
    except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
        raise EnvelopeError(f"envelope metadata is unreadable: {exc}") from None
    body: bytes | memoryview
    if version == RAW_BODY_VERSION:
        body = data[end:]
    elif version == PLAIN_ROWS_VERSION:
        body = memoryview(data)[end:]
    else:
        body = _decompressed(memoryview(data)[end:])
    try:
        return Envelope(body=body, **{**meta, "version": version})
    except TypeError as exc:
        raise EnvelopeError(f"envelope metadata is unreadable: {exc}") from None


class _Codecs(threading.local):
    """zstd contexts are reused (cheaper than one per call) but not shared between threads."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()


_CODECS = _Codecs()


def _decompressed(frame: memoryview) -> bytes:
    try:
        size = zstandard.frame_content_size(frame)
        if size < 0 or size > MAX_ROWS_BYTES:  # -1: a frame that does not state its size
            raise EnvelopeError(f"the envelope's rows state no size or too large a one ({size} bytes)")
        return _CODECS.decompressor.decompress(frame)  # exactly the size it states
    except zstandard.ZstdError as exc:
        raise EnvelopeError(f"the envelope's rows are not a readable zstd frame: {exc}") from None
