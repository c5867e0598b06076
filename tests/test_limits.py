"""Limits: per-key rates answered 429 + Retry-After in each dialect's own format, body caps
before and after decompression (bombs refused in bounded memory), record caps, header caps,
and clients that trickle their headers or body cut off."""

from __future__ import annotations

import asyncio
import gzip
import struct
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import cramjam
import lz4.frame
import orjson
import pytest
import zstandard
from multidict import CIMultiDict

from formats import Parsed
from gateway.body import BodyError, decompress
from gateway.dialects.base import Problem
from gateway.limits import Limits, TokenBucket
from millrace import keys
from millrace.config import Settings
from millrace.keys import LIMIT_BURST_S, LIMIT_LOGS_PER_S, LIMIT_REQUESTS_PER_S, ApiKey
from ops import cli
from tests.bodies import drain_body
from tests.conftest import Gateway, Stack

pytestmark = pytest.mark.integration

GiB = 1 << 30
MiB = 1 << 20


# -- one minimal valid request per dialect, and how each spells a 429 -------------------------


@dataclass(frozen=True)
class Wire:
    path: str
    headers: Callable[[str], dict[str, str]]
    body: Callable[[str, int], bytes]
    ok: int
    is_rate_limited: Callable[[Any, str], bool]  # (error body, Retry-After) -> in this dialect's format


def _astralog(marker: str, n: int) -> bytes:
    return drain_body((f"{marker} #{i}" for i in range(n)), service="svc")


WIRES = {
    "astralog": Wire(
        "/v1/drain",
        lambda k: {"Authorization": k, "Content-Type": "application/json"},
        _astralog,
        200,
        lambda b, _: b["status"] == "error" and b["code"] == "rate_limited" and "rate" in b["error"],
    ),
    "tg2g": Wire(
        "/v1/logs",
        lambda k: {"X-TG2G-Api-Key": k, "Content-Type": "application/json"},
        lambda m, n: orjson.dumps({"source": "svc", "logs": [{"message": f"{m} #{i}"} for i in range(n)]}),
        202,
        lambda b, _: b["error"]["code"] == "rate_limited" and "rate" in b["error"]["message"],
    ),
    "dynatrace": Wire(
        "/api/v2/logs/ingest",
        lambda k: {"Authorization": f"Api-Token {k}", "Content-Type": "application/json; charset=utf-8"},
        lambda m, n: orjson.dumps([{"content": f"{m} #{i}"} for i in range(n)]),
        204,
        lambda b, _: b["error"]["code"] == 429 and "rate" in b["error"]["message"],
    ),
    "goodlogs": Wire(
        "/v1/logs",
        lambda k: {"Authorization": f"Bearer {k}", "Content-Type": "application/json"},
        lambda m, n: orjson.dumps(
            {"batch": [{"severity": "info", "message": f"{m} #{i}"} for i in range(n)]}
        ),
        202,
        lambda b, _: b["error"]["code"] == "RATE_LIMITED" and "rate" in b["error"]["message"],
    ),
    "timberlogs": Wire(
        "/v1/logs",
        lambda k: {"X-API-Key": k, "Content-Type": "application/json"},
        lambda m, n: orjson.dumps(
            {
                "logs": [
                    {"level": "info", "message": f"{m} #{i}", "source": "svc", "environment": "production"}
                    for i in range(n)
                ]
            }
        ),
        200,
        lambda b, retry: b == {"error": "Rate limit exceeded", "retryAfter": int(retry)},
    ),
}


async def post(
    stack: Stack, url: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any, CIMultiDict[str]]:
    async with stack.session.post(url + path, data=body, headers=headers) as resp:
        raw = await resp.read()
        json = resp.content_type == "application/json" and raw
        return resp.status, (orjson.loads(raw) if json else raw), CIMultiDict(resp.headers)


async def limited_key(stack: Stack, project: str, gateway: Gateway | None = None, **limits: float) -> str:
    _, token = await keys.create(stack.settings, project, frozenset(keys.ALL_SCOPES), limits=limits)
    await (gateway or stack).wait_for_key(token)
    return token


def stored_messages(stack: Stack, project: str) -> list[str]:
    return [m for (m,) in stack.query("SELECT message FROM logs WHERE project = {p:String}", p=project)]


# -- the token buckets, on a clock the test turns ------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key(**limits: float) -> ApiKey:
    return ApiKey("k" * 12, "p", frozenset(keys.ALL_SCOPES), "0" * 64, 0.0, limits=limits)


def _settings(**overrides: str) -> Settings:
    return Settings.from_env({"MILLRACE_HOME": "/tmp/unused", **overrides})


def _parsed(n: int) -> Parsed:
    return Parsed(rows=[{"message": str(i)} for i in range(n)])


def test_bucket_refills_at_its_rate_and_never_beyond_its_capacity() -> None:
    bucket = TokenBucket(rate=10, capacity=20, now=0)
    bucket.take(20)
    assert bucket.wait_for(5) == pytest.approx(0.5)
    bucket.refill(0.5)
    assert bucket.wait_for(5) == 0
    bucket.refill(1000)
    assert bucket.tokens == 20


def test_request_rate_from_settings_then_429_with_the_wait_until_a_token() -> None:
    clock = Clock()
    limits = Limits(_settings(MILLRACE_RATE_REQUESTS_PER_S="2", MILLRACE_RATE_BURST_S="1.5"), clock)
    key = _key()
    assert [limits.before_body(key) for _ in range(3)] == [None, None, None]  # 2 * 1.5 = 3 tokens
    refused = limits.before_body(key)
    assert refused is not None and (refused.status, refused.code, refused.retry_after) == (
        429,
        "rate_limited",
        1,
    )
    clock.now += 0.5  # one token back at 2/s
    assert limits.before_body(key) is None
    assert limits.before_body(key) is not None


def test_a_keys_own_limits_override_the_defaults_and_zero_means_unlimited() -> None:
    clock = Clock()
    limits = Limits(_settings(MILLRACE_RATE_REQUESTS_PER_S="0", MILLRACE_RATE_LOGS_PER_S="0"), clock)
    assert all(limits.before_body(_key()) is None for _ in range(10_000))
    assert limits.after_parse(_key(), _parsed(40_000)) is None

    strict = _key(**{LIMIT_REQUESTS_PER_S: 0.5, LIMIT_BURST_S: 4})
    assert [limits.before_body(strict) is None for _ in range(3)] == [True, True, False]
    refused = limits.before_body(strict)
    assert refused is not None and refused.retry_after == 2  # one token at 0.5/s

    # Under strict defaults, a key's own 0 lifts that limit for the key (not "use the default").
    tight = Limits(_settings(MILLRACE_RATE_REQUESTS_PER_S="1", MILLRACE_RATE_LOGS_PER_S="10"), clock)
    free = _key(**{LIMIT_REQUESTS_PER_S: 0, LIMIT_LOGS_PER_S: 0})
    assert all(tight.before_body(free) is None for _ in range(1_000))
    assert tight.after_parse(free, _parsed(40_000)) is None
    assert not all(tight.before_body(_key()) is None for _ in range(10))  # the default still holds


def test_records_bucket_counts_parsed_rows_and_an_oversized_batch_leaves_a_debt() -> None:
    clock = Clock()
    limits = Limits(_settings(MILLRACE_RATE_LOGS_PER_S="100", MILLRACE_RATE_BURST_S="1"), clock)
    key = _key()
    assert limits.after_parse(key, _parsed(60)) is None
    refused = limits.after_parse(key, _parsed(60))
    assert refused is not None and (refused.status, refused.retry_after) == (429, 1)
    clock.now += 10
    # 250 rows can never fit a 100-token bucket: let through when it is full, then repaid.
    assert limits.after_parse(key, _parsed(250)) is None
    refused = limits.before_body(key)  # the records bucket is empty: refused before the body
    assert refused is not None and refused.retry_after == 2  # 150 in debt + 1 at 100/s
    clock.now += 1.6
    assert limits.before_body(key) is None


def test_a_dialect_that_refuses_per_item_gets_the_part_that_fits_and_no_debt() -> None:
    clock = Clock()
    limits = Limits(_settings(MILLRACE_RATE_LOGS_PER_S="10", MILLRACE_RATE_BURST_S="1"), clock)
    key = _key()
    calls: list[tuple[int, int, int | None]] = []

    def split(parsed: Parsed, admitted: int, problem: Problem) -> Parsed:
        calls.append((admitted, problem.status, problem.retry_after))
        return Parsed(rows=parsed.rows[:admitted])

    assert limits.after_parse(key, _parsed(4), split) is None  # fits whole: untouched, 6 left
    part = limits.after_parse(key, _parsed(9), split)
    assert isinstance(part, Parsed) and [r["message"] for r in part.rows] == ["0", "1", "2", "3", "4", "5"]
    assert calls == [(6, 429, 1)]
    refused = limits.after_parse(key, _parsed(3), split)  # not one token: refused whole
    assert isinstance(refused, Problem) and refused.status == 429 and len(calls) == 1
    clock.now += 10
    part = limits.after_parse(key, _parsed(25), split)  # more than the bucket holds: its 10, no debt
    assert isinstance(part, Parsed) and len(part.rows) == 10
    clock.now += 0.1
    assert limits.before_body(key) is None  # one token back already


def test_record_cap_counts_rejected_records_too() -> None:
    limits = Limits(_settings(MILLRACE_MAX_RECORDS_PER_REQUEST="10"))
    assert limits.after_parse(_key(), _parsed(10)) is None
    parsed = Parsed(rows=[{}] * 6, rejected=[object()] * 5)  # type: ignore[list-item]
    refused = limits.after_parse(_key(), parsed)
    assert refused is not None and (refused.status, refused.code) == (413, "too_many_records")


def test_key_limits_are_validated_and_kept_on_the_record() -> None:
    record, _ = keys.new_key(
        "p", frozenset({keys.SCOPE_LOGS}), limits={LIMIT_LOGS_PER_S: 50, LIMIT_REQUESTS_PER_S: None}
    )
    assert record.limits == {LIMIT_LOGS_PER_S: 50.0}
    assert ApiKey.from_json(record.to_json()).limits == {LIMIT_LOGS_PER_S: 50.0}
    unlimited, _ = keys.new_key("p", frozenset({keys.SCOPE_LOGS}), limits={LIMIT_LOGS_PER_S: 0})
    assert ApiKey.from_json(unlimited.to_json()).limits == {LIMIT_LOGS_PER_S: 0.0}
    for bad in (
        {LIMIT_LOGS_PER_S: -1},
        {"bogus": 1},
        {LIMIT_BURST_S: float("nan")},
        {LIMIT_BURST_S: 0},
        {LIMIT_REQUESTS_PER_S: float("inf")},
    ):
        with pytest.raises(ValueError, match="limit"):
            keys.new_key("p", frozenset({keys.SCOPE_LOGS}), limits=bad)


def test_keys_create_takes_limit_flags(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.parser().parse_args(
        ["keys", "create", "--project", "cli-limits", "--requests-per-s", "3", "--logs-per-s", "500"]
    )
    assert args.fn(stack.settings, args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "rate limits: logs_per_s=500, requests_per_s=3" in lines
    record = asyncio.run(keys.load(stack.settings)).authenticate(lines[-1])
    assert record is not None and record.limits == {LIMIT_REQUESTS_PER_S: 3.0, LIMIT_LOGS_PER_S: 500.0}


# -- over HTTP: 429 in each dialect's format -----------------------------------------------------


@pytest.mark.parametrize("dialect", sorted(WIRES))
async def test_over_the_request_rate_is_429_with_retry_after_in_the_dialects_format(
    stack: Stack, dialect: str
) -> None:
    wire = WIRES[dialect]
    project = f"rate-{dialect}-{uuid.uuid4().hex[:6]}"
    # 0.01/s with 200 s of burst: two requests, then the third waits ~100 s (slow machines too).
    token = await limited_key(stack, project, **{LIMIT_REQUESTS_PER_S: 0.01, LIMIT_BURST_S: 200})
    answers = [
        await post(stack, stack.url, wire.path, wire.body(f"{project}-r{i}", 2), wire.headers(token))
        for i in range(3)
    ]

    assert [a[0] for a in answers] == [wire.ok, wire.ok, 429]
    _, body, headers = answers[2]
    assert 50 <= int(headers["Retry-After"]) <= 100
    assert wire.is_rate_limited(body, headers["Retry-After"]), body
    assert await stack.wait_rows(project, 4) == 4
    assert not [m for m in stored_messages(stack, project) if m.startswith(f"{project}-r2")]


async def test_over_the_log_rate_is_429_and_accepted_after_retry_after(stack: Stack) -> None:
    project = f"lograte-{uuid.uuid4().hex[:6]}"
    token = await limited_key(stack, project, **{LIMIT_LOGS_PER_S: 2, LIMIT_BURST_S: 5})  # 10 tokens
    wire = WIRES["astralog"]

    first = await post(stack, stack.url, wire.path, wire.body("first", 8), wire.headers(token))
    second = await post(stack, stack.url, wire.path, wire.body("second", 8), wire.headers(token))
    assert (first[0], second[0]) == (200, 429)
    retry = int(second[2]["Retry-After"])
    assert 1 <= retry <= 3  # 8 needed, ~2 left, 2/s
    assert second[1]["code"] == "rate_limited"

    await asyncio.sleep(retry)
    third = await post(stack, stack.url, wire.path, wire.body("second", 8), wire.headers(token))
    assert third[0] == 200
    assert await stack.wait_rows(project, 16) == 16


async def test_a_big_batch_is_let_through_once_then_the_key_waits_its_debt(stack: Stack) -> None:
    project = f"debt-{uuid.uuid4().hex[:6]}"
    token = await limited_key(stack, project, **{LIMIT_LOGS_PER_S: 1, LIMIT_BURST_S: 10})  # 10 tokens
    wire = WIRES["goodlogs"]
    big = await post(stack, stack.url, wire.path, wire.body("big", 30), wire.headers(token))
    assert (big[0], big[1]) == (202, {"accepted": 30, "rejected": 0})
    small = await post(stack, stack.url, wire.path, wire.body("small", 1), wire.headers(token))
    assert small[0] == 429 and 10 <= int(small[2]["Retry-After"]) <= 21  # 20 in debt + 1, at 1/s
    assert await stack.wait_rows(project, 30) == 30


# -- settings-driven limits on a gateway of their own --------------------------------------------


@pytest.fixture(scope="module")
async def strict(gateway_factory: Callable[..., Awaitable[Gateway]]) -> Gateway:
    return await gateway_factory(
        rate_requests_per_s=0.01,
        rate_burst_s=200.0,  # two requests per key by default
        max_records_per_request=50,
        body_timeout_s=1.0,
        idle_timeout_s=1.5,
    )


async def test_default_rates_come_from_settings_and_a_keys_limits_override_them(
    stack: Stack, strict: Gateway
) -> None:
    project = f"defaults-{uuid.uuid4().hex[:6]}"
    wire = WIRES["dynatrace"]
    plain = await limited_key(stack, project, strict)
    generous = await limited_key(stack, project, strict, **{LIMIT_REQUESTS_PER_S: 1000})

    plain_statuses = [
        (await post(stack, strict.url, wire.path, wire.body(f"p{i}", 1), wire.headers(plain)))[0]
        for i in range(3)
    ]
    generous_statuses = [
        (await post(stack, strict.url, wire.path, wire.body(f"g{i}", 1), wire.headers(generous)))[0]
        for i in range(5)
    ]
    assert plain_statuses == [204, 204, 429]
    assert generous_statuses == [204] * 5
    assert await stack.wait_rows(project, 7) == 7


async def test_more_records_than_the_global_cap_is_413_in_the_dialects_format(
    stack: Stack, strict: Gateway
) -> None:
    project = f"cap-{uuid.uuid4().hex[:6]}"
    token = await limited_key(stack, project, strict, **{LIMIT_REQUESTS_PER_S: 1000})
    for name in ("astralog", "tg2g"):  # neither API documents a batch limit of its own
        wire = WIRES[name]
        status, body, _ = await post(stack, strict.url, wire.path, wire.body(name, 51), wire.headers(token))
        assert status == 413
        assert "51 records in one request; the limit is 50" in orjson.dumps(body).decode()
        status, _, _ = await post(stack, strict.url, wire.path, wire.body(name, 50), wire.headers(token))
        assert status == wire.ok
    assert await stack.wait_rows(project, 100) == 100


@pytest.mark.parametrize(
    ("dialect", "count", "status"),
    [("timberlogs", 101, 400), ("goodlogs", 501, 400)],
)
async def test_record_caps_per_dialect(stack: Stack, dialect: str, count: int, status: int) -> None:
    """Timberlogs 100 and GoodLogs 500 per request, as their docs say (Dynatrace's 50,000 is
    tested with its dialect; the others have the global cap, tested above)."""
    project = f"dcap-{dialect}-{uuid.uuid4().hex[:6]}"
    token = await limited_key(stack, project)
    wire = WIRES[dialect]
    got, body, _ = await post(stack, stack.url, wire.path, wire.body("x", count), wire.headers(token))
    assert got == status, body
    got, _, _ = await post(stack, stack.url, wire.path, wire.body("y", count - 1), wire.headers(token))
    assert got == wire.ok
    assert await stack.wait_rows(project, count - 1) == count - 1


# -- decompression bombs ----------------------------------------------------------------------


def gzip_bomb(size: int) -> bytes:
    """`size` bytes of zeros as one gzip member, built without ever holding them: deflate
    blocks cut at full flushes are identical for identical input, so one is repeated."""
    chunk = bytes(MiB)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + block * (size // MiB) + c.flush() + struct.pack("<II", crc, size & 0xFFFFFFFF)


def zstd_bomb(size: int) -> bytes:
    c = zstandard.ZstdCompressor(level=3).compressobj()
    chunk = bytes(MiB)
    return b"".join(c.compress(chunk) for _ in range(size // MiB)) + c.flush()


def lz4_bomb(size: int) -> bytes:
    c = lz4.frame.LZ4FrameCompressor()
    chunk = bytes(MiB)
    return c.begin() + b"".join(c.compress(chunk) for _ in range(size // MiB)) + c.flush()


def snappy_bomb(size: int) -> bytes:
    """Framed snappy inflates ~20:1 at most, so a wire-sized bomb is ~400 MiB, not 1 GiB:
    the chunks of one compressed MiB repeated (each chunk stands alone in the format)."""
    one = bytes(cramjam.snappy.compress(bytes(MiB)))
    header = one[:10]  # the stream identifier chunk
    return header + one[10:] * (size // MiB)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {
        "gzip": gzip_bomb(GiB),
        "zstd": zstd_bomb(GiB),
        "lz4": lz4_bomb(GiB),
        "snappy": snappy_bomb(400 * MiB),
    }


def test_the_bomb_builders_make_what_they_claim() -> None:
    assert gzip.decompress(gzip_bomb(3 * MiB)) == bytes(3 * MiB)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zstd_bomb(3 * MiB)) == bytes(3 * MiB)
    assert lz4.frame.decompress(lz4_bomb(3 * MiB)) == bytes(3 * MiB)
    assert bytes(cramjam.snappy.decompress(snappy_bomb(3 * MiB))) == bytes(3 * MiB)


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "lz4", "snappy"])
def test_a_1_gib_bomb_is_refused_with_memory_bounded_by_the_cap(
    bombs: dict[str, bytes], encoding: str
) -> None:
    limit = 20 * MiB
    raw = bombs[encoding]
    # ~1000:1 for gzip, far more for zstd, ~250:1 for lz4; snappy's ~20:1 makes its bomb
    # bigger on the wire than the body cap, but the decoder is what this checks
    assert len(raw) < {"gzip": 1.1 * MiB, "zstd": 1.1 * MiB, "lz4": 4.5 * MiB, "snappy": 20 * MiB}[encoding]
    tracemalloc.start()
    try:
        with pytest.raises(BodyError) as refused:
            decompress(raw, encoding, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (refused.value.status, refused.value.code) == (413, "body_too_large")
    assert peak < 2 * limit, f"peak {peak / MiB:.1f} MiB while refusing a 1 GiB bomb"


@pytest.mark.parametrize(
    ("dialect", "encoding"), [("astralog", "gzip"), ("dynatrace", "zstd"), ("timberlogs", "gzip")]
)
async def test_a_bomb_over_http_is_413_in_the_dialects_format(
    stack: Stack, bombs: dict[str, bytes], dialect: str, encoding: str
) -> None:
    project = f"bomb-{uuid.uuid4().hex[:6]}"
    token = await limited_key(stack, project)
    wire = WIRES[dialect]
    headers = {**wire.headers(token), "Content-Encoding": encoding}
    tracemalloc.start()
    try:
        status, body, _ = await post(stack, stack.url, wire.path, bombs[encoding], headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 413
    assert "decompressed request body exceeds" in orjson.dumps(body).decode()
    # The whole process (client, gateway, worker) in the window: the cap, not the gigabyte.
    assert peak < 4 * stack.settings.max_decompressed_bytes, f"peak {peak / MiB:.1f} MiB"


async def test_every_gzip_member_counts_toward_the_cap_and_is_kept(stack: Stack) -> None:
    project = f"members-{uuid.uuid4().hex[:6]}"
    token = await limited_key(stack, project)
    wire = WIRES["astralog"]
    body = wire.body("member", 3)
    half = len(body) // 2
    two_members = gzip.compress(body[:half]) + gzip.compress(body[half:])
    headers = {**wire.headers(token), "Content-Encoding": "gzip"}
    assert (await post(stack, stack.url, wire.path, two_members, headers))[0] == 200
    assert await stack.wait_rows(project, 3) == 3

    many = gzip_bomb(4 * MiB) * 6  # 24 MiB of zeros in six members, each under the cap alone
    status, body_out, _ = await post(stack, stack.url, wire.path, many, headers)
    assert status == 413 and "decompressed" in body_out["error"]


# -- headers and slow clients ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"X-Big": "a" * (17 * 1024)},
        {f"X-H{i}": "v" for i in range(101)},
    ],
    ids=["one-header-over-16KiB", "over-100-headers"],
)
async def test_oversized_headers_are_refused_before_any_handler(stack: Stack, extra: dict[str, str]) -> None:
    project = f"hdr-{uuid.uuid4().hex[:6]}"
    token = await limited_key(stack, project)
    wire = WIRES["astralog"]
    status, _, _ = await post(
        stack, stack.url, wire.path, wire.body("hdr", 1), {**wire.headers(token), **extra}
    )
    assert status in (400, 431)
    long_url = await post(
        stack, stack.url, wire.path + "?x=" + "a" * 9000, wire.body("url", 1), wire.headers(token)
    )
    assert long_url[0] in (400, 414)
    # Headers within the limits pass: a 15 KiB User-Agent, 90 headers.
    fine = {"User-Agent": "u" * (15 * 1024), **{f"X-H{i}": "v" for i in range(90)}}
    status, _, _ = await post(
        stack, stack.url, wire.path, wire.body("fine", 1), {**wire.headers(token), **fine}
    )
    assert status == 200
    assert await stack.wait_rows(project, 1) == 1
    assert stored_messages(stack, project) == ["fine #0"]


async def _closed_within(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, trickle: bytes, limit_s: float
) -> float:
    """Keep trickling `trickle` every 0.2 s until the server closes; seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            if trickle:
                writer.write(trickle)
                await writer.drain()
            data = await asyncio.wait_for(reader.read(65536), timeout=0.2)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        if not data:
            return time.monotonic() - started
    return float("inf")


def _port(gateway: Gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("trickle", [b"", b"X"], ids=["silent", "trickling-headers"])
async def test_a_client_that_never_finishes_its_headers_is_cut_off(strict: Gateway, trickle: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(strict))
    try:
        if trickle:
            writer.write(b"POST /v1/drain HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        took = await _closed_within(reader, writer, trickle, limit_s=10)
    finally:
        writer.close()
    assert 1.0 <= took <= 4.0, f"closed after {took:.1f} s; the idle timeout is 1.5 s"


async def test_a_client_that_trickles_its_body_gets_408_and_is_cut_off(stack: Stack, strict: Gateway) -> None:
    project = f"slowbody-{uuid.uuid4().hex[:6]}"
    token = await limited_key(stack, project, strict, **{LIMIT_REQUESTS_PER_S: 1000})
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(strict))
    started = time.monotonic()
    try:
        writer.write(
            b"POST /v1/drain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: {token}\r\nContent-Length: 100000\r\n\r\n".encode()
            + b'{"logs": ['
        )
        head = b""
        while b"\r\n\r\n" not in head and time.monotonic() - started < 10:
            writer.write(b" ")
            await writer.drain()
            try:
                head += await asyncio.wait_for(reader.read(65536), timeout=0.2)
            except TimeoutError:
                continue
        answered = time.monotonic() - started
        assert head.startswith(b"HTTP/1.1 408"), head[:200]
        assert 0.9 <= answered <= 3.0
        if b"body_timeout" not in head:  # the body may come in a second segment
            head += await asyncio.wait_for(reader.read(65536), timeout=2)
        assert b'"code":"body_timeout"' in head
        # Then aiohttp lingers a few seconds for the rest of the body, and closes.
        took = await _closed_within(reader, writer, b" ", limit_s=15)
        assert took <= 7.0
    finally:
        writer.close()


async def test_reads_spend_the_keys_request_rate_but_not_its_log_budget(stack: Stack) -> None:
    """A key's requests/s covers its reads (429 in GoodLogs' error format); an exhausted logs/s
    budget does not lock the same key out of reading."""
    project = f"readrate-{uuid.uuid4().hex[:6]}"
    spent = await limited_key(stack, project, **{LIMIT_LOGS_PER_S: 1, LIMIT_BURST_S: 1})
    wire = WIRES["astralog"]
    assert (await post(stack, stack.url, wire.path, wire.body("fill", 5), wire.headers(spent)))[0] == 200
    assert (await post(stack, stack.url, wire.path, wire.body("more", 1), wire.headers(spent)))[0] == 429
    bearer = {"Authorization": f"Bearer {spent}"}
    async with stack.session.get(stack.url + "/api/v1/logs", headers=bearer) as resp:
        assert resp.status == 200  # the logs bucket is in debt; reads do not touch it

    slow = await limited_key(stack, project, **{LIMIT_REQUESTS_PER_S: 1, LIMIT_BURST_S: 2})  # 2 tokens
    bearer = {"Authorization": f"Bearer {slow}"}
    statuses = []
    for _ in range(3):
        async with stack.session.get(stack.url + "/v1/info", headers=bearer) as resp:
            statuses.append(resp.status)
            body, retry = orjson.loads(await resp.read()), resp.headers.get("Retry-After")
    assert statuses == [200, 200, 429]
    assert body["error"]["code"] == "RATE_LIMITED"
    assert retry is not None and int(retry) >= 1
