"""`millrace run` / `up` / `down`: the whole pipeline on one machine.

Order matters both ways. Up: broker, topics, dev key, worker (owns the embedded
engine, applies migrations), alert evaluator, gateway. Down: gateway first (stops
accepting, flushes its producer), the alert evaluator, then the worker (stores and
commits what it consumed), then the broker.
In between, the supervisor (ops/supervisor.py) restarts whichever exits by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import structlog

from millrace import keys
from millrace.config import Settings
from millrace.kafka.topics import ensure_topics, wait_for_kafka
from ops.broker import LocalBroker, LocalCluster, process_exited
from ops.supervisor import POLL_S, STATE_FILE, Command, GaveUp, Supervisor, describe_exit, read_state

log = structlog.get_logger()

READY_TIMEOUT_S = 180


def dev_key_file(settings: Settings) -> Path:
    return settings.home / "dev-key"


def base_url(settings: Settings) -> str:
    host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


async def _prepare(settings: Settings) -> str:
    """Topics exist and a dev key works; returns that key."""
    await wait_for_kafka(settings, timeout_s=60)
    await ensure_topics(settings)
    path = dev_key_file(settings)
    if path.exists():
        token = path.read_text().strip()
        if (await keys.load(settings)).authenticate(token):
            return token
    # Local development convenience: the dev key's plaintext is kept in the state
    # directory (mode 0600) so every `make run` can print it. Keys from
    # `millrace keys create` are shown once and stored only as hashes.
    _, token = await keys.create(settings, "dev", frozenset(keys.ALL_SCOPES), name="make run")
    keys.write_secret(path, token + "\n")  # 0600 from its first byte, not chmod-ed after
    return token


def _child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "MILLRACE_HOME": str(settings.home)}


def _role(role: str, settings: Settings) -> Command:
    """`millrace <role>` as a child; its output goes to the run log, not to the console."""
    return Command([sys.executable, "-m", "ops.cli", role], _child_env(settings), log_file(settings))


def log_file(settings: Settings) -> Path:
    """Every process's log lines (the runner's own too under `up`): one file to read or tail."""
    return settings.run_dir / "millrace.log"


class BrokerHandle:
    """A local broker node under the supervisor. `start` launches the JVM and returns at once:
    a restart must not hold up the supervisor (the other nodes, worker and gateways are
    watched meanwhile); `millrace status` shows the node ready once it serves again."""

    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker

    def start(self) -> int:
        return self.broker.launch()

    def poll(self) -> int | None:
        return self.broker.poll()

    def signal_stop(self) -> None:
        # The brokers are their own last stage, all asked together.
        self.broker.signal_stop()

    def stop(self, timeout_s: float) -> None:
        self.broker.stop(timeout_s)


def _wait_ready(settings: Settings, supervisor: Supervisor, timeout_s: float, url: str | None = None) -> None:
    """Poll `url` (default: the gateway's /ready) until it answers 200, while the children live."""
    deadline = time.monotonic() + timeout_s
    url = url or f"http://127.0.0.1:{settings.port}/ready"
    while time.monotonic() < deadline:
        for proc in supervisor.processes:
            code = proc.handle.poll()
            if code is not None:
                raise RuntimeError(
                    f"{proc.name} exited during start-up ({describe_exit(code)}); see {log_file(settings)}"
                )
        if http_ok(url):
            return
        time.sleep(0.3)
    raise TimeoutError(f"no 200 answer from {url} within {timeout_s:.0f}s; see {log_file(settings)}")


def http_ok(url: str, timeout_s: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_http_ok(url: str, timeout_s: float, children: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """Poll `url` until it answers 200; fail early if one of `children` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in children:
            if child.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, child.args))} exited with {child.returncode}")  # type: ignore[arg-type]
        if http_ok(url):
            return
        time.sleep(0.3)
    raise TimeoutError(f"no 200 answer from {url} within {timeout_s:.0f}s")


STOP_TIMEOUT_S = 40  # per stage (gateways, then the worker); `down` gives the runner 90 s in all


def _terminate(child: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, then kill."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _gateway_names(settings: Settings) -> list[str]:
    return ["gateway" if i == 0 else f"gateway-{i + 1}" for i in range(settings.gateway_processes)]


def run(settings: Settings) -> int:
    """Foreground: start everything, keep it running, stop everything on Ctrl-C or SIGTERM."""
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor = Supervisor(
        settings.run_dir / STATE_FILE,
        limit=settings.restart_limit,
        window_s=settings.restart_window_s,
        extra_state={"base_url": base_url(settings), "log_file": str(log_file(settings))},
    )
    gateways = _gateway_names(settings)
    cluster = LocalCluster(settings) if settings.local_broker else None
    brokers = [node.name for node in cluster.nodes] if cluster else []
    code = 0
    try:
        if cluster is not None:
            cluster.fetch()
            # All launched before any is waited for: a node of three serves once a quorum has
            # formed. A launch that fails half-way leaves none of them running.
            try:
                cluster.launch()
            except BaseException:
                cluster.stop()
                raise
            for node in cluster.nodes:
                supervisor.start(node.name, BrokerHandle(node))
            cluster.wait_started()
        token = asyncio.run(_prepare(settings))
        supervisor.start("worker", _role("worker", settings))
        # The worker owns the store (and in embedded mode answers reads): up before the gateway.
        _wait_ready(settings, supervisor, READY_TIMEOUT_S, f"{settings.worker_query_url}/internal/health")
        # The alert evaluator reads and writes through the worker (embedded) or the server;
        # it needs no gateway (rules reach it through the store).
        supervisor.start("alerts", _role("alerts", settings))
        # Several gateways share the port (SO_REUSEPORT): the kernel spreads connections over
        # them, each answers only once it listens, so one /ready answer is enough to go on.
        for name in gateways:
            supervisor.start(name, _role("gateway", settings))
        _wait_ready(settings, supervisor, READY_TIMEOUT_S)
        (settings.run_dir / "runner.pid").write_text(str(os.getpid()))
        print(
            f"\nMillrace is running.\n  base URL: {base_url(settings)}\n"
            f"  API key (project 'dev', all scopes): {token}\n"
            f"  process logs: {log_file(settings)}   state: millrace status\n"
            f"  try: curl -X POST {base_url(settings)}/v1/drain -H 'Authorization: {token}' "
            "-H 'Content-Type: application/json' -d @your-logs.json\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stopping:
            supervisor.check()
            time.sleep(POLL_S)
    except GaveUp as exc:
        log.error("supervisor_gave_up", reason=str(exc), log_file=str(log_file(settings)))
        print(f"Millrace is stopping: {exc}. See {log_file(settings)}", flush=True)
        code = 1
    except Exception as exc:
        log.error("run_failed", error=str(exc))
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Gateways first, all at once (each stops accepting and flushes its producer), then the
        # alert evaluator (its webhooks in flight are resumed by the next start), then the worker
        # (stores and commits what it consumed), then the brokers, together.
        supervisor.stop([gateways, ["alerts"], ["worker"], brokers], STOP_TIMEOUT_S)
        (settings.run_dir / "runner.pid").unlink(missing_ok=True)
        print("Millrace stopped.", flush=True)
    return code


def up(settings: Settings) -> int:
    """Background: start `millrace run` detached; return once the gateway is ready."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    pid_file = settings.run_dir / "up.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        print(f"Millrace is already running (pid {pid_file.read_text().strip()}); `make down` stops it.")
        return 0
    log_path = settings.run_dir / "millrace.log"
    with log_path.open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "run"],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(child.pid))
    try:
        wait_http_ok(f"http://127.0.0.1:{settings.port}/ready", READY_TIMEOUT_S, [child])
    except (RuntimeError, TimeoutError) as exc:
        print(f"Millrace did not become ready: {exc}\nSee {log_path}", file=sys.stderr)
        _terminate(child)
        pid_file.unlink(missing_ok=True)
        return 1
    token = dev_key_file(settings).read_text().strip()
    print(f"Millrace is up (pid {child.pid}, logs in {log_path}).")
    print(f"  base URL: {base_url(settings)}")
    print(f"  API key (project 'dev', all scopes): {token}")
    return 0


def down(settings: Settings) -> int:
    pid_file = settings.run_dir / "up.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 90
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
    # A runner killed hard leaves its children behind: its state file still names them.
    _stop_orphans(settings)
    # ...and the brokers, whose pid files still find them.
    if settings.local_broker:
        LocalCluster(settings).stop()
    print("Millrace is down.")
    return 0


def _stop_orphans(settings: Settings) -> None:
    """SIGTERM the worker and gateways a dead runner's state file lists (gateways first), if
    those pids are still `ops.cli` processes of this home, and wait for them."""
    path = settings.run_dir / STATE_FILE
    state = read_state(path)
    if state is None:
        return
    names = {"worker": 1}
    listed = sorted(state.get("processes", []), key=lambda p: names.get(p["name"], 0))
    for entry in listed:
        pid = entry.get("pid")
        if entry["name"].startswith("broker") or not isinstance(pid, int) or not _is_ours(pid, settings):
            continue
        log.warning("stopping_orphan", process=entry["name"], pid=pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not process_exited(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not process_exited(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)


def _is_ours(pid: int, settings: Settings) -> bool:
    """An `ops.cli` process started for this MILLRACE_HOME (not a recycled pid)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"ops.cli" in args and f"MILLRACE_HOME={settings.home}".encode() in env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True
