"""Audit findings on the gateway (issue 18): F1 a refused request costs a bounded body prefix,
F7 an undecodable key byte is a 401, F9 no credential query parameter reaches Kafka."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import zstandard
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway import body as gateway_body
from gateway.dialects.shared_logs import PREFIX_BYTES
from millrace import internal, keys
from millrace.kafka.topics import client_options
from schemas.envelope import VERSION, decode
from tests.conftest import Stack
from tests.test_limits import WIRES, limited_key, post

pytestmark = pytest.mark.integration

MiB = 1 << 20


def _bomb() -> bytes:
    """A TG2G-shaped JSON body of almost 20 MiB that zstd packs into a couple of KB."""
    record = b'{"message":"' + b"a" * 1000 + b'"},'
    plain = b'{"source":"svc","logs":[' + record * (20 * MiB // len(record) - 64) + b'{"message":"end"}]}'
    packed = zstandard.ZstdCompressor(level=19).compress(plain)
    assert len(packed) < 4096 and len(plain) > 19 * MiB
    return packed


BOMB = _bomb()
ZSTD = {"Content-Type": "application/json", "Content-Encoding": "zstd"}


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes each decompression in the gateway was allowed to produce (its limit)."""
    limits: list[int] = []
    real = gateway_body.decompress

    def counting(raw: bytes, encoding: str, limit: int, prefix: bool = False) -> bytes:
        limits.append(limit)
        return real(raw, encoding, limit, prefix)

    monkeypatch.setattr(gateway_body, "decompress", counting)
    return limits


async def _cpu_ms(stack: Stack, headers: dict[str, str]) -> tuple[float, int, Any]:
    # The gateway runs in this thread's event loop: thread time is its CPU (plus a small client).
    started = time.thread_time()
    status, body, _ = await post(stack, stack.url, "/v1/logs", BOMB, headers)
    return (time.thread_time() - started) * 1000, status, body


async def test_an_unauthenticated_bomb_costs_a_prefix_and_a_401(stack: Stack, decoded: list[int]) -> None:
    for headers in ({}, {"Authorization": "Bearer mr_" + "x" * 12 + "_" + "y" * 43}):
        runs = [await _cpu_ms(stack, ZSTD | headers) for _ in range(5)]
        assert {(status, orjson.dumps(body)) for _, status, body in runs} == {
            (401, b'{"error":"Invalid API key"}')
        }
        assert statistics.median(ms for ms, _, _ in runs) <= 5
    assert decoded and max(decoded) <= PREFIX_BYTES


async def test_a_rate_limited_key_is_429_without_decompressing_the_body(
    stack: Stack, decoded: list[int]
) -> None:
    token = await limited_key(
        stack, f"bomb-{uuid.uuid4().hex[:6]}", **{keys.LIMIT_REQUESTS_PER_S: 0.01, keys.LIMIT_BURST_S: 100}
    )
    good = WIRES["goodlogs"]
    status, _, _ = await post(stack, stack.url, "/v1/logs", good.body("s", 1), good.headers(token))
    assert status == 202
    decoded.clear()
    ms, status, body = await _cpu_ms(stack, ZSTD | {"Authorization": f"Bearer {token}"})
    assert status == 429 and body["error"] == "Rate limit exceeded"
    assert max(decoded) <= PREFIX_BYTES
    assert ms <= 50  # generous: the point is the count above


async def test_health_stays_fast_while_bombs_arrive(stack: Stack, decoded: list[int]) -> None:
    async def bombs() -> None:
        for _ in range(10):
            await post(stack, stack.url, "/v1/logs", BOMB, ZSTD)

    async def health_ms() -> float:
        started = time.perf_counter()
        async with stack.session.get(stack.url + "/health") as resp:
            assert resp.status == 200
        return (time.perf_counter() - started) * 1000

    senders = [asyncio.create_task(bombs()) for _ in range(3)]
    worst = 0.0
    while not all(s.done() for s in senders):
        worst = max(worst, await health_ms())
    await asyncio.gather(*senders)
    assert len(decoded) == 30 and max(decoded) <= PREFIX_BYTES
    assert worst < 500  # generous on a shared machine; a decompressed bomb costs more than this


async def test_a_refused_small_body_is_still_answered_in_its_dialects_format(stack: Stack) -> None:
    tg2g = orjson.dumps({"source": "svc", "logs": [{"message": "m"}]})
    status, body, _ = await post(stack, stack.url, "/v1/logs", tg2g, {"Content-Type": "application/json"})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    goodlogs = orjson.dumps({"batch": [{"message": "m"}]})
    wrong = {"Authorization": "Bearer nope", "Content-Type": "application/json"}
    status, body, _ = await post(stack, stack.url, "/v1/logs", goodlogs, wrong)
    assert (status, body["error"]["code"]) == (401, "UNAUTHORIZED")


# -- F7: a key-shaped token with a byte that is not UTF-8 -----------------------------------------

_BAD = b"mr_abcdefghijkl_" + b"A" * 30 + b"\xff" + b"B" * 12


async def _raw(url: str, method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """A request written byte for byte (clients refuse to send undecodable header bytes)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    body = b"[]"
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: x", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


@pytest.mark.parametrize(
    ("method", "target", "header"),
    [
        ("POST", b"/v1/drain", b"Authorization"),
        ("POST", b"/v1/logs", b"X-TG2G-Api-Key"),
        ("POST", b"/v1/logs", b"X-API-Key"),
        ("POST", b"/v1/logs", b"Authorization: Bearer"),
        ("POST", b"/v1/events", b"Authorization: Bearer"),
        ("POST", b"/api/v2/logs/ingest", b"Authorization: Api-Token"),
        ("POST", b"/api/v2/logs/ingest?api-token=mr_abcdefghijkl_" + b"A" * 30 + b"%FF" + b"B" * 12, b""),
        ("GET", b"/api/v1/logs", b"Authorization: Bearer"),
        ("POST", b"/v1/gql/query", b"Authorization: Bearer"),
        ("GET", b"/v1/schema", b"Authorization: Bearer"),
    ],
)
async def test_an_undecodable_key_byte_is_401_on_every_auth_style(
    stack: Stack, method: str, target: bytes, header: bytes
) -> None:
    name, _, scheme = header.partition(b": ")
    headers = [(name, (scheme + b" " if scheme else b"") + _BAD)] if name else []
    assert await _raw(stack.url, method, target, headers) == 401


async def test_an_undecodable_internal_token_byte_is_401(stack: Stack) -> None:
    status = await _raw(
        stack.settings.worker_query_url, "POST", b"/internal/v1/logs", [(internal.HEADER.encode(), _BAD)]
    )
    assert status == 401


# -- F9 --------------------------------------------------------------------------------------------


async def test_a_second_key_in_the_query_never_reaches_kafka(stack: Stack) -> None:
    tenant = await stack.tenant(f"qtoken-{uuid.uuid4().hex[:6]}")
    other = "mr_" + "q" * 12 + "_" + "S" * 43
    consumer = AIOKafkaConsumer(**client_options(stack.settings), enable_auto_commit=False)
    await consumer.start()
    try:
        topic = stack.settings.topic
        partitions = [TopicPartition(topic, p) for p in range(stack.settings.partitions)]
        consumer.assign(partitions)
        start = await consumer.end_offsets(partitions)
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        dynatrace = WIRES["dynatrace"]
        status, _, headers = await post(
            stack,
            stack.url,
            f"{dynatrace.path}?api-token={other}&Api-Token={other}&kept=1",
            dynatrace.body("s", 1),
            dynatrace.headers(tenant.key),
        )
        assert status == 204
        deadline = time.monotonic() + 20
        found, raw = None, b""
        while found is None and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for record in batch:
                    envelope = decode(record.value or b"")
                    if envelope.request_id == headers["X-Request-Id"]:
                        found, raw = envelope, record.value or b""
        assert found is not None, "the envelope never arrived, so this test would prove nothing"
        assert found.query == {"kept": "1"}
        assert other.encode() not in raw and tenant.key.encode() not in raw
        # The rows travel compressed (version 3): look into them too.
        assert raw[2] == VERSION and found.rows == 1
        assert other.encode() not in bytes(found.body) and tenant.key.encode() not in bytes(found.body)
    finally:
        await consumer.stop()
