"""The pipeline under test (started with `millrace up`, stopped with `millrace down`) and /proc readings.

CPU time comes from /proc/<pid>/stat (utime + stime), which covers every thread of the
process; the per-thread split (/proc/<pid>/task/*/stat, grouped by thread name) shows
where inside a process the time went: the event loop, the insert thread, chDB's pools,
the JVM's network and request-handler threads.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ops.broker import port_in_use

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Ports other people on this machine use: never pick them, even when they look free.
RESERVED_PORTS = frozenset({8080, 8091, 9092, 9093})
# Environment a developer may have exported that would point the bench elsewhere.
_FOREIGN_ENV = ("KAFKA_BOOTSTRAP_SERVERS", "MILLRACE_CLICKHOUSE_DSN")


def _stat_fields(path: str) -> list[str] | None:
    try:
        raw = Path(path).read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of the whole process (all its threads) so far."""
    f = _stat_fields(f"/proc/{pid}/stat")
    return None if f is None else (int(f[11]) + int(f[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (numbered ones grouped); the main thread is `main`.

    Python threads are all named after the executable (`python`), so for the gateway and
    the worker this separates the event loop (`main`) from the executor threads (`python`)
    and from the threads of native libraries (chDB's, librdkafka-free here).
    """
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for task in os.scandir(f"/proc/{pid}/task"):
            f = _stat_fields(f"{task.path}/stat")
            try:
                name = Path(f"{task.path}/comm").read_text().strip()
            except OSError:
                continue
            if f is None:
                continue
            # The main thread (tid == pid) on its own: for a Python process it is the event loop.
            group = "main" if task.name == str(pid) else re.sub(r"[-_ #]*\d+$", "", name) or name
            out[group] = out.get(group, 0.0) + (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def _status_kb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else round(kb / 1024, 1)


def children(ppid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            f = _stat_fields(f"/proc/{entry.name}/stat")
            if f is not None and int(f[1]) == ppid:
                out.append(int(entry.name))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


def alive(pid: int) -> bool:
    f = _stat_fields(f"/proc/{pid}/stat")
    return f is not None and f[0] != "Z"


def find_roles(role: str, home: Path | None) -> list[int]:
    """The `ops.cli <role>` processes, of the given MILLRACE_HOME if one is given."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        args = cmdline(int(entry.name))
        ours = home is None or Path(environ(int(entry.name)).get("MILLRACE_HOME", "")) == home
        if "ops.cli" in args and role in args and ours:
            found.append(int(entry.name))
    return found


def find_role(role: str, home: Path | None) -> int | None:
    """An `ops.cli <role>` process, of the given MILLRACE_HOME if one is given."""
    return next(iter(find_roles(role, home)), None)


def free_port(*, pair: bool = False, taken: set[int] | None = None) -> int:
    """A free loopback port (and port + 1, for the broker's controller, when `pair`)."""
    taken = taken or set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        wanted = {port, port + 1} if pair else {port}
        if wanted & (RESERVED_PORTS | taken) or port + 1 > 65535:
            continue
        if not any(port_in_use(p) for p in wanted):
            return port
    raise RuntimeError("no free port found")


def http_json(url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        return orjson.loads(resp.read())


@dataclass(slots=True)
class Pipeline:
    """A Millrace of the bench's own: its own MILLRACE_HOME and ports, so nothing else is touched."""

    home: Path
    port: int
    kafka_port: int
    query_port: int
    python: str = sys.executable
    log: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
        env.update(MILLRACE_HOME=str(self.home), MILLRACE_HOST="127.0.0.1")
        # Port 0 means "not chosen": enough to stop a leftover pipeline, which needs only its home.
        for name, port in (
            ("MILLRACE_PORT", self.port),
            ("MILLRACE_KAFKA_PORT", self.kafka_port),
            ("MILLRACE_WORKER_QUERY_PORT", self.query_port),
        ):
            if port:
                env[name] = str(port)
        return env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.kafka_port}"

    @property
    def stats_base(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def cli(self, *args: str, timeout_s: float = 600) -> str:
        done = subprocess.run(
            [self.python, "-m", "ops.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"millrace {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def up(self) -> None:
        self.cli("up")

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self.cli("down", timeout_s=180)

    def create_key(self, project: str) -> str:
        # No rate limits: the bench measures what the pipeline takes, not the default key's cap.
        lines = (
            self.cli(
                "keys",
                "create",
                "--project",
                project,
                "--name",
                "bench",
                "--requests-per-s",
                "0",
                "--logs-per-s",
                "0",
            )
            .strip()
            .splitlines()
        )
        return lines[-1].strip()

    def runner_pid(self) -> int | None:
        try:
            pid = int((self.home / "run" / "up.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def pids(self) -> dict[str, int]:
        """gateway, worker and kafka pids of this pipeline (children of its `millrace run`);
        with MILLRACE_GATEWAY_PROCESSES > 1 the gateways are `gateway`, `gateway-2`, ..."""
        found: dict[str, int] = {}
        runner = self.runner_pid()
        for pid in sorted(children(runner)) if runner else []:
            args = cmdline(pid)
            for role in ("gateway", "worker"):
                if "ops.cli" in args and role in args:
                    name = role
                    for n in itertools.count(2):
                        if name not in found:
                            break
                        name = f"{role}-{n}"
                    found[name] = pid
        for role in ("gateway", "worker"):
            other = None if role in found else find_role(role, self.home)
            if other is not None:
                found[role] = other
        with contextlib.suppress(OSError, ValueError):
            found["kafka"] = int((self.home / "run" / "kafka.pid").read_text().strip())
        return found


def wait_for_key(url: str, headers: dict[str, str], timeout_s: float = 30) -> None:
    """Until the gateway knows the key: an empty batch is then 400 (bad body), not 401 (bad key).

    Nothing is stored by that probe, so the bench project's count starts at zero.
    """
    deadline = time.monotonic() + timeout_s
    status = 0
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"{url}/v1/drain", data=b'{"logs": []}', headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        if status not in (0, 401):
            return
        time.sleep(0.25)
    raise TimeoutError(
        f"the gateway did not accept the bench key within {timeout_s:.0f}s (last status {status})"
    )
