"""The supervisor with real child processes: restarts, backoff, giving up, stopping in order, state."""

from __future__ import annotations

import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from millrace.config import CONFIG_ERROR_EXIT
from ops.cli import Console
from ops.noise import COORDINATOR_LOGGER, CoordinatorRetries
from ops.supervisor import Command, GaveUp, RestartPolicy, Supervisor, describe_exit, read_state


def python(code: str, tmp_path: Path) -> Command:
    return Command([sys.executable, "-c", code], dict(os.environ), tmp_path / "children.log")


SLEEPER = "import time; time.sleep(60)"


def check_until(sup: Supervisor, condition: Callable[[], bool], timeout_s: float = 10) -> None:
    """Run the supervisor's rounds until `condition` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        sup.check()
        if condition():
            return
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_backoff_doubles_up_to_the_cap_then_gives_up_past_the_limit() -> None:
    policy = RestartPolicy(limit=6, window_s=100, base_s=0.5, cap_s=3)
    assert [policy.on_crash(t) for t in range(7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, None]


def test_crashes_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(limit=2, window_s=10, base_s=1, cap_s=30)
    assert [policy.on_crash(0), policy.on_crash(5)] == [1, 2]
    # 0 and 5 are out of the window at 16: the third crash counts as the first again.
    assert policy.on_crash(16) == 1
    assert policy.on_crash(17) == 2


def test_a_limit_of_zero_never_restarts() -> None:
    assert RestartPolicy(limit=0, window_s=10).on_crash(0) is None


@pytest.mark.parametrize(
    ("code", "text"), [(3, "exit code 3"), (0, "exit code 0"), (-9, "killed by SIGKILL"), (None, "unknown")]
)
def test_exit_status_is_described_for_people(code: int | None, text: str) -> None:
    assert describe_exit(code) == text


def test_a_killed_child_is_restarted_and_the_state_file_says_so(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "state.json", limit=3, window_s=60, base_s=0.1)
    try:
        first = sup.start("worker", python(SLEEPER, tmp_path))
        old_pid = first.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        check_until(sup, lambda: first.restarts == 1 and first.pid is not None)
        assert first.pid is not None and first.pid != old_pid
        assert first.last_exit == "killed by SIGKILL"
        os.kill(first.pid, 0)  # the new one runs
        state = read_state(tmp_path / "state.json")
        assert state is not None
        assert [(p["name"], p["pid"], p["restarts"], p["last_exit"]) for p in state["processes"]] == [
            ("worker", first.pid, 1, "killed by SIGKILL")
        ]
        assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o600
    finally:
        sup.stop([["worker"]], timeout_s=5)
    assert not (tmp_path / "state.json").exists()


def test_a_crash_loop_gives_up_naming_the_process_and_its_exit(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "state.json", limit=2, window_s=60, base_s=0.05, cap_s=0.1)
    sup.start("gateway", python("import sys; sys.exit(3)", tmp_path))
    healthy = sup.start("worker", python(SLEEPER, tmp_path))
    with pytest.raises(GaveUp, match=r"gateway exited 3 times within 60 s \(last: exit code 3\)"):
        check_until(sup, lambda: False)
    assert healthy.restarts == 0
    proc = healthy.handle.proc  # type: ignore[attr-defined]
    sup.stop([["gateway"], ["worker"]], timeout_s=5)
    assert proc.poll() == -signal.SIGTERM  # stopped, not left behind


def test_a_configuration_error_is_not_restarted(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "state.json", limit=5, window_s=60, base_s=0.05, cap_s=0.1)
    worker = sup.start("worker", python(f"import sys; sys.exit({CONFIG_ERROR_EXIT})", tmp_path))
    healthy = sup.start("gateway", python(SLEEPER, tmp_path))
    with pytest.raises(GaveUp, match=r"worker stopped on a configuration error \(exit code 2;"):
        check_until(sup, lambda: False)
    assert worker.restarts == 0 and healthy.restarts == 0
    sup.stop([["gateway"], ["worker"]], timeout_s=5)


def test_stop_goes_stage_by_stage(tmp_path: Path) -> None:
    """A stage is stopped (and waited for) before the next is asked: gateways, worker, broker."""
    order = tmp_path / "order"
    trap = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    time.sleep(0.3)\n"
        f"    open({str(order)!r}, 'a').write(sys.argv[1] + '\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "time.sleep(60)\n"
    )
    sup = Supervisor(tmp_path / "state.json", limit=1, window_s=60)
    for name in ("broker", "worker", "gateway", "gateway-2"):
        cmd = Command([sys.executable, "-c", trap, name], dict(os.environ), tmp_path / "children.log")
        sup.start(name, cmd)
    time.sleep(0.5)  # let them install their handlers
    sup.stop([["gateway", "gateway-2"], ["worker"], ["broker"]], timeout_s=5)
    lines = order.read_text().split()
    assert sorted(lines[:2]) == ["gateway", "gateway-2"]
    assert lines[2:] == ["worker", "broker"]


def test_console_output_survives_a_reader_that_went_away() -> None:
    """`millrace run | tee` and Ctrl-C: tee dies first; the runner's writes must not raise."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w")
    console = Console(stream)
    assert console.write("Millrace stopped.\n") == len("Millrace stopped.\n")
    console.flush()
    console.write("more\n")
    assert console.stream is None
    stream.close()


def coordinator_record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(
        COORDINATOR_LOGGER, level, __file__, 1, msg, ("GroupCoordinatorNotAvailableError",), None
    )


def test_coordinator_retries_are_dropped_at_start_and_warnings_later() -> None:
    starting = CoordinatorRetries(grace_s=60)
    assert not starting.filter(coordinator_record("Group Coordinator Request failed: %s"))
    assert not starting.filter(
        coordinator_record("Marking the coordinator dead (node 1)for group g.", logging.WARNING)
    )
    other = coordinator_record("Heartbeat failed: %r")
    assert starting.filter(other) and other.levelno == logging.ERROR  # anything else untouched

    later = CoordinatorRetries(grace_s=0)
    record = coordinator_record("Group Coordinator Request failed: %s")
    assert later.filter(record)
    assert (record.levelno, record.levelname) == (logging.WARNING, "WARNING")
    assert "retried" in record.getMessage()


def test_the_runner_console_drops_its_repeated_start_lines_only() -> None:
    from ops.noise import _drop_quiet

    with pytest.raises(structlog.DropEvent):
        _drop_quiet(None, "info", {"event": "kafka_started", "pid": 1})
    kept = {"event": "process_started", "process": "broker", "pid": 1}
    assert _drop_quiet(None, "info", dict(kept)) == kept
    assert _drop_quiet(None, "warning", {"event": "kafka_started"}) == {"event": "kafka_started"}
