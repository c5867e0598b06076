"""The project-managed Kafka broker, for real: fetch, start, topics, a round trip, stop, restart."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from millrace.config import Settings
from millrace.kafka.topics import admin_client, client_options, describe, ensure_topics, wait_for_kafka
from ops.broker import LocalBroker, process_exited

pytestmark = pytest.mark.integration


def free_listener_and_controller_ports() -> int:
    """A port p with p + 1 free too: the local broker's controller listens on kafka_port + 1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no two adjacent free ports")


def assert_private(home: Path, root: Path) -> None:
    """Audit F2: on a shared host no other user may read the broker's data or config."""
    assert home.stat().st_mode & 0o077 == 0
    loose = [str(p) for p in (root, *root.rglob("*")) if not p.is_symlink() and p.stat().st_mode & 0o077]
    assert loose == []


def process_gone(pid: int) -> bool:
    """Gone, or a zombie awaiting its parent (not merely exiting)."""
    return process_exited(pid)


# The main thread exits first and leaves a zombie; a second thread lives on until stdin closes.
_LEADER_EXITS_FIRST = """
import ctypes, os, sys, threading
def linger():
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=linger).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_zombie_main_thread_with_live_threads_has_not_exited() -> None:
    """A JVM being stopped can show its main thread as a zombie while other threads still run
    (and hold its ports); `stop` must wait for those too (CI once saw the broker alive after it)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _LEADER_EXITS_FIRST], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the main thread never exited"
            time.sleep(0.01)
        assert not process_exited(child.pid)
        assert child.poll() is None  # not reapable yet either
        child.stdin.close()
        deadline = time.monotonic() + 10
        while not process_exited(child.pid):
            assert time.monotonic() < deadline, "the process never finished exiting"
            time.sleep(0.01)
        assert child.wait(5) == 0
    finally:
        child.kill()
        child.wait()


async def read_all(settings: Settings, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, **client_options(settings), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < expected:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend((r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return got


async def test_local_broker_lifecycle(tmp_path: Path) -> None:
    port = free_listener_and_controller_ports()
    settings = Settings.from_env(
        {
            "MILLRACE_HOME": str(tmp_path / "home"),
            "MILLRACE_KAFKA_PORT": str(port),
            "MILLRACE_PARTITIONS": "3",
        }
    )
    broker = LocalBroker(settings)
    await asyncio.to_thread(broker.fetch)
    assert broker.is_fetched()

    # A pid file left by a crash, naming a live process that is not a broker: must not fool start().
    settings.run_dir.mkdir(parents=True)
    broker.pid_file.write_text(f"{os.getpid()}\n")
    assert not broker.is_running()

    try:
        await asyncio.to_thread(broker.start, 90)
        first_pid = broker.pid()
        assert first_pid is not None and broker.is_running()
        assert broker.pid_file.read_text().strip() == str(first_pid)
        await wait_for_kafka(settings, timeout_s=10)
        meta = (broker.data_dir / "meta.properties").read_text()
        assert_private(settings.home, broker.root)

        # Two at once: the loser of the creation race must shrug off TopicAlreadyExists.
        await asyncio.gather(ensure_topics(settings), ensure_topics(settings))
        await ensure_topics(settings)
        assert await describe(settings) == {
            settings.topic: 3,
            settings.dlq_topic: 3,
            settings.keys_topic: 1,
            settings.alerts_topic: 8,
        }
        async with admin_client(settings) as admin:
            (response,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, settings.keys_topic)]
            )
        entries: list[dict[str, Any]] = response.to_object()["resources"][0]["config_entries"]
        assert {e["config_names"]: e["config_value"] for e in entries}["cleanup.policy"] == "compact"

        producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic, b"hello", key=b"k1")
        finally:
            await producer.stop()
        assert await read_all(settings, settings.topic, 1) == [(b"k1", b"hello")]
        assert_private(settings.home, broker.root)  # the topic's segments too

        await asyncio.to_thread(broker.stop)
        assert process_gone(first_pid)
        assert not broker.is_running() and not broker.pid_file.exists()
        await asyncio.to_thread(broker.stop)  # idempotent

        # Same home again, through a fresh object as `millrace down` would use: no re-format,
        # the record survived.
        broker = LocalBroker(settings)
        await asyncio.to_thread(broker.start, 90)
        assert broker.pid() not in (None, first_pid)
        assert (broker.data_dir / "meta.properties").read_text() == meta
        assert await read_all(settings, settings.topic, 1) == [(b"k1", b"hello")]
        await asyncio.to_thread(broker.start, 90)  # already running: returns at once, same process
        assert broker.pid_file.read_text().strip() == str(broker.pid())
    finally:
        last_pid = broker.pid()
        await asyncio.to_thread(LocalBroker(settings).stop)
    assert last_pid is not None and process_gone(last_pid)
    assert not broker.is_running()
