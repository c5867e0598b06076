"""MILLRACE_KAFKA_BROKERS=3: three local KRaft brokers, every topic on all three, acks from two.

The short test starts the cluster alone and checks what it creates; the reliability test
(`make test-reliability`) runs `millrace up` on it under load and SIGKILLs brokers: first
the leader of a raw-topic partition, then two of the three.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError

from millrace.config import Settings
from millrace.kafka.topics import admin_client, ensure_topics, envelope_producer
from ops.broker import LocalBroker, LocalCluster, broker_name
from tests.conftest import free_port, free_port_run
from tests.test_cli_run import Answer, Load, millrace, status_json, stored_per_service

pytestmark = pytest.mark.integration

LOGS_PER_REQUEST = Load.LOGS_PER_REQUEST


def cluster_env(home: Path) -> dict[str, str]:
    return {
        "MILLRACE_HOME": str(home),
        "MILLRACE_KAFKA_BROKERS": "3",
        "MILLRACE_KAFKA_PORT": str(free_port_run(6)),
        "MILLRACE_PORT": str(free_port()),
        "MILLRACE_WORKER_QUERY_PORT": str(free_port()),
        "MILLRACE_BATCH_AGE_MS": "200",
    }


async def partitions(settings: Settings, *topics: str) -> dict[tuple[str, int], dict[str, Any]]:
    """(topic, partition) -> its leader, replicas and in-sync replicas."""
    async with admin_client(settings) as admin:
        described: list[dict[str, Any]] = await admin.describe_topics(list(topics))
    return {(t["topic"], p["partition"]): p for t in described for p in t["partitions"]}


async def settled_partitions(
    settings: Settings, expected: int, *topics: str, timeout_s: float = 30
) -> dict[tuple[str, int], dict[str, Any]]:
    """`partitions` once all `expected` partitions are described with three in-sync replicas.

    ensure_topics returns when the broker it asked knows a leader for each partition; a new
    admin client may ask another broker whose copy of the metadata log is a moment behind
    (CI once saw no topic at all there), and followers join the ISR after their first fetch.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        found = await partitions(settings, *topics)
        if len(found) == expected and all(len(p["isr"]) == 3 for p in found.values()):
            return found
        if time.monotonic() >= deadline:
            return found  # the caller's assertions say what is missing
        await asyncio.sleep(0.2)


async def min_insync(settings: Settings, topic: str) -> str:
    async with admin_client(settings) as admin:
        (answer,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
        )
    (entry,) = answer.to_object()["resources"][0]["config_entries"]
    return str(entry["config_value"])


def test_three_local_brokers_replicate_every_topic(tmp_path: Path, broker: LocalBroker | None) -> None:
    """Three nodes start together; Millrace's topics have three replicas, all in sync, and take
    acks=all writes from the SCRAM principal only when two replicas must have them."""
    settings = Settings.from_env(cluster_env(tmp_path / "home"))
    assert settings.replication_factor == 3 and settings.bootstrap.count(",") == 2
    cluster = LocalCluster(settings)
    if broker is not None:  # the session broker's jars: the same POM, no second Maven run
        cluster.nodes[0].root.mkdir(parents=True)
        cluster.nodes[0].lib_dir.symlink_to(broker.lib_dir)
    cluster.fetch()
    try:
        cluster.start()
        assert [n.name for n in cluster.nodes] == ["broker", "broker-2", "broker-3"]
        assert all(n.serves_metadata() for n in cluster.nodes)

        async def check() -> None:
            await ensure_topics(settings)
            expected = 2 * settings.partitions + 1
            found = await settled_partitions(
                settings, expected, settings.topic, settings.dlq_topic, settings.keys_topic
            )
            assert len(found) == expected
            for where, p in found.items():
                assert (sorted(p["replicas"]), sorted(p["isr"])) == ([1, 2, 3], [1, 2, 3]), where
            # Leadership is spread: a broker's failure is a part of the partitions, not all.
            assert len({p["leader"] for (t, _), p in found.items() if t == settings.topic}) > 1
            assert await min_insync(settings, settings.topic) == "2"
            producer = envelope_producer(settings)
            await producer.start()
            try:
                sent = await producer.send_and_wait(settings.topic, b"x", key=b"k")
            finally:
                await producer.stop()
            assert sent.offset >= 0
            # Every node asks for the credentials, not only the first.
            for node in cluster.nodes:
                anonymous = AIOKafkaConsumer(
                    bootstrap_servers=f"localhost:{node.port}", request_timeout_ms=5000
                )
                with pytest.raises(KafkaConnectionError):
                    await asyncio.wait_for(anonymous.start(), 30)
                await anonymous.stop()

        asyncio.run(check())
    finally:
        cluster.stop()
    assert not cluster.is_running()


def longest_gap(answers: list[Answer], start: float, end: float) -> float:
    """The longest stretch in [start, end] without an acknowledgment: seconds of unavailability."""
    acks = sorted(a.done for a in answers if a.status == 200 and start <= a.done <= end)
    points = [start, *acks, end]
    return max(b - a for a, b in itertools.pairwise(points))


def wait_all_ready(env: dict[str, str], restarts: dict[str, int], timeout_s: float) -> float:
    """Seconds until `millrace status` is all ready with these processes restarted this often."""
    started = time.monotonic()
    last: dict[str, Any] = {}
    while time.monotonic() - started < timeout_s:
        code, last = status_json(env)
        procs = {p["name"]: p["restarts"] for p in last.get("processes", [])}
        if code == 0 and all(procs.get(name) == n for name, n in restarts.items()):
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"not all ready within {timeout_s} s: {last}")


def wait_full_isr(settings: Settings, timeout_s: float) -> float:
    """Seconds until every partition of the raw and keys topics has all three replicas in sync."""
    started = time.monotonic()
    found: dict[tuple[str, int], dict[str, Any]] = {}
    while time.monotonic() - started < timeout_s:
        try:
            found = asyncio.run(partitions(settings, settings.topic, settings.keys_topic))
        except Exception:  # a broker still electing: ask again
            found = {}
        if found and all(sorted(p["isr"]) == [1, 2, 3] for p in found.values()):
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"the in-sync replicas did not come back within {timeout_s} s: {found}")


@pytest.mark.reliability
def test_three_brokers_survive_the_loss_of_a_leader_and_refuse_without_two(tmp_path: Path) -> None:
    """`millrace up` on three brokers under load. SIGKILL the leader of a raw partition: the
    gateway answers 503 at most while its partitions elect a new leader, the supervisor restarts
    the broker and it rejoins the in-sync replicas. SIGKILL two of three: 503 with Retry-After,
    no acknowledgment until a second replica is back; they come back without restarting
    Millrace. Every acknowledged log is stored exactly once."""
    env = {**os.environ, **cluster_env(tmp_path / "home")}
    settings = Settings.from_env(env)
    base = f"http://127.0.0.1:{settings.port}"
    up = millrace(env, "up")
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        key = re.search(r"API key \(project 'dev', all scopes\): (\S+)", up.stdout)
        assert key, up.stdout
        _, state = status_json(env)
        before = {p["name"]: p["pid"] for p in state["processes"]}
        assert list(before) == ["broker", "broker-2", "broker-3", "worker", "alerts", "gateway"]

        with Load(base, key[1], clients=3) as load:
            assert load.wait_acked_after(time.monotonic(), 60) >= 0, load.answers[-3:]
            time.sleep(2)

            # 1. The leader of raw partition 0.
            leader = asyncio.run(partitions(settings, settings.topic))[(settings.topic, 0)]["leader"]
            victim = broker_name(leader)
            t1 = time.monotonic()
            os.kill(before[victim], signal.SIGKILL)
            back1 = load.wait_acked_after(t1, 60)  # the others took over its partitions
            wait_all_ready(env, {victim: 1}, 120)
            healed1 = time.monotonic() - t1
            wait_full_isr(settings, 120)  # restarted and caught up: in sync again
            isr1 = time.monotonic() - t1
            time.sleep(2)

            # 2. Two of three, the restarted one among them: no write can have two replicas.
            _, state = status_json(env)
            pids = {p["name"]: p["pid"] for p in state["processes"]}
            killed = [victim, broker_name(leader % 3 + 1)]
            t2 = time.monotonic()
            for name in killed:
                os.kill(pids[name], signal.SIGKILL)
            probe = load.post("probe-two-down")  # no second replica for many seconds to come
            relaunches = wait_relaunched(env, {name: pids[name] for name in killed}, 120)
            relaunched = relaunches[0]
            back2 = load.wait_acked_after(t2, 120)
            wait_all_ready(env, {victim: 2, killed[1]: 1}, 180)
            healed2 = time.monotonic() - t2
            wait_full_isr(settings, 120)
            isr2 = time.monotonic() - t2
            time.sleep(2)
        t_end = time.monotonic()

        answers = load.answers
        # No success while one broker was left: an acknowledgment needs a second replica in sync,
        # and there was no second broker process until the supervisor started one again.
        early = [a for a in load.between(t2, relaunched) if a.status == 200 and a.done < relaunched]
        refused = [a for a in answers if a.status == 503]
        unexpected = sorted({a.status for a in answers} - {200, 503})
        acked = {a.service for a in answers if a.status == 200}

        deadline = time.monotonic() + 90
        stored = stored_per_service(base, key[1])
        while any(stored.get(s, 0) < LOGS_PER_REQUEST for s in acked) and time.monotonic() < deadline:
            time.sleep(1)
            stored = stored_per_service(base, key[1])
        lost = sorted(s for s in acked if stored.get(s, 0) < LOGS_PER_REQUEST)
        duplicated = sorted(s for s, n in stored.items() if n > LOGS_PER_REQUEST)
        gap1 = longest_gap(answers, t1, t2)
        gap2 = longest_gap(answers, t2, t_end)
        print(
            f"\nkafka cluster (3 brokers, replication 3, min.insync.replicas 2): requests sent "
            f"{len(answers)}, acknowledged {len(acked)}, 503 {len(refused)}, other {unexpected}; logs "
            f"acknowledged {len(acked) * LOGS_PER_REQUEST}, stored {sum(stored.values())}, "
            f"lost {len(lost)}, duplicated {len(duplicated)} requests\n"
            f"  SIGKILL of the leader ({victim}): unavailable {gap1:.1f} s (first ack after "
            f"{back1:.1f} s), 503 {sum(1 for a in load.between(t1, t2) if a.status == 503)}, "
            f"ready again {healed1:.1f} s, all replicas in sync after {isr1:.1f} s\n"
            f"  SIGKILL of two ({', '.join(killed)}): unavailable {gap2:.1f} s, 503 "
            f"{sum(1 for a in load.between(t2, t_end) if a.status == 503)}, brokers restarted after "
            f"{' and '.join(f'{t - t2:.1f}' for t in relaunches)} s, acks again {back2:.1f} s, "
            f"ready {healed2:.1f} s, in sync {isr2:.1f} s"
        )
        assert lost == []
        assert duplicated == []
        assert early == [], ([(round(a.sent - t2, 2), round(a.done - t2, 2)) for a in early], relaunched - t2)
        assert unexpected == []  # 200 or 503: never a refused connection, never another error
        assert refused and all(a.retry_after for a in refused)
        assert (probe.status, probe.retry_after) == (503, True), probe
        # A broker's restart does not hold up the supervisor: the second was restarted after its
        # own back-off (1 s: its second crash), not once the first served again (10 s or more).
        assert relaunches[1] - relaunches[0] < 5, relaunches
        # Nothing but the brokers was restarted: Millrace recovered by itself.
        _, state = status_json(env)
        after = {p["name"]: (p["pid"], p["restarts"]) for p in state["processes"]}
        assert {n: after[n] for n in ("worker", "gateway")} == {
            "worker": (before["worker"], 0),
            "gateway": (before["gateway"], 0),
        }
    finally:
        down = millrace(env, "down")
    assert down.returncode == 0, down.stderr
    assert not LocalCluster(settings).is_running()


def wait_relaunched(env: dict[str, str], killed: dict[str, int], timeout_s: float) -> list[float]:
    """When (time.monotonic, earliest first) the supervisor started each SIGKILLed broker again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:  # the supervisor's own record: the wall clock at each start
            state = orjson.loads((Path(env["MILLRACE_HOME"]) / "run" / "state.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            state = {}
        started = [
            p["started_at"]
            for p in state.get("processes", [])
            if p["name"] in killed and p["pid"] not in (None, killed[p["name"]])
        ]
        if len(started) == len(killed):  # the state's wall clock, on this test's monotonic one
            return sorted(float(t) - time.time() + time.monotonic() for t in started)
        time.sleep(0.1)
    raise AssertionError(f"{list(killed)} were not all restarted within {timeout_s} s")
