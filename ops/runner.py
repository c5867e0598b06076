"""`millrace run` / `up` / `down`: the whole pipeline on one machine.

Order matters both ways. Up: broker, topics, dev key, worker (owns the embedded
engine, applies migrations), gateway. Down: gateway first (stops accepting, flushes
its producer), then the worker (stores and commits what it consumed), then the broker.
"""

from __future__ import annotations

import asyncio
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
from ops.broker import LocalBroker

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


def _spawn(role: str, settings: Settings) -> subprocess.Popen[bytes]:
    # Own session: a terminal's Ctrl-C reaches only the runner, which then stops
    # the children in the right order.
    return subprocess.Popen(
        [sys.executable, "-m", "ops.cli", role],
        start_new_session=True,
        env={**os.environ, "MILLRACE_HOME": str(settings.home)},
    )


def _wait_ready(
    settings: Settings, children: list[subprocess.Popen[bytes]], timeout_s: float, url: str | None = None
) -> None:
    """Poll `url` (default: the gateway's /ready) until it answers 200, while the children live."""
    wait_http_ok(url or f"http://127.0.0.1:{settings.port}/ready", timeout_s, children)


def wait_http_ok(url: str, timeout_s: float, children: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """Poll `url` until it answers 200; fail early if one of `children` exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in children:
            if child.poll() is not None:
                raise RuntimeError(f"{' '.join(map(str, child.args))} exited with {child.returncode}")  # type: ignore[arg-type]
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"no 200 answer from {url} within {timeout_s:.0f}s")


STOP_TIMEOUT_S = 40  # per stage (gateways, then the worker); `down` gives the runner 90 s in all


def _terminate(
    child: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S, *, signalled: bool = False
) -> None:
    """SIGTERM (once: a second one could cut a gateway's flush short), wait, then kill."""
    if child.poll() is None:
        if not signalled:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run(settings: Settings) -> int:
    """Foreground: start everything, print how to use it, stop everything on Ctrl-C or SIGTERM."""
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(settings) if settings.local_broker else None
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[subprocess.Popen[bytes]] = []
    code = 0
    try:
        if broker:
            broker.fetch()
            broker.start()
        token = asyncio.run(_prepare(settings))
        worker = _spawn("worker", settings)
        children.append(worker)
        # The worker owns the store (and in embedded mode answers reads): up before the gateway.
        _wait_ready(settings, children, READY_TIMEOUT_S, f"{settings.worker_query_url}/internal/health")
        # Several gateways share the port (SO_REUSEPORT): the kernel spreads connections over
        # them, each answers only once it listens, so one /ready answer is enough to go on.
        for _ in range(settings.gateway_processes):
            children.append(_spawn("gateway", settings))  # one by one: a failed spawn stops those before it
        _wait_ready(settings, children, READY_TIMEOUT_S)
        (settings.run_dir / "runner.pid").write_text(str(os.getpid()))
        print(
            f"\nMillrace is running.\n  base URL: {base_url(settings)}\n"
            f"  API key (project 'dev', all scopes): {token}\n"
            f"  try: curl -X POST {base_url(settings)}/v1/drain -H 'Authorization: {token}' "
            "-H 'Content-Type: application/json' -d @your-logs.json\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    log.error("process_exited", args=child.args, code=child.returncode)
                    stopping, code = True, 1
            time.sleep(0.2)
    except Exception as exc:
        log.error("run_failed", error=str(exc))
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Gateways first, all at once (each stops accepting and flushes its producer), then the
        # worker (stores and commits what it consumed).
        gateways = children[1:]
        for child in gateways:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S  # shared: they stop side by side
        for child in gateways:
            _terminate(child, max(1.0, deadline - time.monotonic()), signalled=True)
        for child in children[:1]:
            _terminate(child)
        if broker:
            broker.stop()
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
        _wait_ready(settings, [child], READY_TIMEOUT_S)
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
    # A runner killed hard leaves the broker behind; its pid file still finds it.
    if settings.local_broker:
        LocalBroker(settings).stop()
    print("Millrace is down.")
    return 0


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
