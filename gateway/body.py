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

import cramjam
import lz4.frame
import zstandard
from aiohttp import web

_CHUNK = 64 * 1024
ENCODINGS = ("gzip", "deflate", "zlib", "zstd", "snappy", "lz4")  # besides none
# Snappy's framing format: a stream identifier, then chunks of (type, 3-byte little-endian
# length, data); a data chunk holds a 4-byte checksum and at most 64 KiB once decoded.
_SNAPPY_COMPRESSED, _SNAPPY_PLAIN = 0x00, 0x01
_SNAPPY_CHUNK_MAX = 65536


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
        if encoding in ("deflate", "zlib"):  # the OTel Collector names its zlib streams either way
            # RFC 9110 deflate is zlib-wrapped, but many clients send raw deflate: accept both.
            try:
                return _zlib(raw, zlib.MAX_WBITS, limit, prefix)
            except zlib.error:
                return _zlib(raw, -zlib.MAX_WBITS, limit, prefix)
        if encoding == "zstd":
            return _zstd(raw, limit, prefix)
        if encoding == "snappy":
            return _snappy(raw, limit, prefix)
        if encoding == "lz4":
            return _lz4(raw, limit, prefix)
    except (zlib.error, zstandard.ZstdError, cramjam.DecompressionError, RuntimeError) as exc:
        # RuntimeError: how python-lz4 reports a broken frame.
        raise BodyError(400, "bad_encoding", f"request body is not valid {encoding}: {exc}") from None
    raise BodyError(
        415,
        "unsupported_encoding",
        f"Content-Encoding {encoding!r} is not supported; use {', '.join(ENCODINGS)} or none",
    )


def _too_big(limit: int) -> BodyError:
    return BodyError(413, "body_too_large", f"decompressed request body exceeds the limit of {limit} bytes")


def _past_cap(out: bytearray, limit: int, prefix: bool) -> bytes | None:
    """None while `out` is within `limit`; past it, its first `limit` bytes with `prefix`,
    else the 413. Every decoder checks after each step, so none holds more than a step over."""
    if len(out) <= limit:
        return None
    if prefix:
        return bytes(out[:limit])
    raise _too_big(limit)


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
            if (done := _past_cap(out, limit, prefix)) is not None:
                return done
        data = d.unused_data
        if not members or not data.strip(b"\0"):  # some writers pad the last member with zeros
            return bytes(out)


def _zstd(raw: bytes, limit: int, prefix: bool) -> bytes:
    # A stream reader never trusts the frame header's content size: output grows chunk by chunk.
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    out = bytearray()
    while chunk := reader.read(_CHUNK):
        out += chunk
        if (done := _past_cap(out, limit, prefix)) is not None:
            return done
    return bytes(out)


def _snappy(raw: bytes, limit: int, prefix: bool) -> bytes:
    """Snappy's framing format (what the OTel Collector and Go's `snappy.NewBufferedWriter`
    send). Each chunk states its size, so the whole output is sized from the chunk headers
    before anything is inflated; cramjam then decodes (and checks) the chunks that fit."""
    size, end = 0, 0
    while end < len(raw):
        if end + 4 > len(raw):
            raise cramjam.DecompressionError("truncated chunk header")
        kind, length = raw[end], int.from_bytes(raw[end + 1 : end + 4], "little")
        data = end + 4
        if kind == _SNAPPY_COMPRESSED and length >= 4:
            grows = cramjam.snappy.decompress_raw_len(raw[data + 4 : data + length])
        elif kind == _SNAPPY_PLAIN and length >= 4:
            grows = length - 4
        else:
            grows = 0  # the stream identifier, padding, skippable chunks; cramjam judges the rest
        if grows > _SNAPPY_CHUNK_MAX:
            raise cramjam.DecompressionError(f"a chunk claims {grows} bytes, over the format's 64 KiB")
        if size + grows > limit:
            if not prefix:
                raise _too_big(limit)
            return bytes(cramjam.snappy.decompress(raw[: data + length]))[:limit]
        size, end = size + grows, data + length
    return bytes(cramjam.snappy.decompress(raw))


def _lz4(raw: bytes, limit: int, prefix: bool) -> bytes:
    """The LZ4 frame format (the OTel Collector's `lz4`), inflated _CHUNK bytes at a time;
    frames back to back are read in turn, all under the one limit."""
    out = bytearray()
    data = raw
    while True:
        d = lz4.frame.LZ4FrameDecompressor()
        while not d.eof:
            chunk = d.decompress(data, max_length=_CHUNK)
            data = b""  # the decompressor keeps what it has not used yet
            if not chunk and d.needs_input and not d.eof:  # an empty frame ends at once
                raise RuntimeError("truncated frame")
            out += chunk
            if (done := _past_cap(out, limit, prefix)) is not None:
                return done
        data = d.unused_data
        if not data:
            return bytes(out)
