"""Dead letters end to end: dead-lettering, `millrace dlq list|replay`, and the flood guard.

Each scenario runs its own worker on its own raw and dead-letter topics over the
session's real broker and real ClickHouse engine, so what it finds in "its" topics is
its own doing. Bad messages are produced straight onto the raw topic: the gateway
validates requests, so a dead letter is what slips past it (a parser bug, a dialect
the worker does not know yet, a foreign or newer envelope).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from dataclasses import replace as dc_replace

import orjson
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.client import Client

from formats import PARSERS
from millrace import store
from millrace.config import Settings
from millrace.kafka.topics import ensure_topics, envelope_producer
from ops import dlq
from schemas.envelope import RAW_BODY_VERSION, Envelope, decode, encode
from tests.conftest import Stack, kafka_env
from workers import flood, pipeline
from workers.server import read_app

pytestmark = pytest.mark.integration


def envelope(project: str, message: str, dialect: str = "astralog", body: bytes | None = None) -> bytes:
    """A version 1 envelope (the raw body, which the worker parses): what a topic written
    before rows travelled in envelopes holds, and the worker's only parse left."""
    if body is None:
        log = {"project_id": "x", "timestamp": "2024-05-31T15:30:45Z", "level": "info", "service": "dlq"}
        body = orjson.dumps({"logs": [{**log, "message": message}]})
    return encode(
        Envelope(
            request_id=uuid.uuid4().hex,
            project=project,
            key_id="k_test",
            dialect=dialect,
            path="/v1/drain",
            content_type="application/json",
            user_agent="dlq-test",
            client_ip="127.0.0.1",
            received_at_ns=time.time_ns(),
            body=body,
            version=RAW_BODY_VERSION,
        )
    )


@dataclass
class Lane:
    """A worker of its own on topics of its own, over the session's broker and engine."""

    settings: Settings
    client: Client
    producer: AIOKafkaProducer
    flood: flood.FloodGuard | None = None
    _stop: asyncio.Event | None = None
    _task: asyncio.Task[pipeline.Worker] | None = None

    @classmethod
    async def open(cls, stack: Stack, name: str, **overrides: object) -> Lane:
        settings = replace(
            stack.settings,
            topic=f"{name}.raw",
            dlq_topic=f"{name}.dlq",
            consumer_group=f"{name}-workers",
            **overrides,  # type: ignore[arg-type]
        )
        await ensure_topics(settings)
        producer = envelope_producer(settings)
        await producer.start()
        return cls(settings, store.connect(settings), producer)

    def start_worker(self) -> None:
        self.flood = flood.FloodGuard.from_settings(self.settings)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(pipeline.run(self.settings, self.client, self._stop, self.flood))

    async def stop_worker(self) -> None:
        if self._stop is not None and self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, timeout=60)
            self._stop = self._task = None

    async def close(self) -> None:
        await self.stop_worker()
        await self.producer.stop()
        self.client.close()

    async def send(self, value: bytes, partition: int = 0) -> int:
        """Produce onto the raw topic; the offset it got."""
        sent = await self.producer.send_and_wait(self.settings.topic, value, partition=partition)
        return int(sent.offset)

    async def dead_letters(self) -> list[dlq.StoredDeadLetter]:
        return [d async for d in dlq.dead_letters(self.settings)]

    async def replayed_on_raw(self) -> list[tuple[bytes, bytes]]:
        """(replayed_from header, value) of every raw-topic record that `dlq replay` sent."""
        found = []
        async for record in dlq.read_topic(self.settings, self.settings.topic):
            headers = dict(record.headers or ())
            if dlq.REPLAYED_HEADER in headers:
                found.append((headers[dlq.REPLAYED_HEADER], record.value))
        return found

    async def cli(self, *args: str) -> str:
        """`millrace <args>` as an operator runs it, against this lane's topics; its stdout."""
        env = {
            **os.environ,
            "MILLRACE_HOME": str(self.settings.home),
            **kafka_env(self.settings),
            "MILLRACE_TOPIC": self.settings.topic,
            "MILLRACE_DLQ_TOPIC": self.settings.dlq_topic,
            "MILLRACE_LOG_LEVEL": "warning",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ops.cli",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
        assert proc.returncode == 0, err.decode() + out.decode()
        return out.decode()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout_s}s")
        await asyncio.sleep(0.2)


@dataclass
class Sent:
    project: str
    good: list[int]
    bad: dict[str, tuple[int, bytes]]  # name -> (raw offset, exact bytes)
    fixable_project: str


@pytest.fixture(scope="module")
async def lane(stack: Stack) -> AsyncIterator[Lane]:
    lane = await Lane.open(stack, "dlqtest", partitions=2)
    lane.start_worker()
    try:
        yield lane
    finally:
        await lane.close()


@pytest.fixture(scope="module")
async def sent(lane: Lane, stack: Stack) -> Sent:
    """Good and bad messages interleaved on one partition, then processed by the worker."""
    project, fixable = f"dlq-{uuid.uuid4().hex[:8]}", f"dlq-fix-{uuid.uuid4().hex[:8]}"
    good: list[int] = []
    bad: dict[str, tuple[int, bytes]] = {}

    async def send_bad(name: str, value: bytes) -> None:
        bad[name] = (await lane.send(value), value)

    good.append(await lane.send(envelope(project, "good 0")))
    await send_bad("garbage", b"this is not an envelope")
    good.append(await lane.send(envelope(project, "good 1")))
    # A dialect this worker does not know yet (the gateway was deployed first).
    await send_bad("unknown_dialect", envelope(fixable, "from the future", dialect="astralog_v2"))
    good.append(await lane.send(envelope(project, "good 2")))
    await send_bad("bad_body", envelope(project, "", body=b'{"logs": 5}'))
    # Bigger than a producer's default 1 MB request: dead-lettering must not choke on it.
    await send_bad("big_garbage", b"\x00" * 2_000_000)
    # Rows (a version 2 envelope) the engine cannot read: refused alone, the batch is stored.
    refused = decode(envelope(project, "never"))
    await send_bad(
        "refused_rows", encode(dc_replace(refused, body=b'[{"timestamp": "soon"}]', rows=1, version=2))
    )
    good.append(await lane.send(envelope(project, "good 3")))

    async def all_dead_lettered() -> bool:
        return len(await lane.dead_letters()) >= len(bad)

    await wait_for(all_dead_lettered)
    return Sent(project, good, bad, fixable)


async def test_bad_messages_are_dead_lettered_with_reason_and_position_while_good_ones_land(
    lane: Lane, stack: Stack, sent: Sent
) -> None:
    assert len(sent.good) == await stack.wait_rows(sent.project, len(sent.good))
    stored = stack.query(
        "SELECT message, kafka_partition, kafka_offset FROM logs "
        "WHERE project = {p:String} ORDER BY kafka_offset",
        p=sent.project,
    )
    # The last good message came after every bad one on the same partition: it flowed.
    assert [(f"good {i}", 0, off) for i, off in enumerate(sent.good)] == stored

    by_source = {d.letter.source_offset: d for d in await lane.dead_letters()}
    expected_codes = {
        "garbage": "bad_envelope",
        "unknown_dialect": "unknown_dialect",
        "bad_body": "invalid_shape",
        "big_garbage": "bad_envelope",
        "refused_rows": "store_refused",
    }
    assert len(sent.bad) == len(by_source)
    for name, (offset, value) in sent.bad.items():
        dead = by_source[offset]
        assert (expected_codes[name], lane.settings.topic, 0) == (
            dead.letter.code,
            dead.letter.source_topic,
            dead.letter.source_partition,
        )
        assert dead.letter.reason, name
        assert value == dead.letter.value  # the exact bytes, so a replay can send them again
    assert "astralog_v2" in by_source[sent.bad["unknown_dialect"][0]].letter.reason
    assert "must be an array" in by_source[sent.bad["bad_body"][0]].letter.reason


async def test_dlq_list_shows_dead_letters_without_consuming_them(lane: Lane, sent: Sent) -> None:
    out = await lane.cli("dlq", "list")
    lines = out.splitlines()
    assert lines[0].startswith("dlq p:off")
    rows = lines[1:]
    assert len(sent.bad) == len(rows)
    for offset, _ in sent.bad.values():
        assert sum(f" 0:{offset} " in row for row in rows) == 1, out
    (future,) = [row for row in rows if f" 0:{sent.bad['unknown_dialect'][0]} " in row]
    assert "unknown_dialect" in future and "astralog_v2" in future and sent.fixable_project in future
    (garbage,) = [row for row in rows if f" 0:{sent.bad['garbage'][0]} " in row]
    assert "bad_envelope" in garbage and "not a Millrace envelope" in garbage

    assert out == await lane.cli("dlq", "list")  # nothing was consumed away
    only = (await lane.cli("dlq", "list", "--code", "bad_envelope")).splitlines()[1:]
    assert len(only) == 2 and all("bad_envelope" in row for row in only)
    assert len((await lane.cli("dlq", "list", "--limit", "1")).splitlines()[1:]) == 1


async def test_dlq_replay_resends_exact_bytes_once_and_a_fixed_worker_stores_them(
    lane: Lane, stack: Stack, sent: Sent, monkeypatch: pytest.MonkeyPatch
) -> None:
    dry = await lane.cli("dlq", "replay", "--dry-run")
    assert f"would replay {len(sent.bad)} dead letter(s)" in dry, dry
    assert await lane.replayed_on_raw() == []

    # The fix: this worker learns the dialect (as a new deploy would), then the operator replays.
    monkeypatch.setitem(PARSERS, "astralog_v2", PARSERS["astralog"])
    out = await lane.cli("dlq", "replay", "--code", "unknown_dialect")
    assert "replayed 1 dead letter(s)" in out and "0 skipped" in out, out
    (dead,) = [d for d in await lane.dead_letters() if d.letter.code == "unknown_dialect"]
    origin = f"{lane.settings.dlq_topic}:{dead.partition}:{dead.offset}".encode()
    assert [(origin, sent.bad["unknown_dialect"][1])] == await lane.replayed_on_raw()
    assert await stack.wait_rows(sent.fixable_project, 1) == 1

    again = await lane.cli("dlq", "replay", "--code", "unknown_dialect")
    assert "replayed 0 dead letter(s)" in again and "1 skipped as replayed before" in again, again
    assert len(await lane.replayed_on_raw()) == 1
    assert await stack.wait_rows(sent.fixable_project, 1) == 1

    # `list` shows where it went: the raw partition:offset that replay reported.
    went_to = re.search(r"-> raw (\d+:\d+)", out)
    assert went_to, out
    (listed,) = (await lane.cli("dlq", "list", "--code", "unknown_dialect")).splitlines()[1:]
    assert f" {went_to.group(1)} " in listed, listed
    rest = await lane.cli("dlq", "replay", "--dry-run")
    assert f"would replay {len(sent.bad) - 1} dead letter(s)" in rest and "1 skipped" in rest, rest


async def test_flood_guard_stops_the_worker_and_a_restart_after_the_fix_loses_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    lane = await Lane.open(
        stack,
        "floodtest",
        partitions=1,
        dlq_flood_threshold=5,
        dlq_flood_ratio=0.5,
        dlq_flood_window_s=60,
    )
    project = f"flood-{uuid.uuid4().hex[:8]}"
    health = None
    try:
        # A bad deploy: the gateway now writes a dialect the workers do not know.
        values = [envelope(project, "before 0"), envelope(project, "before 1")]
        values += [envelope(project, f"flood {i}", dialect="astralog_v3") for i in range(30)]
        values += [envelope(project, "between 0"), envelope(project, "between 1")]
        for value in values:
            await lane.send(value)

        with structlog.testing.capture_logs() as logs:
            lane.start_worker()
            assert lane.flood is not None
            health = TestClient(TestServer(read_app(lane.settings, lane.flood)))
            await health.start_server()

            async def tripped() -> bool:
                return lane.flood is not None and lane.flood.tripped is not None

            await wait_for(tripped)
        halted = [e for e in logs if e["event"] == "dlq_flood"]
        assert [(e["log_level"], e["code"]) for e in halted] == [("error", flood.FLOOD_CODE)]

        resp = await health.get("/internal/health")
        body = await resp.json()
        assert (resp.status, body["status"], body["code"]) == (503, "halted", flood.FLOOD_CODE)

        # Stopped rather than dead-lettering everything, and not reading on either.
        await lane.send(envelope(project, "after the trip"))
        await asyncio.sleep(1.5)
        before_fix = len(await lane.dead_letters())
        assert before_fix < 5
        ((late,),) = stack.query(
            "SELECT count() FROM logs WHERE project = {p:String} AND message = 'after the trip'", p=project
        )
        assert late == 0

        # The fix is deployed and the worker restarted: it re-reads what it held back.
        await lane.stop_worker()
        monkeypatch.setitem(PARSERS, "astralog_v3", PARSERS["astralog"])
        lane.start_worker()
        expected = len(values) + 1 - before_fix
        assert expected == await stack.wait_rows(project, expected)
        assert before_fix == len(await lane.dead_letters())
        assert lane.flood is not None and lane.flood.tripped is None
        ((duplicates,),) = stack.query(
            "SELECT count() - uniqExact(message) FROM logs WHERE project = {p:String}", p=project
        )
        assert duplicates == 0
    finally:
        if health is not None:
            await health.close()
        await lane.close()


def test_flood_guard_needs_both_many_dead_letters_and_a_large_share() -> None:
    now = [0.0]
    guard = flood.FloodGuard(threshold=10, ratio=0.5, window_s=60, clock=lambda: now[0])
    assert not guard.check(messages=1000, dead=9)  # many messages, few dead: fine
    assert not guard.check(messages=100, dead=100)  # 109 of 1100: a trickle among healthy traffic
    now[0] = 61.0  # the window moved on: the old batches no longer count
    assert not guard.check(messages=9, dead=9)  # most are dead, but only 9
    assert guard.check(messages=1, dead=1)  # 10 of 10
    assert guard.tripped is not None and guard.tripped["code"] == flood.FLOOD_CODE
    assert guard.check(messages=1, dead=0)  # and it stays tripped
    assert not flood.FloodGuard(threshold=0, ratio=0.5, window_s=60).check(10, 10)  # 0 disables
