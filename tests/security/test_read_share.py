"""One tenant's slow reads cannot take every read thread: a project runs at most its share of
the pool, a few more of its reads wait for its own slot, the rest are 429 in GoodLogs' format,
and another project's read is answered meanwhile (issue 18, from reading)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

import gateway.read
import workers.server
from reads.slots import MAX_WAITING, ProjectPool, ReadsBusy
from tests.conftest import Stack

SLOW_S = 3.0


@pytest.mark.integration
async def test_a_tenants_slow_reads_leave_a_thread_for_others(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = await stack.tenant(f"slowq-{uuid.uuid4().hex[:6]}")
    other = await stack.tenant(f"other-{uuid.uuid4().hex[:6]}")
    real = workers.server.read_call

    def slow_read(client: Any, op: str, payload: dict[str, Any]) -> Any:
        # The engine's own answer, after the time a heavy query of this one project would take.
        if payload.get("project") == slow.project:
            time.sleep(SLOW_S)
        return real(client, op, payload)

    # Embedded reads run in the worker's read port; with a ClickHouse server, in the gateway.
    monkeypatch.setattr(workers.server, "read_call", slow_read)
    monkeypatch.setattr(gateway.read, "read_call", slow_read)

    async def schema(token: str) -> tuple[int, Any, dict[str, str], float]:
        started = time.monotonic()
        async with stack.session.get(
            stack.url + "/v1/schema", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            return resp.status, await resp.json(), dict(resp.headers), time.monotonic() - started

    flood = [asyncio.create_task(schema(slow.read_key)) for _ in range(8)]
    await asyncio.sleep(0.3)
    status, _, _, took = await schema(other.read_key)
    assert status == 200
    assert took < SLOW_S / 2, f"another project's read waited {took:.1f} s behind the slow one"

    answers = await asyncio.gather(*flood)
    share = 1 if stack.settings.embedded_store else 2  # half of the worker's 2 / the gateway's 4 threads
    refused = [a for a in answers if a[0] == 429]
    assert sorted(a[0] for a in answers) == [200] * (share + MAX_WAITING) + [429] * (8 - share - MAX_WAITING)
    for _, body, headers, took in refused:
        assert body["error"]["code"] == "RATE_LIMITED" and "reads in flight" in body["error"]["message"]
        assert headers["Retry-After"] == "1"
        assert took < SLOW_S  # refused at once, not after waiting


async def test_a_slot_is_held_until_the_read_ends_even_if_its_caller_gave_up() -> None:
    pool = ProjectPool(threads=2, max_waiting=0)
    gate = threading.Event()
    try:
        first = asyncio.create_task(pool.run("p", gate.wait, 10))
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(ReadsBusy):  # the abandoned read still runs in its thread
            await pool.run("p", int, "1")
        assert await pool.run("q", int, "2") == 2  # another project has the other thread
        gate.set()
        await asyncio.sleep(0.1)
        assert await pool.run("p", int, "3") == 3
    finally:
        gate.set()
        pool.shutdown()
