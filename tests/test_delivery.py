"""Acknowledged means stored, exactly once: real processes, real failures.

Each scenario drives continuous load from this test, breaks one part for real (a
paused or stopped broker, SIGKILL or SIGTERM to a `millrace` process, an insert that
fails at the store boundary), and then checks every acknowledged log against the
stored rows by a unique message id: stored == acknowledged, no duplicates, nothing
that was never sent.

Processes get their own MILLRACE_HOME (so their own chDB path), topic and consumer
group on the session broker. chDB allows one engine path per process, so this test
never opens a worker's path while the worker lives: it asks the worker's read port
while waiting, and opens the path in a short child process once the worker is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from clickhouse_connect.driver.client import Client

from gateway.app import create_app
from gateway.server import SERVER_OPTIONS
from millrace import internal, keys, store
from millrace.config import Settings
from millrace.kafka.topics import ensure_topics
from ops.broker import LocalBroker
from tests import bodies
from tests.conftest import Gateway, Stack, free_port, free_port_pair, kafka_env
from tests.seeds import CurlExample, curl_examples, http_examples, with_key
from workers import pipeline
from workers.pipeline import Worker
from workers.steps import TableBatch, insert_table

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
LOGS_PER_REQUEST = 5
SEED = int(os.environ.get("MILLRACE_TEST_SEED", time.time_ns() % 1_000_000))


def drain_body(ids: list[str]) -> bytes:
    return bodies.drain_body(ids, project_id="delivery", service="delivery")


def report(scenario: str, **numbers: object) -> None:
    """One line per scenario with the counts (visible with -s or -rP)."""
    print(f"\ndelivery[{scenario}] seed={SEED} " + " ".join(f"{k}={v}" for k, v in numbers.items()))


@dataclass
class Load:
    """Bounded continuous AstraLog load: every log carries a unique id as its message."""

    url: str
    key: str
    prefix: str
    concurrency: int = 4
    pause_s: float = 0.01
    sent: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    _next: int = 0

    def _ids(self) -> list[str]:
        start, self._next = self._next, self._next + LOGS_PER_REQUEST
        return [f"{self.prefix}-{n}" for n in range(start, self._next)]

    async def run(self, stop: asyncio.Event, max_requests: int = 20_000, max_s: float = 120) -> None:
        deadline = time.monotonic() + max_s
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def sender() -> None:
                while (
                    not stop.is_set()
                    and time.monotonic() < deadline
                    and sum(self.outcomes.values()) < max_requests
                ):
                    ids = self._ids()
                    self.sent.update(ids)
                    try:
                        async with session.post(
                            self.url + "/v1/drain", data=drain_body(ids), headers={"Authorization": self.key}
                        ) as resp:
                            await resp.read()
                            self.outcomes[str(resp.status)] += 1
                            if resp.status == 200:
                                self.acked.update(ids)
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        # The gateway died mid-request or is not listening: the outcome of these
                        # ids is unknown, so they count as sent but never as acknowledged.
                        self.outcomes[type(exc).__name__] += 1
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(self.pause_s)

            await asyncio.gather(*(sender() for _ in range(self.concurrency)))


def check_exactly_once(load: Load, stored: Counter[str]) -> dict[str, int]:
    duplicates = {m: c for m, c in stored.items() if c > 1}
    lost = load.acked - stored.keys()
    strays = stored.keys() - load.sent
    assert (len(lost), sorted(lost)[:5]) == (0, []), "acknowledged logs missing from the store"
    assert (len(duplicates), sorted(duplicates.items())[:5]) == (0, []), "logs stored more than once"
    assert strays == set(), "rows that were never sent"
    return {
        "sent": len(load.sent),
        "acked": len(load.acked),
        "stored": sum(stored.values()),
        "duplicates": len(duplicates),
        "lost": len(lost),
    }


# -- separate processes ----------------------------------------------------------------------

_READ_STORE = """
import json, sys
from millrace import store
from millrace.config import Settings
client = store.connect(Settings.from_env(), create_database=False)
rows = client.query(
    "SELECT message, count() FROM logs WHERE project = {p:String} GROUP BY message",
    parameters={"p": sys.argv[1]},
).result_rows
print(json.dumps(dict(rows)))
"""


@dataclass
class Proc:
    role: str
    popen: subprocess.Popen[bytes]
    log: Path

    def log_has(self, event: str) -> bool:
        return f'"event":"{event}"' in self.log.read_text(errors="replace").replace(": ", ":")

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    async def wait(self, timeout_s: float = 60) -> int:
        return await asyncio.to_thread(self.popen.wait, timeout_s)


class Cluster:
    """`millrace gateway` and `millrace worker` processes on the session broker, with their own
    home (chDB path), topic and consumer group."""

    def __init__(self, kafka: Settings, tmp: Path) -> None:
        run = uuid.uuid4().hex[:10]
        self.tmp = tmp
        self.env = {
            **os.environ,
            "MILLRACE_HOME": str(tmp / "home"),
            **kafka_env(kafka),
            "MILLRACE_TOPIC": f"delivery.{run}",
            "MILLRACE_DLQ_TOPIC": f"delivery.{run}.dlq",
            "MILLRACE_KEYS_TOPIC": kafka.keys_topic,
            "MILLRACE_CONSUMER_GROUP": f"delivery-{run}",
            "MILLRACE_PORT": str(free_port()),
            "MILLRACE_WORKER_QUERY_PORT": str(free_port()),
            "MILLRACE_BATCH_AGE_MS": "200",
            "MILLRACE_LOG_LEVEL": "info",
            "MILLRACE_LOG_FORMAT": "json",
        }
        self.settings = Settings.from_env(self.env)
        self.url = f"http://127.0.0.1:{self.settings.port}"
        self.worker: Proc | None = None
        self.gateway: Proc | None = None
        self.started: list[Proc] = []

    def _spawn(self, role: str) -> Proc:
        log = self.tmp / f"{role}-{sum(p.role == role for p in self.started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", role],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(role, popen, log)
        self.started.append(proc)
        return proc

    def start_worker(self) -> Proc:
        self.worker = self._spawn("worker")
        return self.worker

    def start_gateway(self) -> Proc:
        self.gateway = self._spawn("gateway")
        return self.gateway

    async def _until(
        self, what: str, ok: Callable[[], Awaitable[bool]], proc: Proc, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not await ok():
            if proc.popen.poll() is not None:
                raise AssertionError(
                    f"{proc.role} exited ({proc.popen.returncode}):\n{proc.log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not within {timeout_s}s:\n{proc.log.read_text()[-3000:]}")
            await asyncio.sleep(0.1)

    async def _get_ok(self, url: str) -> bool:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s, s.get(url) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def gateway_ready(self, timeout_s: float = 60) -> None:
        assert self.gateway is not None
        await self._until(
            "gateway /ready", lambda: self._get_ok(self.url + "/ready"), self.gateway, timeout_s
        )

    async def worker_consuming(self, timeout_s: float = 60) -> None:
        """The current worker joined the group and owns partitions (a SIGKILLed member is
        only evicted after the session timeout, so this can take ~10 s after a restart)."""
        worker = self.worker
        assert worker is not None

        async def assigned() -> bool:
            return worker.log_has("partitions_assigned")

        await self._until("worker partition assignment", assigned, worker, timeout_s)

    async def worker_stats(self, project: str) -> dict[str, Any]:
        url = f"{self.settings.worker_query_url}/internal/v1/stats?project={project}"
        headers = {internal.HEADER: internal.ensure_token(self.settings)}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.get(url, headers=headers) as r,
        ):
            assert r.status == 200, await r.text()
            stats: dict[str, Any] = await r.json()
            return stats

    async def drained(self, project: str, expected: int, timeout_s: float = 40) -> int:
        """Wait until the worker stored at least `expected` logs of `project` (asked through its port)."""
        assert self.worker is not None
        deadline = time.monotonic() + timeout_s
        stored = -1
        while time.monotonic() < deadline:
            if await self._get_ok(f"{self.settings.worker_query_url}/internal/health"):
                stored = int((await self.worker_stats(project))["logs"])
                if stored >= expected:
                    return stored
            await asyncio.sleep(0.2)
        return stored

    def stored(self, project: str) -> Counter[str]:
        """Rows per message id, read from the worker's chDB path once no worker holds it."""
        assert all(p.popen.poll() is not None for p in self.started if p.role == "worker")
        done = subprocess.run(
            [sys.executable, "-c", _READ_STORE, project],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return Counter({str(m): int(c) for m, c in json.loads(done.stdout.strip().splitlines()[-1]).items()})

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait(10)


@pytest.fixture
async def cluster(kafka: Settings, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(kafka, tmp_path)
    await ensure_topics(c.settings)
    try:
        yield c
    finally:
        c.kill_all()


async def new_key(settings: Settings, project: str) -> str:
    _, token = await keys.create(settings, project, frozenset(keys.ALL_SCOPES))
    return token


async def run_load(load: Load) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    # Let it reach a steady state before anything breaks.
    await asyncio.sleep(1.0)
    return stop, task


async def finish(
    cluster: Cluster, load: Load, project: str, stop: asyncio.Event, task: asyncio.Task[None]
) -> Counter[str]:
    """Stop the load, let the worker store what was acknowledged, stop both gracefully, read the store."""
    stop.set()
    await task
    assert cluster.gateway is not None and cluster.worker is not None
    await cluster.drained(project, len(load.acked))
    cluster.gateway.signal(signal.SIGTERM)
    cluster.worker.signal(signal.SIGTERM)
    assert await cluster.gateway.wait() == 0, cluster.gateway.log.read_text()[-3000:]
    assert await cluster.worker.wait() == 0, cluster.worker.log.read_text()[-3000:]
    return cluster.stored(project)


WORKER_KILLS = 4
GATEWAY_KILLS = 3


async def test_worker_sigkill_under_load_stores_every_acknowledged_log_exactly_once(cluster: Cluster) -> None:
    """SIGKILL the worker at random moments under load, restart it each time: stored == acknowledged."""
    rng = random.Random(SEED)
    project = f"worker-kill-{uuid.uuid4().hex[:6]}"
    key = await new_key(cluster.settings, project)
    cluster.start_worker()
    cluster.start_gateway()
    await cluster.gateway_ready()
    await cluster.worker_consuming()
    load = Load(cluster.url, key, "wk")
    stop, task = await run_load(load)

    kills = 0
    for _ in range(WORKER_KILLS):
        await cluster.worker_consuming()
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        assert cluster.worker is not None
        cluster.worker.signal(signal.SIGKILL)
        assert await cluster.worker.wait() == -signal.SIGKILL
        kills += 1
        cluster.start_worker()
    await cluster.worker_consuming()
    await asyncio.sleep(1.0)

    stored = await finish(cluster, load, project, stop, task)
    numbers = check_exactly_once(load, stored)
    assert numbers["acked"] >= 1000, load.outcomes  # the load really ran through the kills
    report("worker-sigkill", kills=kills, requests=dict(load.outcomes), **numbers)


async def test_gateway_sigkill_under_load_loses_nothing_it_acknowledged(cluster: Cluster) -> None:
    """Every request that got a success answer before the gateway was SIGKILLed is stored, once."""
    rng = random.Random(SEED + 1)
    project = f"gateway-kill-{uuid.uuid4().hex[:6]}"
    key = await new_key(cluster.settings, project)
    cluster.start_worker()
    cluster.start_gateway()
    await cluster.gateway_ready()
    await cluster.worker_consuming()
    load = Load(cluster.url, key, "gk")
    stop, task = await run_load(load)

    kills = 0
    for _ in range(GATEWAY_KILLS):
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        assert cluster.gateway is not None
        cluster.gateway.signal(signal.SIGKILL)
        assert await cluster.gateway.wait() == -signal.SIGKILL
        kills += 1
        cluster.start_gateway()
        await cluster.gateway_ready()
    await asyncio.sleep(1.0)

    stored = await finish(cluster, load, project, stop, task)
    numbers = check_exactly_once(load, stored)
    assert numbers["acked"] >= 500, load.outcomes
    # Killed mid-request: some requests had no answer at all (their logs may or may not be stored).
    assert sum(n for outcome, n in load.outcomes.items() if not outcome.isdigit()) > 0, load.outcomes
    report("gateway-sigkill", kills=kills, requests=dict(load.outcomes), **numbers)


async def test_sigterm_to_gateway_and_worker_under_load_loses_nothing_acknowledged(cluster: Cluster) -> None:
    """A graceful stop of both processes under load: both exit 0, every acknowledged log is stored once."""
    project = f"graceful-{uuid.uuid4().hex[:6]}"
    key = await new_key(cluster.settings, project)
    cluster.start_worker()
    cluster.start_gateway()
    await cluster.gateway_ready()
    await cluster.worker_consuming()
    load = Load(cluster.url, key, "gt")
    stop, task = await run_load(load)

    for _ in range(2):
        assert cluster.gateway is not None and cluster.worker is not None
        # Both at once while load continues: the gateway finishes in-flight requests and
        # flushes its producer, the worker stores and commits what it consumed.
        cluster.gateway.signal(signal.SIGTERM)
        cluster.worker.signal(signal.SIGTERM)
        assert await cluster.gateway.wait() == 0, cluster.gateway.log.read_text()[-3000:]
        assert await cluster.worker.wait() == 0, cluster.worker.log.read_text()[-3000:]
        assert cluster.worker.log_has("worker_stopped")
        cluster.start_worker()
        cluster.start_gateway()
        await cluster.gateway_ready()
        await cluster.worker_consuming()
        await asyncio.sleep(1.0)

    stored = await finish(cluster, load, project, stop, task)
    numbers = check_exactly_once(load, stored)
    assert numbers["acked"] >= 500, load.outcomes
    report("graceful-sigterm", stops=3, requests=dict(load.outcomes), **numbers)


# -- Kafka down: a dedicated broker, paused and then really stopped --------------------------


def dialect_requests(key: str) -> dict[str, tuple[CurlExample, Callable[[Any], bool]]]:
    """One ingest request per dialect, and how that dialect's 503 body must look."""
    (astralog,) = curl_examples("001")
    (tg2g,) = http_examples("000")
    goodlogs = next(e for e in curl_examples("003") if e.path == "/v1/logs")
    timberlogs = next(e for e in curl_examples("004") if e.headers.get("Content-Type") == "application/json")
    dynatrace = CurlExample(
        "POST",
        "/api/v2/logs/ingest",
        {"Authorization": f"Api-Token {key}", "Content-Type": "application/json; charset=utf-8"},
        b'[{"content": "kafka is down", "log.source": "delivery"}]',
    )
    return {
        "astralog": (with_key(astralog, key), lambda b: (b["status"], b["code"]) == ("error", "unavailable")),
        "tg2g": (
            with_key(tg2g, key),
            lambda b: b["error"]["code"] == "unavailable" and b["error"]["message"],
        ),
        "goodlogs": (with_key(goodlogs, key), lambda b: b["error"]["code"] == "UNAVAILABLE"),
        "timberlogs": (with_key(timberlogs, key), lambda b: b["code"] == "UNAVAILABLE" and b["error"]),
        "dynatrace": (dynatrace, lambda b: b["error"]["code"] == 503 and b["error"]["message"]),
    }


@dataclass
class Answer:
    status: int
    body: Any
    retry_after: str | None
    seconds: float


async def send(session: aiohttp.ClientSession, url: str, ex: CurlExample) -> Answer:
    started = time.monotonic()
    async with session.request(ex.method, url + ex.path, data=ex.body, headers=ex.headers) as resp:
        raw = await resp.read()
        return Answer(
            resp.status,
            orjson.loads(raw) if raw else None,
            resp.headers.get("Retry-After"),
            time.monotonic() - started,
        )


@pytest.fixture
def dedicated_broker(broker: LocalBroker, tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own (others share the session one), reusing the fetched jars."""
    settings = Settings.from_env(
        {
            "MILLRACE_HOME": str(tmp_path / "home"),
            "MILLRACE_KAFKA_PORT": str(free_port_pair()),
            "MILLRACE_PORT": str(free_port()),
            "MILLRACE_BATCH_AGE_MS": "200",
            "MILLRACE_LOG_LEVEL": "warning",
        }
    )
    local = LocalBroker(settings)
    local.lib_dir = broker.lib_dir
    local.start()
    try:
        yield local
    finally:
        pid = local.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # a failed assertion may leave it paused
        local.stop()


async def test_kafka_down_answers_503_with_retry_after_and_recovers_without_restart(
    stack: Stack, dedicated_broker: LocalBroker
) -> None:
    """Broker paused (SIGSTOP) and then really stopped: every dialect answers 503 + Retry-After in
    its own error format within 10 s, never success; the same gateway recovers when Kafka returns,
    and what it acknowledged is stored once."""
    # The dedicated broker, but the session's chDB engine (one engine path per process).
    # Its own topic name too: the session's store holds watermarks of the session's topic.
    project = f"kafka-down-{uuid.uuid4().hex[:6]}"
    settings = replace(
        dedicated_broker.settings, clickhouse_dsn=stack.settings.clickhouse_dsn, topic=f"millrace.{project}"
    )
    await ensure_topics(settings)
    key = await new_key(settings, project)
    client = store.connect(settings)
    stop_worker = asyncio.Event()
    worker = asyncio.create_task(pipeline.run(settings, client, stop_worker))
    server = TestServer(create_app(settings), port=settings.port)
    await server.start_server(**SERVER_OPTIONS)
    url = f"http://127.0.0.1:{server.port}"
    acked: list[str] = []
    answers: Counter[int] = Counter()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:

        async def drain(tag: str) -> Answer:
            tag = f"kd-{tag}"
            answer = await send(
                session, url, CurlExample("POST", "/v1/drain", {"Authorization": key}, drain_body([tag]))
            )
            answers[answer.status] += 1
            if answer.status == 200:
                acked.append(tag)
            return answer

        async def recovered(phase: str, timeout_s: float) -> float:
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < timeout_s:
                n += 1
                answer = await drain(f"{phase}-retry-{n}")
                if answer.status == 200:
                    return time.monotonic() - started
                assert answer.status == 503, answer
                await asyncio.sleep(0.5)
            raise AssertionError(f"the gateway did not recover within {timeout_s}s after {phase}")

        assert (await drain("before")).status == 200
        pid = dedicated_broker.pid()
        assert pid is not None

        outages: dict[str, float] = {}
        for phase in ("paused", "stopped"):
            if phase == "paused":
                os.kill(pid, signal.SIGSTOP)
            else:
                await asyncio.to_thread(dedicated_broker.stop)
            requests = dialect_requests(key)
            results = await asyncio.gather(
                *(send(session, url, ex) for ex, _ in requests.values()),
                *(drain(f"{phase}-{i}") for i in range(3)),
            )
            for (dialect, (_, shape)), answer in zip(requests.items(), results, strict=False):
                assert (dialect, answer.status) == (dialect, 503), answer
                assert answer.retry_after is not None and int(answer.retry_after) > 0, (dialect, answer)
                assert shape(answer.body), (dialect, answer.body)
            assert all(a.status == 503 for a in results), results
            assert max(a.seconds for a in results) < 8, [round(a.seconds, 2) for a in results]
            outages[phase] = max(a.seconds for a in results)

            if phase == "paused":
                os.kill(pid, signal.SIGCONT)
                recovery = await recovered(phase, 30)
            else:
                await asyncio.to_thread(dedicated_broker.start)
                recovery = await recovered(phase, 60)
            outages[f"{phase}_recovery_s"] = recovery
        assert (await drain("after")).status == 200

        # Acknowledged before, between and after the outages: stored, once. (A 503 request may
        # still land late, as the README says, so only acknowledged ones are counted.)
        deadline = time.monotonic() + 30
        while True:
            stored = Counter(
                str(m)
                for (m,) in stack.query("SELECT message FROM logs WHERE project = {p:String}", p=project)
            )
            if set(acked) <= stored.keys() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert set(acked) - stored.keys() == set()
        # The seed examples were sent once per outage with the same text: count only our tags.
        assert {m: c for m, c in stored.items() if c > 1 and m.startswith("kd-")} == {}
        report(
            "kafka-down",
            answers=dict(answers),
            acked=len(acked),
            stored=sum(stored.values()),
            **{k: round(v, 2) for k, v in outages.items()},
        )
    finally:
        await session.close()
        await server.close()
        stop_worker.set()
        await asyncio.wait_for(worker, 60)
        client.close()


# -- store failures at the insert boundary (in-process worker, real broker and engine) --------


class Crash(BaseException):
    """Stands in for the process dying right after an insert landed, before the commit."""


@dataclass
class FlakyStore:
    """The insert boundary with failures injected: `fail_next` failures, or every insert until
    `fail_until` (monotonic); `landed` makes a failure happen after the rows were stored (a lost
    answer), `crash_after_insert` dies after one real insert."""

    fail_next: int = 0
    fail_until: float = 0.0
    landed: bool = False
    crash_after_insert: bool = False
    attempts: list[tuple[float, str, int, bool]] = field(default_factory=list)  # (time, token, rows, ok)

    def __call__(self, client: Client, table: TableBatch, token: str) -> None:
        rows = table.rows
        failing = self.fail_next > 0 or time.monotonic() < self.fail_until
        if failing:
            self.fail_next = max(0, self.fail_next - 1)
            if self.landed:
                insert_table(client, table, token)
            self.attempts.append((time.monotonic(), token, rows, False))
            raise ConnectionError("injected: the store is unreachable")
        insert_table(client, table, token)
        self.attempts.append((time.monotonic(), token, rows, True))
        if self.crash_after_insert:
            self.crash_after_insert = False
            raise Crash


@dataclass
class InProcessWorker:
    settings: Settings
    client: Client
    flaky: FlakyStore
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Worker] | None = None
    pipeline: Worker | None = None

    def start(self) -> None:
        def seen(p: Worker) -> None:
            self.pipeline = p

        self.stop = asyncio.Event()
        self.pipeline = None
        self.task = asyncio.create_task(
            pipeline.run(self.settings, self.client, self.stop, insert=self.flaky, on_start=seen)
        )

    async def assigned(self) -> Worker:
        deadline = time.monotonic() + 30
        while self.pipeline is None or not self.pipeline.consumer.assignment():
            assert time.monotonic() < deadline, "the worker got no partitions"
            assert self.task is not None and not self.task.done(), self.task
            await asyncio.sleep(0.05)
        return self.pipeline

    async def halt(self) -> None:
        assert self.task is not None
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


@pytest.fixture
async def flaky_worker(stack: Stack) -> AsyncIterator[tuple[InProcessWorker, str, Load]]:
    """A worker with a FlakyStore on its own topic and group, the session engine, and an
    in-process gateway producing to that topic."""
    run = uuid.uuid4().hex[:10]
    settings = replace(
        stack.settings,
        topic=f"delivery.{run}",
        dlq_topic=f"delivery.{run}.dlq",
        consumer_group=f"delivery-{run}",
        port=free_port(),
    )
    await ensure_topics(settings)
    project = f"store-fail-{run[:6]}"
    key = await new_key(settings, project)
    client = store.connect(settings)
    server = TestServer(create_app(settings), port=settings.port)
    await server.start_server(**SERVER_OPTIONS)
    worker = InProcessWorker(settings, client, FlakyStore())
    try:
        yield (
            worker,
            project,
            Load(f"http://127.0.0.1:{server.port}", key, run[:4], concurrency=2, pause_s=0.02),
        )
    finally:
        await server.close()
        if worker.task is not None and not worker.task.done():
            await worker.halt()
        client.close()


async def committed(p: Worker) -> dict[int, int | None]:
    return {tp.partition: await p.consumer.committed(tp) for tp in sorted(p.consumer.assignment())}


def stored_ids(stack: Stack, project: str) -> Counter[str]:
    return Counter(
        str(m) for (m,) in stack.query("SELECT message FROM logs WHERE project = {p:String}", p=project)
    )


async def wait_stored(stack: Stack, project: str, want: set[str], timeout_s: float = 30) -> Counter[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        stored = stored_ids(stack, project)
        if want <= stored.keys() or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.2)


async def stop_and_check(
    stack: Stack,
    worker: InProcessWorker,
    project: str,
    load: Load,
    stop: asyncio.Event,
    task: asyncio.Task[None],
) -> dict[str, int]:
    """Stop the load, wait until the acknowledged logs are stored, check each is stored once,
    stop the worker; the numbers for the report."""
    stop.set()
    await task
    numbers = check_exactly_once(load, await wait_stored(stack, project, load.acked))
    await worker.halt()
    return numbers


async def test_store_outage_blocks_and_pauses_without_committing_then_resumes_exactly_once(
    stack: Stack, flaky_worker: tuple[InProcessWorker, str, Load]
) -> None:
    """Inserts fail for longer than the group session timeout, half of them after the rows
    landed: the worker retries the same batch with growing delays, pauses its partitions,
    consumes and commits nothing meanwhile, keeps its group membership, and once the store
    is back every acknowledged log is stored exactly once."""
    worker, project, load = flaky_worker
    flaky = worker.flaky
    worker.start()
    p = await worker.assigned()
    stop, task = await run_load(load)
    await wait_stored(stack, project, set(load.acked))

    outage_s = 12.0  # longer than aiokafka's 10 s session timeout
    flaky.landed = True  # the first failed attempt really stores its rows: only the token stops a duplicate
    flaky.fail_until = time.monotonic() + outage_s
    member, generation = p.consumer._coordinator.member_id, p.consumer._coordinator.generation
    deadline = time.monotonic() + 5
    while not any(not ok for _, _, _, ok in flaky.attempts):
        assert time.monotonic() < deadline, "no insert was attempted during the outage"
        await asyncio.sleep(0.02)
    flaky.landed = False  # later attempts fail before storing (store unreachable)
    await asyncio.sleep(0.5)
    during = await committed(p)
    paused = p.consumer.paused()
    positions = {tp.partition: await p.consumer.position(tp) for tp in p.consumer.assignment()}
    await asyncio.sleep(outage_s - 2)
    assert p.consumer.paused() == p.consumer.assignment() == paused != set()
    assert await committed(p) == during, "committed while the store was failing"
    assert {tp.partition: await p.consumer.position(tp) for tp in p.consumer.assignment()} == positions
    # The first failure stored its rows: the batch is retried with the same token (the engine
    # drops the repeat), so one batch is held from then on.
    failed = [a for a in flaky.attempts if not a[3]][1:]
    assert len({token for _, token, _, _ in failed}) == 1, "the failing batch changed between retries"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(failed)]
    assert len(gaps) >= 3 and all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps

    while p.consumer.paused():
        if time.monotonic() > flaky.fail_until + 10:
            break
        await asyncio.sleep(0.1)
    assert p.consumer.paused() == set(), "partitions stay paused after the store came back"
    retried = next(a for a in flaky.attempts if a[3] and a[0] > failed[-1][0])
    assert retried[1] == failed[0][1], "the first insert after the outage is not the held batch"
    assert (p.consumer._coordinator.member_id, p.consumer._coordinator.generation) == (member, generation)
    await asyncio.sleep(1.0)
    stop.set()
    await task
    stored = await wait_stored(stack, project, load.acked)
    assert any(c is not None and c > (during[pt] or 0) for pt, c in (await committed(p)).items())
    numbers = check_exactly_once(load, stored)
    await worker.halt()
    report("store-outage", failed_inserts=len(failed), retry_gaps_s=[round(g, 2) for g in gaps], **numbers)


async def test_fail_n_times_and_crash_between_insert_and_commit_store_exactly_once(
    stack: Stack, flaky_worker: tuple[InProcessWorker, str, Load]
) -> None:
    """Inserts fail N times (retried, no loss); then the worker dies right after an insert landed
    and before its commit: the restarted worker re-reads those offsets and skips them by the
    stored-offset watermark, although its batches are cut differently."""
    worker, project, load = flaky_worker
    flaky = worker.flaky
    flaky.fail_next = 4
    worker.start()
    p = await worker.assigned()
    stop, task = await run_load(load)
    await wait_stored(stack, project, set(load.acked))
    assert sum(not a[3] for a in flaky.attempts) == 4
    assert flaky.fail_next == 0

    flaky.crash_after_insert = True
    assert worker.task is not None
    with pytest.raises(Crash):
        await asyncio.wait_for(worker.task, 30)
    crashed_at = flaky.attempts[-1]
    assert crashed_at[3]  # that insert landed; its offsets were never committed

    worker.start()
    p = await worker.assigned()
    await asyncio.sleep(1.0)
    numbers = await stop_and_check(stack, worker, project, load, stop, task)
    assert p.stats["skipped_stored"] > 0, "the restarted worker did not meet the stored offsets"
    report("fail-n-and-crash", skipped_stored=p.stats["skipped_stored"], **numbers)


async def test_an_insert_that_landed_but_answered_an_error_is_not_stored_twice(
    stack: Stack, flaky_worker: tuple[InProcessWorker, str, Load]
) -> None:
    """Inserts that store their rows and then fail (a view or the answer failing after the part
    was written) are not retried into duplicates: the retry carries the same token."""
    worker, project, load = flaky_worker
    flaky = worker.flaky
    flaky.fail_next, flaky.landed = 3, True
    worker.start()
    p = await worker.assigned()
    stop, task = await run_load(load)
    await asyncio.sleep(3.0)
    numbers = await stop_and_check(stack, worker, project, load, stop, task)
    assert sum(not a[3] for a in flaky.attempts) == 3
    assert p.stats["batches"] >= 3
    report("landed-then-failed", **numbers)


# -- a raw topic deleted and re-created under the same name ---------------------------------------


async def test_a_recreated_topic_is_not_skipped_for_the_old_topics_watermarks(
    stack: Stack, gateway_factory: Callable[..., Awaitable[Gateway]]
) -> None:
    """The store remembers offsets of a topic's earlier life; the new topic (offsets from 0)
    must still be stored in full, not skipped as 'already stored'."""
    tag = uuid.uuid4().hex[:8]
    settings = replace(stack.settings, topic=f"millrace.recreated-{tag}", consumer_group=f"recreated-{tag}")
    await ensure_topics(settings)
    # The earlier life: rows at high offsets on every partition (the view keeps their watermarks).
    partitions = list(range(settings.partitions))
    columns = {
        "project": [f"old-{tag}" for _ in partitions],
        "message": [f"old-life-{tag}-{p}" for p in partitions],
        "kafka_topic": [settings.topic for _ in partitions],
        "kafka_partition": partitions,
        "kafka_offset": [10_000 for _ in partitions],
    }
    await asyncio.to_thread(
        stack.client.insert, "logs", list(columns.values()), column_names=list(columns), column_oriented=True
    )
    tenant = await stack.tenant(f"recreated-{tag}")
    gateway = await gateway_factory(topic=settings.topic, consumer_group=settings.consumer_group)
    await gateway.wait_for_key(tenant.key)
    stop = asyncio.Event()
    worker = asyncio.create_task(pipeline.run(settings, stack.client, stop))
    try:
        for i in range(8):
            async with stack.session.post(
                gateway.url + "/v1/drain",
                data=drain_body([f"new-life-{i}"]),
                headers={"Authorization": tenant.key},
            ) as resp:
                assert resp.status == 200
        assert await stack.wait_rows(tenant.project, 8) == 8
    finally:
        stop.set()
        await asyncio.wait_for(worker, 60)
