"""`millrace up` / `down` as a user runs them: separate processes, its own broker and engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from bench.procs import find_roles
from tests.conftest import free_port, free_port_pair
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


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_up_ingest_read_keys_down(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MILLRACE_HOME": str(tmp_path / "home"),
        "MILLRACE_PORT": str(port),
        "MILLRACE_KAFKA_PORT": str(free_port_pair()),
        "MILLRACE_WORKER_QUERY_PORT": str(free_port()),
        "MILLRACE_BATCH_AGE_MS": "200",
        "MILLRACE_GATEWAY_PROCESSES": "2",  # sharing the port
    }
    up = millrace(env, "up")
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert len(find_roles("gateway", tmp_path / "home")) == 2
        key = re.search(r"API key \(project 'dev', all scopes\): (\S+)", up.stdout)
        assert key, up.stdout
        base = f"http://127.0.0.1:{port}"

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
    finally:
        down = millrace(env, "down")
    assert down.returncode == 0, down.stderr
    assert find_roles("gateway", tmp_path / "home") == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    broker_pids = subprocess.run(
        ["pgrep", "-f", f"{tmp_path}/home/kafka"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert broker_pids == []
