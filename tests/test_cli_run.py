"""`millrace up` / `down` as a user runs them: separate processes, its own broker and engine."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from bench.procs import find_roles
from millrace.config import Settings
from millrace.kafka.topics import client_options
from ops.broker import LocalBroker, process_exited
from tests.conftest import free_port, free_port_pair, kafka_env
from tests.seeds import curl_examples

pytestmark = pytest.mark.integration


def millrace(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def up_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a `millrace up` of a test's own: its own state directory and free
    ports, quick inserts, and `extra` settings on top."""
    return {
        **os.environ,
        "MILLRACE_HOME": str(home),
        "MILLRACE_PORT": str(free_port()),
        "MILLRACE_KAFKA_PORT": str(free_port_pair()),
        "MILLRACE_WORKER_QUERY_PORT": str(free_port()),
        "MILLRACE_BATCH_AGE_MS": "200",
        **extra,
    }


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Answer:
    service: str
    status: int  # 0: no answer (refused, reset, timed out): nothing was promised
    sent: float
    done: float
    retry_after: bool


class Load:
    """Light, continuous AstraLog load from a few threads; every request is its own `service`,
    so what was acknowledged can be matched against what was stored, request by request.
    The chaos tests (this one, the three-broker one) share it."""

    LOGS_PER_REQUEST = 20

    def __init__(self, base: str, key: str, clients: int = 2) -> None:
        self.base, self.key = base, key
        self.answers: list[Answer] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(clients)]

    def body(self, service: str) -> bytes:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        logs = [
            {
                "project_id": "chaos",
                "timestamp": now,
                "level": "info",
                "service": service,
                "message": f"{service} log {i}",
            }
            for i in range(self.LOGS_PER_REQUEST)
        ]
        return orjson.dumps({"logs": logs})

    def post(self, service: str) -> Answer:
        req = urllib.request.Request(
            self.base + "/v1/drain",
            data=self.body(service),
            method="POST",
            headers={"Authorization": self.key, "Content-Type": "application/json"},
        )
        sent = time.monotonic()
        status, retry_after = 0, False
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            status, retry_after = int(exc.code), exc.headers.get("Retry-After") is not None
        except OSError:
            pass
        answer = Answer(service, status, sent, time.monotonic(), retry_after)
        self.answers.append(answer)
        return answer

    def client(self, n: int) -> None:
        for i in itertools.count():
            if self.stopping.is_set():
                return
            self.post(f"c{n}-{i}")
            time.sleep(0.02)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(30)

    def acked(self) -> set[str]:
        return {a.service for a in self.answers if a.status == 200}

    def count(self, status: int) -> int:
        return sum(1 for a in self.answers if a.status == status)

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.sent < end]

    def wait_acked_after(self, t: float, timeout_s: float) -> float:
        """Seconds from `t` until a request sent after it is acknowledged."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            acked = [a.done for a in list(self.answers) if a.sent >= t and a.status == 200]
            if acked:
                return min(acked) - t
            time.sleep(0.1)
        raise AssertionError(f"no acknowledgment within {timeout_s} s: {self.answers[-5:]}")


def probe_headers(base: str, key: str, load: Load) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(
        base + "/v1/drain",
        data=load.body("probe-headers"),
        method="POST",
        headers={"Authorization": key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def status_json(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = millrace(env, "status", "--json", timeout=60)
    return done.returncode, orjson.loads(done.stdout) if done.stdout.strip() else {}


def wait_healed(env: dict[str, str], name: str, restarts: int, timeout_s: float = 30) -> float:
    """Seconds until `millrace status` shows `name` restarted `restarts` times and everything ready."""
    started = time.monotonic()
    last: dict[str, Any] = {}
    while time.monotonic() - started < timeout_s:
        code, last = status_json(env)
        procs = {p["name"]: p for p in last.get("processes", [])}
        if code == 0 and procs.get(name, {}).get("restarts") == restarts:
            return time.monotonic() - started
        time.sleep(0.3)
    raise AssertionError(f"{name} not restarted and ready within {timeout_s} s: {last}")


def kill(env: dict[str, str], name: str) -> int:
    _, state = status_json(env)
    (pid,) = [p["pid"] for p in state["processes"] if p["name"] == name]
    os.kill(pid, signal.SIGKILL)
    return int(pid)


async def send_raw(settings: Settings, value: bytes) -> None:
    producer = AIOKafkaProducer(**client_options(settings))  # the local broker's SASL credentials
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic, value)
    finally:
        await producer.stop()


def stored_per_service(base: str, key: str) -> dict[str, int]:
    q = "count by service | limit 10000"
    status, body = http(
        "POST",
        base + "/v1/gql/query",
        orjson.dumps({"q": q}),
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert status == 200, body
    data = orjson.loads(body)["data"]
    assert data["total_groups"] <= 10_000, "more requests than one answer can list"
    return {row["service"]: int(row["value"]) for row in data["results"]}


def test_up_serves_heals_itself_and_goes_down(tmp_path: Path) -> None:
    """`millrace up` as a user runs it: ingest, read, keys. Then SIGKILL the worker, a gateway and
    the broker under load: each comes back by itself, the gateway keeps acknowledging while the
    worker is down, and every acknowledged log is stored exactly once. Then the runner itself is
    killed hard, and `millrace down` still stops everything."""
    env = up_env(tmp_path / "home", MILLRACE_GATEWAY_PROCESSES="2")  # two gateways sharing the port
    port = int(env["MILLRACE_PORT"])
    up = millrace(env, "up")
    pids: dict[str, int] = {}
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert len(find_roles("gateway", tmp_path / "home")) == 2
        key = re.search(r"API key \(project 'dev', all scopes\): (\S+)", up.stdout)
        assert key, up.stdout
        base = f"http://127.0.0.1:{port}"
        code, state = status_json(env)
        assert code == 0, state
        assert [(p["name"], p["restarts"]) for p in state["processes"]] == [
            ("broker", 0),
            ("worker", 0),
            ("alerts", 0),
            ("gateway", 0),
            ("gateway-2", 0),
        ]

        (example,) = curl_examples("001")
        status, body = http(
            "POST", base + example.path, example.body, {**example.headers, "Authorization": key[1]}
        )
        assert (status, orjson.loads(body)) == (200, {"status": "accepted"})

        deadline = time.monotonic() + 30
        logs: list[dict[str, object]] = []
        while not logs and time.monotonic() < deadline:
            status, body = http("GET", base + "/api/v1/logs", headers={"Authorization": f"Bearer {key[1]}"})
            assert status == 200, body
            logs = orjson.loads(body)["logs"]
            time.sleep(0.2)
        assert [log["message"] for log in logs] == ["User logged in"]
        assert logs[0]["attributes"] == {"user_id": "123", "ip": "1.1.1.1", "project_id": "org-xyz"}

        created = millrace(env, "keys", "create", "--project", "shop", "--scopes", "logs:write")
        assert created.returncode == 0, created.stderr
        new_key = created.stdout.strip().splitlines()[-1]
        assert new_key.startswith("mr_")
        listed = millrace(env, "keys", "list")
        assert "shop" in listed.stdout and new_key not in listed.stdout

        # A second `up` notices the running instance instead of starting another.
        again = millrace(env, "up")
        assert again.returncode == 0 and "already running" in again.stdout

        # Now under load: SIGKILL the worker, a gateway, then the broker.
        probe = Load(base, key[1])
        with Load(base, key[1]) as load:
            time.sleep(1)
            killed = kill(env, "worker")
            t_kill = time.monotonic()
            # Kafka holds what the gateway accepts while no worker runs.
            while probe.post(f"probe-w{len(probe.answers)}").status != 200:
                assert time.monotonic() - t_kill < 2, f"no ack within 2 s: {probe.answers[-3:]}"
                time.sleep(0.05)
            answered_s = time.monotonic() - t_kill
            worker_s = wait_healed(env, "worker", 1)
            assert killed not in {p["pid"] for p in status_json(env)[1]["processes"]}

            kill(env, "gateway")
            gateway_s = wait_healed(env, "gateway", 1)
            assert probe.post("probe-g").status == 200, probe.answers[-1]

            kill(env, "broker")
            code, state = status_json(env)
            assert code == 1 or not state["kafka"]["reachable"], state  # not ready while it is gone
            # No acknowledgment without the broker: 503 and when to come back.
            status, headers = probe_headers(base, key[1], probe)
            assert (status, "Retry-After" in headers) == (503, True), (status, headers)
            broker_s = wait_healed(env, "broker", 1, timeout_s=60)
            # The gateway takes new writes again without anyone restarting it.
            deadline = time.monotonic() + 30
            while probe.post(f"probe-b{len(probe.answers)}").status != 200:
                assert time.monotonic() < deadline, "no acknowledgment after the broker came back"
                time.sleep(0.2)
            time.sleep(1)
        acked = load.acked() | probe.acked()
        deadline = time.monotonic() + 60
        stored = stored_per_service(base, key[1])
        while any(stored.get(s, 0) < Load.LOGS_PER_REQUEST for s in acked) and time.monotonic() < deadline:
            time.sleep(0.5)
            stored = stored_per_service(base, key[1])
        lost = sorted(s for s in acked if stored.get(s, 0) < Load.LOGS_PER_REQUEST)
        duplicated = sorted(s for s, n in stored.items() if n > Load.LOGS_PER_REQUEST)
        sent = len(load.answers) + len(probe.answers)
        print(
            f"\nreliability: requests sent {sent}, acknowledged {len(acked)}, "
            f"503 {load.count(503) + probe.count(503)}, no answer {load.count(0) + probe.count(0)}; "
            f"logs acknowledged {len(acked) * Load.LOGS_PER_REQUEST}, "
            f"stored {sum(stored.values())}, lost {len(lost)}, duplicated {len(duplicated)} requests; "
            f"gateway answered {answered_s:.2f} s after the worker kill; ready again after kill: "
            f"worker {worker_s:.1f} s, gateway {gateway_s:.1f} s, broker {broker_s:.1f} s"
        )
        assert lost == []
        assert duplicated == []
        assert len(acked) > 50
        # `millrace status` counts what the worker could not read as a dead letter, and the lag
        # drains to zero once everything is stored and committed.
        asyncio.run(send_raw(Settings.from_env(env), b"not an envelope"))
        deadline = time.monotonic() + 30
        while True:
            code, state = status_json(env)
            kafka = state["kafka"]
            if kafka["dead_letters"] == 1 and sum(kafka["lag"].values()) == 0:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert code == 0 and sorted(kafka["lag"]) == ["0", "1", "2", "3"], state
        text = millrace(env, "status")
        assert text.returncode == 0, text.stdout + text.stderr
        assert "dead letters (millrace.dlq): 1" in text.stdout
        assert "consumer lag (millrace-workers on millrace.raw): 0 (p0=0, p1=0, p2=0, p3=0)" in text.stdout
        assert re.search(r"^worker +\d+ +\S+ +1  yes +killed by SIGKILL$", text.stdout, flags=re.M), (
            text.stdout
        )

        # The supervisor itself killed hard: `down` still finds and stops what it left running.
        _, state = status_json(env)
        pids = {p["name"]: p["pid"] for p in state["processes"]}
        os.kill(state["runner_pid"], signal.SIGKILL)
        until_gone = time.monotonic() + 10
        while not process_exited(state["runner_pid"]) and time.monotonic() < until_gone:
            time.sleep(0.1)
        orphaned = millrace(env, "status")
        assert orphaned.returncode == 3 and "left broker (pid" in orphaned.stdout, orphaned.stdout
    finally:
        down = millrace(env, "down")
    assert down.returncode == 0, down.stderr
    assert millrace(env, "status").returncode == 3
    assert [name for name, pid in pids.items() if not process_exited(pid)] == []
    assert find_roles("gateway", tmp_path / "home") == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    broker_pids = subprocess.run(
        ["pgrep", "-f", f"{tmp_path}/home/kafka"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert broker_pids == []


def test_a_console_that_went_away_does_not_stop_the_shutdown(
    tmp_path: Path, base_settings: Settings, broker: LocalBroker | None
) -> None:
    """`millrace run | tee run.log`, then Ctrl-C: tee dies first. The runner's writes fail from then
    on, and it must still stop every process it started (it used to die on the first write)."""
    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if k != "MILLRACE_CLICKHOUSE_DSN"},
        # The session's broker (and how to connect to it), with topics and a group of this test's
        # own: only worker and gateway start, which is where the runner's writes between the
        # stop stages are.
        **kafka_env(base_settings),
        "MILLRACE_TOPIC": "cli-pipe.raw",
        "MILLRACE_DLQ_TOPIC": "cli-pipe.dlq",
        "MILLRACE_KEYS_TOPIC": "cli-pipe.keys",
        "MILLRACE_CONSUMER_GROUP": "cli-pipe",
        "MILLRACE_HOME": str(home),
        "MILLRACE_PORT": str(free_port()),
        "MILLRACE_WORKER_QUERY_PORT": str(free_port()),
    }
    runner = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "run"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert runner.stdout is not None
        seen = []
        for line in runner.stdout:
            seen.append(line.decode())
            if b"Press Ctrl-C to stop." in line:
                break
        else:
            raise AssertionError("the runner ended before it was ready:\n" + "".join(seen))
        state = orjson.loads((home / "run" / "state.json").read_bytes())
        pids = {p["name"]: p["pid"] for p in state["processes"]}
        assert set(pids) == {"worker", "alerts", "gateway"}
        runner.stdout.close()  # tee is gone
        runner.send_signal(signal.SIGINT)
        assert runner.wait(90) == 0
        assert [name for name, pid in pids.items() if not process_exited(pid)] == []
        assert not (home / "run" / "state.json").exists()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
