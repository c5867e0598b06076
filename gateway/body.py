"""Reading a request body within limits: size before and after decompression, and time.

aiohttp's own decompression is switched off (see `gateway.server`) so both caps are
ours: the wire size is checked as bytes arrive, and decompression streams with the
output capped, stopping the moment it passes the second cap, so a decompression bomb
(1 GB of zeros is about 1 MB of gzip) costs at most the caps in memory, never its size.
A client that trickles its body is cut off when `timeout_s` has passed (408).
"""

from __future__ import annotations

import asyncio
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


async def read_body(
    request: web.Request,
    max_wire: int,
    max_plain: int,
    timeout_s: float | None = None,
    prefix: bool = False,
) -> bytes:
    """The decoded body; with `prefix`, its first `max_plain` bytes instead of a 413 past them."""
    length = request.content_length
    if length is not None and length > max_wire:
        raise BodyError(413, "body_too_large", f"request body is {length} bytes; the limit is {max_wire}")
    try:
        async with asyncio.timeout(timeout_s):
            raw = await _read_capped(request, max_wire)
    except TimeoutError:
        # aiohttp answers, then closes the connection since the body was not read to its end.
        raise BodyError(
            408, "body_timeout", f"the request body did not arrive within {timeout_s:g} seconds"
        ) from None
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        if prefix:
            return raw[:max_plain]
        if len(raw) > max_plain:
            raise BodyError(413, "body_too_large", f"request body exceeds the limit of {max_plain} bytes")
        return raw
    return decompress(raw, encoding, max_plain, prefix)


async def _read_capped(request: web.Request, max_wire: int) -> bytes:
    buf = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        if len(buf) + len(chunk) > max_wire:
            raise BodyError(413, "body_too_large", f"request body exceeds the limit of {max_wire} bytes")
        buf += chunk
    return bytes(buf)


def decompress(raw: bytes, encoding: str, limit: int, prefix: bool = False) -> bytes:
    """`raw` decoded per Content-Encoding; BodyError 413 as soon as the output passes `limit`
    (with `prefix`, the first `limit` bytes instead)."""
    try:
        if encoding in ("gzip", "x-gzip"):
            return _zlib(raw, zlib.MAX_WBITS | 16, limit, prefix, members=True)
        if encoding == "deflate":
            # RFC 9110 deflate is zlib-wrapped, but many clients send raw deflate: accept both.
            try:
                return _zlib(raw, zlib.MAX_WBITS, limit, prefix)
            except zlib.error:
                return _zlib(raw, -zlib.MAX_WBITS, limit, prefix)
        if encoding == "zstd":
            return _zstd(raw, limit, prefix)
    except (zlib.error, zstandard.ZstdError) as exc:
        raise BodyError(400, "bad_encoding", f"request body is not valid {encoding}: {exc}") from None
    raise BodyError(
        415,
        "unsupported_encoding",
        f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or zstd",
    )


def _too_big(limit: int) -> BodyError:
    return BodyError(413, "body_too_large", f"decompressed request body exceeds the limit of {limit} bytes")


def _zlib(raw: bytes, wbits: int, limit: int, prefix: bool, members: bool = False) -> bytes:
    """Inflate in steps of at most _CHUNK output bytes, so memory is the limit, not the bomb.

    gzip allows several members back to back (`cat a.gz b.gz`): each is inflated in
    turn, all under the one limit, so a body of many small bombs is refused as well.
    """
    out = bytearray()
    data = raw
    while True:
        d = zlib.decompressobj(wbits)
        while not d.eof:
            chunk = d.decompress(data, _CHUNK)
            data = d.unconsumed_tail
            if not chunk and not data and not d.eof:  # an empty member ends at once
                raise zlib.error("truncated stream")
            out += chunk
            if len(out) > limit:
                if prefix:
                    return bytes(out[:limit])
                raise _too_big(limit)
        data = d.unused_data
        if not members or not data.strip(b"\0"):  # some writers pad the last member with zeros
            return bytes(out)


def _zstd(raw: bytes, limit: int, prefix: bool) -> bytes:
    # A stream reader never trusts the frame header's content size: output grows chunk by chunk.
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    out = bytearray()
    while chunk := reader.read(_CHUNK):
        out += chunk
        if len(out) > limit:
            if prefix:
                return bytes(out[:limit])
            raise _too_big(limit)
    return bytes(out)
