"""Shared fixtures: one real Kafka broker and one real ClickHouse engine (chDB) per test session.

The worker and gateway run in the test's own event loop, so a test can drive HTTP
and then read ClickHouse directly through the worker's own client: chDB allows one
engine per data path per process, and here that process is the test run itself.
Tests that need separate processes (`millrace up`) use their own state directory.
"""

from __future__ import annotations

import asyncio
import socket
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from clickhouse_connect.driver.client import Client

from gateway.app import KEYS, create_app
from gateway.server import server_options
from millrace import keys, store
from millrace.config import Settings
from millrace.kafka.topics import client_options, ensure_topics
from ops.broker import LocalBroker
from tests import backends
from workers import pipeline
from workers.server import read_app


def shipped_packages() -> set[str]:
    """The top-level packages the wheel is made of (pyproject.toml's package list)."""
    config = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    return {pattern.rstrip("*") for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_pair() -> int:
    """A port p with p+1 also free (the broker's controller listens on kafka_port + 1)."""
    for _ in range(50):
        p = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def free_port_run(n: int) -> int:
    """A port p with p+1 .. p+n-1 free too (three local brokers take six ports from p)."""
    for _ in range(100):
        p = free_port()
        if p + n > 65536:
            continue
        try:
            for q in range(p + 1, p + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue
    raise RuntimeError(f"no run of {n} free ports")


def kafka_env(settings: Settings) -> dict[str, str]:
    """The KAFKA_* variables that take a process with a home of its own to the broker `settings`
    reaches, with the same credentials (the local broker's live in its home)."""
    options = client_options(settings)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": options["bootstrap_servers"],
        "KAFKA_SECURITY_PROTOCOL": options["security_protocol"],
    }
    if "sasl_mechanism" in options:
        env["KAFKA_SASL_MECHANISM"] = options["sasl_mechanism"]
        env["KAFKA_SASL_USERNAME"] = options["sasl_plain_username"]
        env["KAFKA_SASL_PASSWORD"] = options["sasl_plain_password"]
    return env


def pytest_report_header() -> str:
    return backends.header()


@pytest.fixture(scope="session")
def backend() -> Iterator[dict[str, str]]:
    """Settings pointing at Kafka and ClickHouse containers (MILLRACE_TEST_BACKEND=containers), or none."""
    if backends.skip_reason() is not None:
        yield {}
        return
    with backends.containers() as env:
        yield env


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory, backend: dict[str, str]) -> Settings:
    home = tmp_path_factory.mktemp("millrace-home")
    env = {
        **backend,
        "MILLRACE_HOME": str(home),
        "MILLRACE_KAFKA_PORT": str(free_port_pair()),
        "MILLRACE_PORT": str(free_port()),
        "MILLRACE_WORKER_QUERY_PORT": str(free_port()),
        "MILLRACE_BATCH_AGE_MS": "200",
        "MILLRACE_LOG_LEVEL": "warning",
    }
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def broker(base_settings: Settings) -> Iterator[LocalBroker | None]:
    if not base_settings.local_broker:  # the containers backend brought its own
        yield None
        return
    local = LocalBroker(base_settings)
    local.fetch()
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
async def kafka(broker: LocalBroker | None, base_settings: Settings) -> Settings:
    await ensure_topics(base_settings)
    return base_settings


async def wait_for_key(ring: keys.KeyRing, token: str, timeout_s: float = 10) -> None:
    """Until a gateway's key ring (it follows the keys topic) knows a key created just now."""
    deadline = time.monotonic() + timeout_s
    while ring.authenticate(token) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not see the new key")
        await asyncio.sleep(0.05)


@dataclass
class Tenant:
    project: str
    key: str
    read_key: str


@dataclass
class Stack:
    """A running pipeline: gateway (HTTP), worker (consumer task), and a store client."""

    settings: Settings
    url: str
    session: aiohttp.ClientSession
    client: Client
    gateway_keys: keys.KeyRing
    restart_worker: Callable[[], Awaitable[None]]

    async def tenant(self, project: str, scopes: frozenset[str] | None = None) -> Tenant:
        """A fresh project with an all-scopes key, visible to the gateway before returning."""
        _, token = await keys.create(self.settings, project, scopes or frozenset(keys.ALL_SCOPES))
        _, read_token = await keys.create(self.settings, project, frozenset({keys.SCOPE_READ}))
        await self.wait_for_key(token)
        await self.wait_for_key(read_token)
        return Tenant(project, token, read_token)

    async def wait_for_key(self, token: str, timeout_s: float = 10) -> None:
        await wait_for_key(self.gateway_keys, token, timeout_s)

    def query(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.client.query(sql, parameters=params).result_rows
        return rows

    async def wait_rows(self, project: str, expected: int, table: str = "logs", timeout_s: float = 30) -> int:
        """Poll until the project has `expected` rows (or time runs out); returns the last count."""
        deadline = time.monotonic() + timeout_s
        count = -1
        while time.monotonic() < deadline:
            count = self.query(f"SELECT count() FROM {table} WHERE project = {{p:String}}", p=project)[0][0]
            if count >= expected:
                # Give a straggler the chance to show up, so "exactly" is really exact.
                await asyncio.sleep(0.5)
                return int(
                    self.query(f"SELECT count() FROM {table} WHERE project = {{p:String}}", p=project)[0][0]
                )
            await asyncio.sleep(0.1)
        return int(count)


@pytest.fixture(scope="session")
async def stack(kafka: Settings) -> AsyncIterator[Stack]:
    settings = replace(kafka)
    client = store.connect(settings)
    store.migrate(client)

    read_runner = web.AppRunner(read_app(settings), access_log=None)
    await read_runner.setup()
    await web.TCPSite(read_runner, "127.0.0.1", settings.worker_query_port).start()

    state: dict[str, Any] = {}

    async def start_worker() -> None:
        stop = asyncio.Event()
        state["stop"] = stop
        state["task"] = asyncio.create_task(pipeline.run(settings, client, stop))

    async def stop_worker() -> None:
        state["stop"].set()
        await asyncio.wait_for(state["task"], timeout=60)

    async def restart_worker() -> None:
        await stop_worker()
        await start_worker()

    await start_worker()
    server = TestServer(create_app(settings), port=settings.port)
    await server.start_server(**server_options(settings))
    session = aiohttp.ClientSession(auto_decompress=False)
    try:
        yield Stack(
            settings=settings,
            url=f"http://127.0.0.1:{server.port}",
            session=session,
            client=client,
            gateway_keys=server.app[KEYS].ring,
            restart_worker=restart_worker,
        )
    finally:
        await session.close()
        await server.close()
        await stop_worker()
        await read_runner.cleanup()
        client.close()


@dataclass
class Gateway:
    url: str
    keys: keys.KeyRing

    async def wait_for_key(self, token: str, timeout_s: float = 10) -> None:
        await wait_for_key(self.keys, token, timeout_s)


@pytest.fixture(scope="module")
async def gateway_factory(stack: Stack) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    """Starts extra gateways on the same broker and store with some settings changed
    (`await gateway_factory(idle_timeout_s=1.0)`); they stop at the module's end."""
    servers: list[TestServer] = []

    async def start(**overrides: Any) -> Gateway:
        settings = replace(stack.settings, port=free_port(), **overrides)
        server = TestServer(create_app(settings), port=settings.port)
        await server.start_server(**server_options(settings))
        servers.append(server)
        return Gateway(f"http://127.0.0.1:{server.port}", server.app[KEYS].ring)

    try:
        yield start
    finally:
        for server in servers:
            await server.close()
