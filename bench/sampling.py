"""Time series taken while the bench runs: two independent clocks.

Ticks (every --sample-interval, in the main thread): acknowledged and failed counts from
the load processes' shared counters, and CPU seconds of every process from /proc.

Stats (a thread of its own): the worker's /internal/v1/stats: the landed count every
--stats-interval, the lag quantiles with it every --lag-interval (they read two more
columns of every row so far, the count only one). It is polled apart from the ticks
because the worker answers it on the same event loop as its pipeline, and that loop can
be busy for seconds; a slow answer must not stall the ticks. A stats sample is stamped
with the time its answer arrived, so "landed by t" can only be late, never early.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench import load, procs


class Ticks:
    def __init__(self, counters: Any, nprocs: int, pids: dict[str, int], t0: float) -> None:
        self.counters = counters
        self.nprocs = nprocs
        self.pids = pids
        self.t0 = t0
        self.rows: list[dict[str, Any]] = []

    def totals(self) -> tuple[int, int]:
        acked = sum(self.counters[i * load.SLOTS + load.ACKED] for i in range(self.nprocs))
        failed = sum(self.counters[i * load.SLOTS + load.FAILED] for i in range(self.nprocs))
        return int(acked), int(failed)

    def sample(self) -> dict[str, Any]:
        acked, failed = self.totals()
        row = {
            "t": round(time.monotonic() - self.t0, 3),
            "acked": acked,
            "failed": failed,
            "cpu_s": {name: procs.cpu_seconds(pid) for name, pid in self.pids.items()},
        }
        self.rows.append(row)
        return row


class StatsPoller(threading.Thread):
    """Polls the worker's stats about once per interval, never more than one request at a time."""

    def __init__(
        self,
        url: str,
        t0: float,
        interval_s: float,
        headers: dict[str, str] | None = None,
        lag_interval_s: float = 0.0,
    ) -> None:
        super().__init__(name="stats-poller", daemon=True)
        self.url = url
        self.headers = headers or {}
        self.t0 = t0
        self.interval_s = interval_s
        self.lag_interval_s = lag_interval_s  # 0: the lag with every poll
        self._lag_due = 0.0
        self.rows: list[dict[str, Any]] = []
        self.errors = 0
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def poll(self, lag: bool = True) -> dict[str, Any] | None:
        sent = time.monotonic()
        try:
            stats = procs.http_json(self.url + ("" if lag else "&lag=0"), timeout_s=30, headers=self.headers)
        except OSError:
            with self._lock:
                self.errors += 1
            return None
        done = time.monotonic()
        lag = stats.get("lag_ms") or {}
        row = {
            "t": round(done - self.t0, 3),
            "landed": int(stats["logs"]),
            "lag_p50_ms": lag.get("p50"),
            "lag_p99_ms": lag.get("p99"),
            "lag_max_ms": lag.get("max"),
            "answer_ms": round((done - sent) * 1000, 1),
        }
        with self._lock:
            self.rows.append(row)
        return row

    def latest(self) -> dict[str, Any] | None:
        with self._lock:
            return self.rows[-1] if self.rows else None

    def run(self) -> None:
        while not self._halt.is_set():
            sent = time.monotonic()
            lag = sent >= self._lag_due
            if lag:
                self._lag_due = sent + self.lag_interval_s
            self.poll(lag)
            # Next request one interval after the last was sent, but give the worker a breather
            # when its answer took longer than that.
            wait_s = max(sent + self.interval_s - time.monotonic(), 0.2)
            self._halt.wait(wait_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(35)


def rate(rows: list[dict[str, Any]], field: str, window_s: float = 5.0) -> float | None:
    """Per-second rate of `field` over the last `window_s` of `rows` (a trailing average)."""
    if len(rows) < 2:
        return None
    last = rows[-1]
    past = next((r for r in reversed(rows) if last["t"] - r["t"] >= window_s), rows[0])
    dt: float = last["t"] - past["t"]
    return float(last[field] - past[field]) / dt if dt > 0 else None


def steady(rows: list[dict[str, Any]], field: str, lo: float, hi: float) -> float | None:
    """Rate of `field` between the first sample at or after `lo` and the last at or before `hi`."""
    a = next((r for r in rows if r["t"] >= lo), None)
    b = next((r for r in reversed(rows) if r["t"] <= hi), None)
    if a is None or b is None or b["t"] <= a["t"]:
        return None
    span: float = b["t"] - a["t"]
    return round(float(b[field] - a[field]) / span, 1)


def readable_lag(ticks: list[dict[str, Any]], stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Acknowledged -> readable, from the bench's own two counts: the logs acknowledged by a
    tick are taken as readable at the first stats answer whose landed count reaches that
    tick's acknowledged count, each tick weighted by the logs it acknowledged. It assumes logs
    land in about the order they were acknowledged (Kafka keeps each partition's order, the
    worker inserts in batches); its resolution is the tick and poll intervals (~1 s)."""
    lags: list[tuple[float, int]] = []  # (seconds, logs)
    unseen, previous, j = 0, 0, 0
    for tick in ticks:
        logs = tick["acked"] - previous
        if logs <= 0:
            continue
        previous = tick["acked"]
        while j < len(stats) and stats[j]["landed"] < tick["acked"]:
            j += 1
        if j == len(stats):
            unseen += logs
            continue
        lags.append((max(0.0, stats[j]["t"] - tick["t"]), logs))

    def quantile(q: float) -> float | None:
        total = sum(n for _, n in lags)
        seen = 0
        for lag_s, n in sorted(lags):
            seen += n
            if seen >= q * total:
                return round(lag_s * 1000, 1)
        return None

    return {
        "p50": quantile(0.5),
        "p99": quantile(0.99),
        "max": round(max(lag for lag, _ in lags) * 1000, 1) if lags else None,
        "logs_not_seen_landed": unseen,
        "source": "the bench's counts: acknowledged by tick t -> first stats answer counting them (~1 s)",
    }


def progress(tick: dict[str, Any], ticks: list[dict[str, Any]], stats: StatsPoller | None) -> str:
    acked = rate(ticks, "acked")
    latest = stats.latest() if stats else None
    landed_rate = rate(stats.rows, "landed") if stats else None
    # Most polls are counts only: the lag shown is the newest poll that asked for it.
    lagged = next((r for r in reversed(stats.rows) if r["lag_p99_ms"] is not None), None) if stats else None
    landed = f"{latest['landed']:,}" if latest else "?"
    # The worker answers stats late while it is busy: say how old the landed figures are.
    age = f" as of {tick['t'] - latest['t']:.0f}s ago" if latest and tick["t"] - latest["t"] >= 2 else ""
    return (
        f"[{tick['t']:6.1f}s] acked {acked or 0:,.0f} logs/s, landed "
        f"{'?' if landed_rate is None else f'{landed_rate:,.0f}'} logs/s (5 s avg) | "
        f"total acked {tick['acked']:,}, landed {landed}{age} | "
        f"lag p99 {_n(lagged['lag_p99_ms']) if lagged else '?'} ms | failed requests {tick['failed']}"
    )


def _n(value: float) -> str:
    return f"{value:,.0f}"
