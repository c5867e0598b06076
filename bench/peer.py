"""A peer for `python -m bench --peer victorialogs`: the same logs, the same load, another store.

VictoriaLogs (built once with `go install`, cached under ~/.cache/millrace-bench/) runs on a free
loopback port with a temporary data directory. The bench's AstraLog logs go to its
`/insert/jsonline` as NDJSON, from the same load generator with the same connection count;
what landed is counted with `* | count()` on `/select/logsql/query`, and its CPU is read from
/proc like Millrace's processes. It has no broker in its path, no exactly-once delivery and no
enrichment: it is a floor for "a log store behind HTTP", not an equal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from bench import payloads, procs

VERSION = "v1.52.2"
MODULE = "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "millrace-bench"
GO_FALLBACK = Path("/usr/local/go/bin/go")
# AstraLog's field names for the message and the event time (bench/payloads.py renders them).
MSG_FIELD, TIME_FIELD = "message", "timestamp"
SEPARATOR = b"\x1e"  # between NDJSON bodies in the bodies file: each body is many lines


def insert_path() -> str:
    return "/insert/jsonline?" + urlencode({"_msg_field": MSG_FIELD, "_time_field": TIME_FIELD})


# The load generator's view of the peer: where to post, with which headers (no key: loopback only).
DIALECT = payloads.Dialect(
    "victorialogs", "astralog", insert_path(), "application/stream+json", lambda _key: {}, lambda _evs: b""
)


def ndjson(body: bytes) -> bytes:
    """An AstraLog body ({"logs": [...]}) as NDJSON: one log object per line, fields as sent."""
    logs = orjson.loads(body)["logs"]
    return b"".join(orjson.dumps(log) + b"\n" for log in logs)


def build() -> Path:
    """The pinned victoria-logs binary, built with `go install` into the cache on first use."""
    gobin = CACHE / f"victorialogs-{VERSION}"
    binary = gobin / "victoria-logs"
    if binary.exists():
        return binary
    go = shutil.which("go") or (str(GO_FALLBACK) if GO_FALLBACK.exists() else None)
    if go is None:
        raise RuntimeError(
            f"--peer victorialogs needs Go to build it (`go install {MODULE}@{VERSION}`): "
            "install Go (https://go.dev/dl/) or put it on PATH"
        )
    gobin.mkdir(parents=True, exist_ok=True)
    print(f"building VictoriaLogs {VERSION} with {go} (once, into {gobin}) ...", flush=True)
    subprocess.run(
        [go, "install", f"{MODULE}@{VERSION}"], env={**os.environ, "GOBIN": str(gobin)}, check=True
    )
    return binary


@dataclass(slots=True)
class Peer:
    proc: subprocess.Popen[bytes]
    url: str
    data: Path

    def count(self) -> int:
        query = urlencode({"query": "* | count() as n"})
        with urllib.request.urlopen(f"{self.url}/select/logsql/query?{query}", timeout=30) as resp:
            lines = [line for line in resp.read().splitlines() if line]
        return int(orjson.loads(lines[0])["n"]) if lines else 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


def start(binary: Path, log_file: Path) -> Peer:
    port = procs.free_port()
    data = Path(tempfile.mkdtemp(prefix="millrace-bench-vlogs-"))
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={data}",
                "-retentionPeriod=100y",  # the bench's timestamps are now; nothing may age out
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    peer = Peer(proc, f"http://127.0.0.1:{port}", data)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{peer.url}/health", timeout=2):
                return peer
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                peer.stop()
                raise RuntimeError(f"victoria-logs did not start; see {log_file}") from None
            time.sleep(0.2)


def summary(acked: int, landed: int, load_s: float, landed_s: float, cpu_s: float) -> dict[str, Any]:
    """Rates as Millrace's are taken: acked over the load, landed until the last one was queryable."""
    return {
        "acked_logs": acked,
        "landed_logs": landed,
        "acked_per_s": round(acked / load_s) if load_s else None,
        "landed_per_s": round(landed / landed_s) if landed_s else None,
        "landed_complete_at_s": round(landed_s, 2),
        "cpu_s": round(cpu_s, 2),
        "cpu_us_per_log": round(cpu_s / landed * 1e6, 2) if landed else None,
    }


def ratios(millrace: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    """Millrace's landed rate and CPU per log (all its processes) over the peer's."""

    def over(a: Any, b: Any) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    return {
        "landed_per_s": over(millrace.get("landed_per_s"), peer.get("landed_per_s")),
        "cpu_us_per_log": over(millrace.get("all_us_per_log"), peer.get("cpu_us_per_log")),
    }
