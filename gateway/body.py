"""Reading a request body within limits, before and after decompression.

aiohttp's own decompression is switched off (see `gateway.server`) so both caps are
ours: the wire size is checked as bytes arrive, and decompression stops the moment
the output passes the second cap, so a decompression bomb costs bounded memory.
"""

from __future__ import annotations

import zlib

import zstandard
from aiohttp import web

_CHUNK = 64 * 1024


class BodyError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def read_body(request: web.Request, max_wire: int, max_plain: int) -> bytes:
    length = request.content_length
    if length is not None and length > max_wire:
        raise BodyError(413, "body_too_large", f"request body is {length} bytes; the limit is {max_wire}")
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > max_wire:
            raise BodyError(413, "body_too_large", f"request body exceeds the limit of {max_wire} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > max_plain:
            raise BodyError(413, "body_too_large", f"request body exceeds the limit of {max_plain} bytes")
        return raw
    return decompress(raw, encoding, max_plain)


def decompress(raw: bytes, encoding: str, limit: int) -> bytes:
    try:
        if encoding in ("gzip", "x-gzip"):
            return _zlib(raw, zlib.MAX_WBITS | 16, limit)
        if encoding == "deflate":
            # RFC 9110 deflate is zlib-wrapped, but many clients send raw deflate: accept both.
            try:
                return _zlib(raw, zlib.MAX_WBITS, limit)
            except zlib.error:
                return _zlib(raw, -zlib.MAX_WBITS, limit)
        if encoding == "zstd":
            return _zstd(raw, limit)
    except (zlib.error, zstandard.ZstdError) as exc:
        raise BodyError(400, "bad_encoding", f"request body is not valid {encoding}: {exc}") from None
    raise BodyError(
        415,
        "unsupported_encoding",
        f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or zstd",
    )


def _too_big(limit: int) -> BodyError:
    return BodyError(413, "body_too_large", f"decompressed request body exceeds the limit of {limit} bytes")


def _zlib(raw: bytes, wbits: int, limit: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(raw, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise _too_big(limit)
    out += d.flush()
    if len(out) > limit:
        raise _too_big(limit)
    if not d.eof:
        raise zlib.error("truncated stream")
    return out


def _zstd(raw: bytes, limit: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    parts, size = [], 0
    while chunk := reader.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_big(limit)
        parts.append(chunk)
    return b"".join(parts)
