"""`millrace status` rendering and its exit codes, from fabricated states (the live view is in
tests/test_cli_run.py, against a real pipeline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from millrace.config import Settings
from ops.status import NOT_READY, NOT_RUNNING, KafkaStatus, ProcessStatus, Status, collect, render, to_json


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"MILLRACE_HOME": str(tmp_path)})


def proc(name: str, *, ready: bool = True, running: bool = True) -> ProcessStatus:
    return ProcessStatus(name, 4242, running, ready, 3725.0, 2, "killed by SIGKILL")


def test_a_healthy_pipeline_renders_every_part_and_exits_0(settings: Settings) -> None:
    status = Status(
        True, 7, "http://localhost:8080", "/x/run/millrace.log",
        [proc("broker"), proc("worker"), proc("gateway")],
        KafkaStatus(True, lag={0: 0, 1: 12}, dead_letters=3),
    )  # fmt: skip
    text = render(status, settings)
    assert "worker           4242     1h2m        2  yes    killed by SIGKILL" in text
    assert "consumer lag (millrace-workers on millrace.raw): 12 (p0=0, p1=12)" in text
    assert "dead letters (millrace.dlq): 3" in text
    assert text.endswith("all ready")
    assert status.exit_code == 0
    assert orjson.loads(to_json(status))["kafka"]["lag"] == {"0": 0, "1": 12}


@pytest.mark.parametrize(
    ("processes", "kafka"),
    [
        ([proc("worker", ready=False)], KafkaStatus(True)),
        ([proc("gateway", running=False, ready=False)], KafkaStatus(True)),
        ([proc("worker")], KafkaStatus(False, error="KafkaConnectionError")),
    ],
)
def test_anything_not_ready_exits_1(
    settings: Settings, processes: list[ProcessStatus], kafka: KafkaStatus
) -> None:
    status = Status(True, 7, "", "", processes, kafka)
    assert status.exit_code == NOT_READY
    assert render(status, settings).endswith("NOT READY")


def test_no_state_or_a_dead_runner_is_not_running(settings: Settings) -> None:
    assert collect(settings).exit_code == NOT_RUNNING
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    settings.run_dir.mkdir(parents=True)
    state = {"runner_pid": gone.pid, "processes": [{"name": "worker", "pid": os.getpid()}]}
    (settings.run_dir / "state.json").write_bytes(orjson.dumps(state))
    found = collect(settings)
    assert (found.running, found.exit_code) == (False, NOT_RUNNING)
    # What its runner left behind (here: this test process, standing in for a worker) is named.
    assert found.left_behind == {"worker": os.getpid()}
    assert f"left worker (pid {os.getpid()}): `make down` stops them" in render(found, settings)
