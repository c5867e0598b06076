"""Audit F4 against the real broker and engine: the raw topic is deleted and re-created under
the same name, so its offsets start again from 0. Nothing sent to the new topic may be dropped
as a duplicate of the old one (the insert's dedup token) or skipped as already stored (the
per-table watermark)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.server import SERVER_OPTIONS
from millrace import store
from millrace.config import Settings
from millrace.kafka.topics import admin_client, ensure_topics
from tests.conftest import Stack, free_port
from tests.test_delivery import FlakyStore, InProcessWorker, Load, new_key, wait_stored

REQUESTS = 10


async def recreate(settings: Settings) -> None:
    async with admin_client(settings) as admin:
        await admin.delete_topics([settings.topic])
        deadline = time.monotonic() + 30
        while settings.topic in await admin.list_topics():
            assert time.monotonic() < deadline, "the raw topic was not deleted"
            await asyncio.sleep(0.2)
    await ensure_topics(settings)


async def send(load: Load) -> None:
    before = sum(load.outcomes.values())
    await load.run(asyncio.Event(), max_requests=before + REQUESTS)
    assert load.outcomes["200"] == sum(load.outcomes.values()), load.outcomes


@pytest.fixture
async def one_partition(stack: Stack) -> AsyncIterator[tuple[InProcessWorker, str, Load]]:
    """One partition, so the re-created topic's offsets reach the old watermark for sure."""
    run = uuid.uuid4().hex[:10]
    settings = replace(
        stack.settings,
        topic=f"recreate.{run}",
        dlq_topic=f"recreate.{run}.dlq",
        consumer_group=f"recreate-{run}",
        partitions=1,
        port=free_port(),
    )
    await ensure_topics(settings)
    project = f"recreate-{run[:6]}"
    key = await new_key(settings, project)
    client = store.connect(settings)
    server = TestServer(create_app(settings), port=settings.port)
    await server.start_server(**SERVER_OPTIONS)
    worker = InProcessWorker(settings, client, FlakyStore())
    try:
        yield worker, project, Load(f"http://127.0.0.1:{server.port}", key, run[:4], concurrency=1, pause_s=0)
    finally:
        await server.close()
        if worker.task is not None and not worker.task.done():
            await worker.halt()
        client.close()


async def test_a_recreated_raw_topic_is_stored_in_full_every_time(
    stack: Stack, one_partition: tuple[InProcessWorker, str, Load]
) -> None:
    """Cycles alternate: the worker running before the new topic fills (its watermarks are
    stale, past the new log's end: the dedup token is what could drop rows), and the new
    topic filled past the old watermark before the worker starts (the watermark skip is what
    could drop rows)."""
    worker, project, load = one_partition
    worker.start()
    await worker.assigned()
    await send(load)
    stored = await wait_stored(stack, project, load.acked)
    assert stored == Counter(dict.fromkeys(load.acked, 1))
    for cycle in range(4):
        await worker.halt()
        await recreate(worker.settings)
        if cycle % 2 == 0:
            worker.start()
            await worker.assigned()
            await send(load)
        else:
            await send(load)
            worker.start()
            await worker.assigned()
        stored = await wait_stored(stack, project, load.acked)
        assert len(load.acked) == (cycle + 2) * REQUESTS * 5
        assert stored == Counter(dict.fromkeys(load.acked, 1)), (
            f"cycle {cycle}: {len(stored)} of {len(load.acked)}"
        )
