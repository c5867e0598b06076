"""Test bodies: one valid AstraLog record and `/v1/drain` bodies of such records (fields set per
test), and any body compressed as a `Content-Encoding` names it."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from typing import Any

import cramjam
import lz4.frame
import orjson
import zstandard


def astralog_record(**fields: Any) -> dict[str, Any]:
    """A record every AstraLog parser path accepts, with `fields` set or replaced."""
    return {
        "project_id": "p",
        "timestamp": "2024-05-31T15:30:45Z",
        "level": "info",
        "service": "s",
        "message": "m",
        **fields,
    }


def drain_body(messages: Iterable[str], **fields: Any) -> bytes:
    """One record per message; `fields` apply to every record (and win over the message)."""
    return orjson.dumps({"logs": [{**astralog_record(message=m), **fields} for m in messages]})


def compress(body: bytes, encoding: str, raw_deflate: bool = False) -> bytes:
    """`body` as a client sends it with `Content-Encoding: encoding` (the OTel Collector's values:
    snappy framed, lz4 as frames; `deflate` raw when asked); unchanged for any other name."""
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(body)
    if encoding in ("deflate", "zlib"):
        if raw_deflate:
            c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            return c.compress(body) + c.flush()
        return zlib.compress(body)
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(body)
    if encoding == "snappy":
        return bytes(cramjam.snappy.compress(body))
    if encoding == "lz4":
        return lz4.frame.compress(body)
    return body
