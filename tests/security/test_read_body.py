"""Audit F5: the read endpoints give a request body the same deadline as ingest
(MILLRACE_BODY_TIMEOUT_S): a client that trickles a query is answered 408 and cut off."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import Gateway, Stack, Tenant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def slow_reads(gateway_factory: Callable[..., Awaitable[Gateway]]) -> Gateway:
    return await gateway_factory(body_timeout_s=1.0)


@pytest.fixture(scope="module")
async def reader(stack: Stack, slow_reads: Gateway) -> Tenant:
    tenant = await stack.tenant(f"slowread-{uuid.uuid4().hex[:6]}")
    await slow_reads.wait_for_key(tenant.read_key)
    return tenant


async def _trickle(gateway: Gateway, head: bytes, limit_s: float) -> tuple[bytes, float, float]:
    """Send `head` (a request with a body far longer than what follows it), then one byte every
    0.2 s; returns what came back, when the answer started and when the connection closed."""
    port = int(gateway.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    answer, answered, closed = b"", float("inf"), float("inf")
    try:
        writer.write(head)
        while time.monotonic() - started < limit_s:
            try:
                writer.write(b" ")
                await writer.drain()
                data = await asyncio.wait_for(reader.read(65536), timeout=0.2)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = time.monotonic() - started
                break
            if not data:
                closed = time.monotonic() - started
                break
            if not answer:
                answered = time.monotonic() - started
            answer += data
    finally:
        writer.close()
    return answer, answered, closed


def _post(path: str, token: str, start: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n"
    ).encode() + start


@pytest.mark.parametrize(("path", "start"), [("/v1/gql/query", b'{"q": "'), ("/v1/gql", b'{"queries": ["')])
async def test_a_trickled_query_body_gets_408_and_the_connection_closes(
    slow_reads: Gateway, reader: Tenant, path: str, start: bytes
) -> None:
    answer, answered, closed = await _trickle(slow_reads, _post(path, reader.read_key, start), limit_s=15)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"REQUEST_TIMEOUT"' in answer
    assert 0.9 <= answered <= 3.0
    assert closed <= 9.0  # then aiohttp lingers (5 s) for the rest of the body, and closes


@pytest.mark.parametrize("path", ["/v1/schema", "/api/v1/logs", "/v1/gql/autocomplete?q=le"])
async def test_a_read_that_takes_no_body_answers_at_once_and_closes_a_trickled_one(
    slow_reads: Gateway, reader: Tenant, path: str
) -> None:
    head = (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {reader.read_key}\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    answer, answered, closed = await _trickle(slow_reads, head, limit_s=15)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert answered <= 3.0
    assert closed <= 9.0


async def test_an_unauthenticated_trickled_query_is_401_and_closed(slow_reads: Gateway) -> None:
    answer, answered, closed = await _trickle(slow_reads, _post("/v1/gql/query", "nope", b"{"), limit_s=15)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert answered <= 1.0 and closed <= 9.0


async def test_a_whole_query_body_within_the_deadline_is_answered(
    stack: Stack, slow_reads: Gateway, reader: Tenant
) -> None:
    async with stack.session.post(
        slow_reads.url + "/v1/gql/query",
        json={"q": "level:error"},
        headers={"Authorization": f"Bearer {reader.read_key}"},
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["data"]["count"] == 0
