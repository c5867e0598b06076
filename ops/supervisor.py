"""Keeps `millrace run`'s processes alive: restart what exits by itself, give up on a crash loop.

A child that exits while nobody asked it to stop is restarted after a delay that doubles
with each crash of that process inside the window (RESTART_BASE_S, 2x, 4x, ... up to
RESTART_CAP_S). More than MILLRACE_RESTART_LIMIT crashes of one process within
MILLRACE_RESTART_WINDOW_S means it will not get better by itself (a bad setting, a full
disk): the supervisor gives up and the runner stops everything, saying which process and
why. A process that exits with CONFIG_ERROR_EXIT (a setting it cannot use) is given up on at
once. Crashes older than the window are forgotten, so a process that crashes once a day
is restarted at once every time.

The supervisor also keeps a small state file (`<MILLRACE_HOME>/run/state.json`, 0600):
each process's pid, start time, restarts and last exit, which `millrace status` reads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from millrace.config import CONFIG_ERROR_EXIT

log = structlog.get_logger()

RESTART_BASE_S = 0.5  # first restart: almost at once (the gateway port must not stay closed)
RESTART_CAP_S = 30.0
POLL_S = 0.2
STATE_FILE = "state.json"


def describe_exit(code: int | None) -> str:
    """`exit code 3`, `killed by SIGKILL`: how a process ended, for people."""
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class RestartPolicy:
    """Per process: how long to wait before the next restart, or None to give up."""

    limit: int
    window_s: float
    base_s: float = RESTART_BASE_S
    cap_s: float = RESTART_CAP_S
    crashes: deque[float] = field(default_factory=deque)

    def on_crash(self, now: float) -> float | None:
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - self.window_s:
            self.crashes.popleft()
        if len(self.crashes) > self.limit:
            return None
        return float(min(self.cap_s, self.base_s * 2 ** (len(self.crashes) - 1)))

    @property
    def recent(self) -> int:
        return len(self.crashes)


class Handle(Protocol):
    """One supervised process: started, polled, stopped by the supervisor."""

    def start(self) -> int:
        """Start it (blocking until usable where that is quick to tell); its pid."""
        ...

    def poll(self) -> int | None:
        """None while it runs; its exit status (negative: the signal) once it ended."""
        ...

    def stop(self, timeout_s: float) -> None: ...

    def signal_stop(self) -> None:
        """Ask it to stop without waiting (several stop side by side)."""
        ...


class Command:
    """A child process from an argv, in its own session (a terminal's Ctrl-C reaches only
    the runner, which stops the children in order), its output appended to `log_path`."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.argv, self.env, self.log_path = list(argv), env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._signalled = False

    def start(self) -> int:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self._signalled = False
        return self.proc.pid

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal_stop(self) -> None:
        # SIGTERM once: a second one could cut a gateway's flush short.
        if self.proc is not None and self.proc.poll() is None and not self._signalled:
            self.proc.send_signal(signal.SIGTERM)
            self._signalled = True

    def stop(self, timeout_s: float) -> None:
        if self.proc is None:
            return
        self.signal_stop()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Supervised:
    name: str  # broker, worker, gateway, gateway-2, ...
    handle: Handle
    policy: RestartPolicy
    pid: int | None = None
    started_at: float = 0.0  # wall clock, for uptime in `millrace status`
    restarts: int = 0
    last_exit: str = ""
    restart_due: float | None = None  # monotonic time of a pending restart


class GaveUp(RuntimeError):
    """A process crashed more often than the restart limit allows within the window."""


class Supervisor:
    """Starts processes in order, restarts those that exit, stops them in the order given."""

    def __init__(
        self,
        state_path: Path,
        *,
        limit: int,
        window_s: float,
        base_s: float = RESTART_BASE_S,
        cap_s: float = RESTART_CAP_S,
        extra_state: dict[str, Any] | None = None,
    ) -> None:
        self.state_path = state_path
        self.limit, self.window_s, self.base_s, self.cap_s = limit, window_s, base_s, cap_s
        self.extra_state = extra_state or {}
        self.processes: list[Supervised] = []
        self.started_at = time.time()

    def start(self, name: str, handle: Handle) -> Supervised:
        """Start one process now (start-up: a failure here is not retried but raised)."""
        proc = Supervised(name, handle, RestartPolicy(self.limit, self.window_s, self.base_s, self.cap_s))
        self.processes.append(proc)  # before it starts: a start that fails half-way is still stopped
        proc.pid, proc.started_at = handle.start(), time.time()
        log.info("process_started", process=name, pid=proc.pid)
        self.write_state()
        return proc

    def check(self, now: float | None = None) -> None:
        """One round: notice exits, schedule restarts, run those that are due. GaveUp on a crash loop."""
        now = time.monotonic() if now is None else now
        for proc in self.processes:
            if proc.restart_due is None:
                code = proc.handle.poll()
                if code is None:
                    continue
                proc.last_exit = describe_exit(code)
                if code == CONFIG_ERROR_EXIT:
                    self.write_state()
                    raise GaveUp(
                        f"{proc.name} stopped on a configuration error ({proc.last_exit}; its log names "
                        "the setting): restarting it would fail the same way"
                    )
                delay = proc.policy.on_crash(now)
                if delay is None:
                    self.write_state()
                    raise GaveUp(
                        f"{proc.name} exited {proc.policy.recent} times within {self.window_s:g} s "
                        f"(last: {proc.last_exit}); giving up (MILLRACE_RESTART_LIMIT={self.limit})"
                    )
                log.warning(
                    "process_exited",
                    process=proc.name,
                    pid=proc.pid,
                    status=proc.last_exit,
                    restart_in_s=delay,
                    crashes_in_window=proc.policy.recent,
                )
                proc.pid, proc.restart_due = None, now + delay
                self.write_state()
            elif now >= proc.restart_due:
                proc.restart_due = None
                proc.restarts += 1
                try:
                    proc.pid = proc.handle.start()
                except Exception as exc:  # a failed restart is one more crash
                    log.warning("process_restart_failed", process=proc.name, error=str(exc))
                    proc.last_exit = f"restart failed: {exc}".splitlines()[0]
                    delay = proc.policy.on_crash(time.monotonic())
                    if delay is None:
                        self.write_state()
                        raise GaveUp(
                            f"{proc.name} could not be restarted {proc.policy.recent} times within "
                            f"{self.window_s:g} s ({proc.last_exit}); giving up"
                        ) from exc
                    proc.restart_due = time.monotonic() + delay
                else:
                    proc.started_at = time.time()
                    log.warning("process_restarted", process=proc.name, pid=proc.pid, restarts=proc.restarts)
                self.write_state()

    def stop(self, stages: Sequence[Sequence[str]], timeout_s: float) -> None:
        """Stop by stages of names: every process of a stage is asked at once, then waited for."""
        by_name = {p.name: p for p in self.processes}
        for stage in stages:
            procs = [by_name[n] for n in stage if n in by_name]
            for proc in procs:
                with contextlib.suppress(Exception):
                    proc.handle.signal_stop()
            deadline = time.monotonic() + timeout_s  # shared: they stop side by side
            for proc in procs:
                try:
                    proc.handle.stop(max(1.0, deadline - time.monotonic()))
                except Exception as exc:  # keep going: the next stage must still stop
                    log.error("process_stop_failed", process=proc.name, error=str(exc))
            if procs:
                log.info("processes_stopped", processes=[p.name for p in procs])
        self.processes.clear()
        self.state_path.unlink(missing_ok=True)

    def write_state(self) -> None:
        """Atomically (rename), 0600: pids of our processes are nobody else's business."""
        state = {
            **self.extra_state,
            "runner_pid": os.getpid(),
            "started_at": self.started_at,
            "processes": [
                {
                    "name": p.name,
                    "pid": p.pid,
                    "started_at": p.started_at,
                    "restarts": p.restarts,
                    "last_exit": p.last_exit,
                }
                for p in self.processes
            ],
        }
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        tmp.replace(self.state_path)


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return state
