"""Scale out, shown: worker instances join and leave one consumer group under load, nothing lost or doubled.

Each instance is a full `pipeline.run` (its own consumer, DLQ producer, batch and insert
thread) in this test process, all sharing the session's one chDB client: chDB allows
one engine per data path per process, so in embedded mode this is the only way several
consumers can write the same store. With a ClickHouse server each instance would be its
own process or pod; the group protocol they go through is the same.

The test uses its own raw topic and consumer group (and a gateway that produces to that
topic), so it alone decides who is in the group.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from millrace import store
from millrace.config import Settings
from millrace.kafka.topics import ensure_topics
from tests.bodies import drain_body
from tests.conftest import Gateway, Stack
from tests.test_metrics import drained
from workers import pipeline

pytestmark = pytest.mark.integration

PARTITIONS = 6
REQUESTS = 240
LOGS_PER_REQUEST = 5


@dataclass
class Instance:
    """One consumer-group member: a pipeline.run task with its own stop switch."""

    name: str
    settings: Settings
    client: Any
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[pipeline.Worker] | None = None
    running: pipeline.Worker | None = None
    # Every distinct set of partitions this instance held, in order.
    held: list[frozenset[int]] = field(default_factory=list)

    def start(self) -> None:
        def seen(p: pipeline.Worker) -> None:
            self.running = p

        self.task = asyncio.create_task(pipeline.run(self.settings, self.client, self.stop, on_start=seen))

    async def leave(self) -> pipeline.Worker:
        """A graceful scale-down: store and commit what it holds, then leave the group."""
        assert self.task is not None
        self.stop.set()
        return await asyncio.wait_for(self.task, timeout=60)

    def sample(self) -> None:
        if self.running is None or self.task is None or self.task.done():
            return
        now = frozenset(tp.partition for tp in self.running.consumer.assignment())
        if not self.held or self.held[-1] != now:
            self.held.append(now)

    def rows(self) -> int:
        return self.running.stats["rows"] if self.running else 0


async def watch(instances: list[Instance], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for instance in instances:
            instance.sample()
        await asyncio.sleep(0.05)


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.05)


def body(marker: str, request: int) -> bytes:
    messages = (f"{marker} {request}.{i}" for i in range(LOGS_PER_REQUEST))
    return drain_body(messages, project_id="scale", service="scale")


async def test_instances_join_and_leave_under_load_and_every_log_is_stored_once(
    stack: Stack, gateway_factory: Callable[..., Awaitable[Gateway]]
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = replace(
        stack.settings,
        topic=f"millrace.scale-{tag}",
        consumer_group=f"scale-{tag}",
        partitions=PARTITIONS,
        batch_age_ms=100,
    )
    await ensure_topics(settings)
    gateway = await gateway_factory(topic=settings.topic, consumer_group=settings.consumer_group)
    tenant = await stack.tenant(f"scale-{tag}")
    await gateway.wait_for_key(tenant.key)
    headers = {"Authorization": tenant.key, "Content-Type": "application/json"}

    a, b, c = (Instance(n, settings, stack.client) for n in "abc")
    instances = [a, b, c]
    watching = asyncio.Event()
    watcher = asyncio.create_task(watch(instances, watching))
    a.start()
    await wait_until(lambda: bool(a.held and a.held[-1]), "instance a holds partitions")

    acked: list[int] = []
    statuses: list[int] = []

    async def send(i: int) -> None:
        async with stack.session.post(gateway.url + "/v1/drain", data=body(tag, i), headers=headers) as resp:
            await resp.read()
            statuses.append(resp.status)
            if resp.status == 200:
                acked.append(i)

    async def load() -> None:
        # Paced (about 20 requests/s, 4 in flight) so joins and leaves land mid-load.
        for start in range(0, REQUESTS, 4):
            await asyncio.gather(*(send(i) for i in range(start, min(start + 4, REQUESTS))))
            await asyncio.sleep(0.2)

    loader = asyncio.create_task(load())
    try:
        await wait_until(lambda: len(statuses) >= REQUESTS // 5, "the first fifth of the load")
        b.start()
        await wait_until(lambda: len(statuses) >= 2 * REQUESTS // 5, "two fifths of the load")
        c.start()
        await wait_until(
            lambda: bool(b.held and b.held[-1] and c.held and c.held[-1]), "b and c hold partitions"
        )
        await wait_until(lambda: len(statuses) >= 3 * REQUESTS // 5, "three fifths of the load")
        left = await a.leave()
        await loader
        await drained(settings)
    finally:
        loader.cancel()
        watching.set()
        await watcher
        for instance in (b, c):
            if instance.task is not None and not instance.task.done():
                await instance.leave()
        for instance in instances:
            if instance.task is not None and not instance.task.done():
                instance.task.cancel()

    # Every acknowledged log is stored exactly once (and nothing else was).
    assert statuses.count(200) == REQUESTS, f"not all requests were acknowledged: {sorted(set(statuses))}"
    expected = REQUESTS * LOGS_PER_REQUEST
    assert await stack.wait_rows(tenant.project, expected) == expected
    total, distinct = stack.query(
        "SELECT count(), uniqExact(message) FROM logs WHERE project = {p:String}", p=tenant.project
    )[0]
    assert (total, distinct) == (expected, expected)
    wanted = {f"{tag} {r}.{i}" for r in acked for i in range(LOGS_PER_REQUEST)}
    stored = {
        m for (m,) in stack.query("SELECT message FROM logs WHERE project = {p:String}", p=tenant.project)
    }
    assert stored == wanted

    # The work was shared and the partitions moved: a held them all alone, then gave some
    # up when b and c joined; once a left, b and c split all of them between them.
    everything = frozenset(range(PARTITIONS))
    assert a.held[0] == everything, a.held
    assert any(0 < len(h) < PARTITIONS for h in a.held), f"a never shared: {a.held}"
    assert len(b.held) >= 2 and len(c.held) >= 1, (b.held, c.held)
    final_b, final_c = b.held[-1], c.held[-1]
    assert final_b | final_c == everything and not final_b & final_c, (b.held, c.held)
    assert left.stats["rows"] > 0 and b.rows() > 0 and c.rows() > 0, (left.stats, b.rows(), c.rows())
    assert left.stats["rows"] + b.rows() + c.rows() == expected


def test_migrations_have_a_cluster_ready_form_the_engine_parses(stack: Stack) -> None:
    """With MILLRACE_CLICKHOUSE_CLUSTER every DDL runs ON CLUSTER with Replicated* engines.

    No ClickHouse cluster runs here: the real engine's parser (formatQuery) checks the
    rewritten statements, and the embedded path keeps the files unchanged.
    """
    checked = 0
    for _, name, sql in store.migrations():
        for statement in store._statements(sql):
            assert store.on_cluster(statement, "") == statement, name
            clustered = store.on_cluster(statement, "millrace_cluster")
            ((formatted,),) = stack.query("SELECT formatQuery({q:String})", q=clustered)
            assert "ON CLUSTER millrace_cluster" in formatted, f"{name}: {formatted[:200]}"
            engines = re.findall(r"ENGINE = (\w+)", formatted)
            assert all(e.startswith("Replicated") for e in engines), f"{name}: {engines}"
            checked += 1
    assert checked >= 5
