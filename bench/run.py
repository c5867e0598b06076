"""`make bench` / `python -m bench`: Millrace end to end, and this machine's Kafka and ClickHouse baselines.

1. Build a pool of request bodies (checked with the project's parser) and write them to a file.
2. Start a Millrace of the bench's own (`millrace up`, own MILLRACE_HOME and free ports),
   create a key for project bench-<timestamp>, so the counts are this run's alone, and
   measure the pipeline's idle CPU.
3. Warm up (--warmup, 40 s): the same load for a project of its own, then wait until it has
   landed. A freshly started broker spends ~5 CPU s in its JIT compilers over its first
   minute of load, then next to none; a broker in service paid that long ago.
4. Spawn the load processes; once they have loaded their bodies, release them together
   for --duration seconds.
5. Every second: acknowledged logs (shared counters) and CPU seconds of every process
   (/proc); in a thread of its own, landed logs and lag (the worker's /internal/v1/stats).
6. After the load: wait (bounded) until the landed count reaches the acknowledged one.
7. Baselines on the same broker and machine: Kafka's ProducerPerformance, raw chDB inserts.
8. `millrace down` (always), then the table, bench/out/<ts>.json, latest.json and the chart.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

import formats
from bench import load, payloads, peer, procs, report, sampling
from bench.baselines import kafka_produce
from millrace import internal

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
IDLE_S = 3.0  # seconds of idle CPU measured before the load starts
TAIL_POLL_S = 0.2  # seconds between landed counts once the load has stopped...
TAIL_FINE_S = 10.0  # ...for this long, then every --stats-interval


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    p.add_argument("--dialect", choices=sorted(payloads.DIALECTS), default="astralog")
    p.add_argument(
        "--batch-size", type=int, default=500, help="logs per request (capped at a dialect's maximum)"
    )
    p.add_argument("--gzip", action="store_true", help="send bodies gzip-compressed (Content-Encoding: gzip)")
    p.add_argument("--connections", type=int, default=16, help="requests in flight per load process")
    p.add_argument("--load-procs", type=int, default=1, help="load-generator processes")
    p.add_argument(
        "--rate",
        type=float,
        default=0,
        help="target logs/s over all load processes (default 0: closed loop, as fast as the gateway answers)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=40,
        help="seconds of the same load, for a project of its own, before the measured run "
        "(default 40; 0: none; only when the bench starts its own pipeline)",
    )
    p.add_argument("--pool", type=int, default=64, help="distinct request bodies generated up front")
    p.add_argument("--sample-interval", type=float, default=1.0, help="seconds between counter/CPU samples")
    p.add_argument(
        "--stats-interval",
        type=float,
        default=1.0,
        help="seconds between polls of the landed count (each one is a query the worker pays for)",
    )
    p.add_argument(
        "--lag-interval",
        type=float,
        default=5.0,
        help="seconds between polls that also ask for the lag quantiles (a dearer query)",
    )
    p.add_argument(
        "--tail-timeout", type=float, default=300, help="seconds to wait for the tail to land (default 300)"
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="every dialect in turn, each on a pipeline started afresh with its own warm-up; one table",
    )
    p.add_argument(
        "--peer",
        choices=["victorialogs"],
        default=None,
        help="after Millrace, the same AstraLog logs and load against a peer store (bench/peer.py)",
    )
    p.add_argument("--baseline-seconds", type=float, default=15)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument(
        "--home",
        type=Path,
        default=None,
        help="MILLRACE_HOME of the bench's pipeline (default bench/out/home; "
        "with --no-start: the running one's, $MILLRACE_HOME or .millrace, to find its processes)",
    )
    p.add_argument(
        "--keep-data", action="store_true", help="keep the previous run's broker and ClickHouse data"
    )
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--keep-work", action="store_true", help="keep bench/out/<ts>-work (bodies, tool logs)")
    p.add_argument("--no-start", action="store_true", help="bench an already running Millrace (--url, --key)")
    p.add_argument("--url", default="", help="with --no-start: the gateway's base URL")
    p.add_argument("--key", default="", help="with --no-start: an API key with logs:write")
    p.add_argument("--project", default="", help="with --no-start: the key's project (for landed counts)")
    p.add_argument(
        "--stats-url",
        default="",
        help="with --no-start: the worker's loopback port (default http://127.0.0.1:$MILLRACE_WORKER_QUERY_PORT)",
    )
    args = p.parse_args(argv)
    if args.no_start and not (args.url and args.key):
        p.error("--no-start needs --url and --key")
    if args.no_start:
        try:
            load.plain_http(args.url)
        except ValueError as exc:
            p.error(f"--url: {exc}")
    if args.peer and args.dialect != "astralog":
        p.error("--peer sends AstraLog's logs: compare it with --dialect astralog")
    if args.no_start and args.sweep:
        p.error("--sweep needs the bench's own pipeline (it creates a project per dialect)")
    if args.duration <= 0 or args.connections < 1 or args.load_procs < 1 or args.batch_size < 1:
        p.error("--duration, --connections, --load-procs and --batch-size must be positive")
    if args.home is None:
        args.home = Path(os.environ.get("MILLRACE_HOME", ".millrace")) if args.no_start else OUT / "home"
    args.home = args.home.resolve()
    return args


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    java = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30, check=False)
        java = (done.stderr.splitlines() or [""])[0]
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "java": java,
    }


def _wipe(
    home: Path, parts: tuple[str, ...] = ("kafka/data", "kafka/cluster.id", "clickhouse", "run", "dev-key")
) -> None:
    """Fresh broker data and store for a reproducible run; the fetched broker jars are kept."""
    for sub in parts:
        path = home / sub
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@dataclass(slots=True)
class Target:
    """What the load is sent to and how its results are read back."""

    url: str
    key: str
    project: str
    stats_base: str
    pids: dict[str, int]
    pipeline: procs.Pipeline | None = None  # ours to stop, unless --no-start


def start(args: argparse.Namespace, stamp: str) -> Target:
    if args.no_start:
        query_port = os.environ.get("MILLRACE_WORKER_QUERY_PORT", "8091")
        pids = {
            role: pid
            for role in ("gateway", "worker")
            if (pid := procs.find_role(role, args.home)) is not None
        }
        with contextlib.suppress(OSError, ValueError):
            pids["kafka"] = int((args.home / "run" / "kafka.pid").read_text().strip())
        if not procs.alive(pids.get("kafka", 0)):
            pids.pop("kafka", None)
        return Target(
            args.url.rstrip("/"),
            args.key,
            args.project,
            (args.stats_url or f"http://127.0.0.1:{query_port}").rstrip("/"),
            pids,
        )
    stale = procs.Pipeline(args.home, 0, 0, 0)
    if stale.runner_pid() is not None:
        print("a previous bench pipeline is still up in this home; stopping it", flush=True)
        stale.down()
    if not args.keep_data:
        _wipe(args.home)
    kafka_port = procs.free_port(pair=True)
    port = procs.free_port(taken={kafka_port, kafka_port + 1})
    pipeline = procs.Pipeline(
        args.home, port, kafka_port, procs.free_port(taken={kafka_port, kafka_port + 1, port})
    )
    print(
        f"starting Millrace (home {args.home}, gateway :{pipeline.port}, kafka :{pipeline.kafka_port}, "
        f"worker :{pipeline.query_port}) ...",
        flush=True,
    )
    target = Target(pipeline.url, "", f"bench-{stamp.lower()}", pipeline.stats_base, {}, pipeline)
    started = time.monotonic()
    try:
        pipeline.up()
        target.key = pipeline.create_key(target.project)
    except BaseException:
        pipeline.down()  # `up` cleans up after itself, but not if it was interrupted or timed out
        raise
    target.pids = pipeline.pids()
    print(
        f"up in {time.monotonic() - started:.0f}s; pids {target.pids}; project {target.project}", flush=True
    )
    return target


@dataclass(slots=True)
class LoadGroup:
    procs: list[Any] = field(default_factory=list)  # spawn-context Process objects
    conns: list[Connection] = field(default_factory=list)
    ready: list[Any] = field(default_factory=list)
    go: Any = None
    counters: Any = None

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def spawn_load(
    args: argparse.Namespace,
    target: Target,
    dialect: payloads.Dialect,
    per_body: int,
    bodies_file: Path,
    separator: bytes | None = None,
) -> LoadGroup:
    ctx = mp.get_context("spawn")
    group = LoadGroup(go=ctx.Event(), counters=ctx.Array("q", load.SLOTS * args.load_procs, lock=False))
    for i in range(args.load_procs):
        recv, send = ctx.Pipe(duplex=False)
        ready = ctx.Event()
        cfg = load.LoadConfig(
            url=target.url + dialect.path,
            headers=payloads.headers(dialect, target.key, args.gzip),
            bodies_file=str(bodies_file),
            logs_per_body=per_body,
            connections=args.connections,
            duration_s=args.duration,
            gzip=args.gzip,
            index=i,
            rate_rps=args.rate / per_body / args.load_procs if args.rate > 0 else 0.0,
            separator=dialect.separator if separator is None else separator,
        )
        proc = ctx.Process(target=load.main, args=(cfg, group.counters, ready, group.go, send), daemon=True)
        proc.start()
        send.close()  # the child holds the sending end; EOF here then means it died
        group.procs.append(proc)
        group.conns.append(recv)
        group.ready.append(ready)
        assert proc.pid is not None  # started
        target.pids[f"load-{i}"] = proc.pid
    return group


def _stats_url(target: Target, project: str, since_ns: int) -> str:
    return f"{target.stats_base}/internal/v1/stats?project={quote(project)}&since_ns={since_ns}"


def _stats_headers(args: argparse.Namespace) -> dict[str, str] | None:
    # The worker's internal port wants the token of the pipeline's state directory.
    token_file = args.home / "internal-token"
    return {internal.HEADER: token_file.read_text().strip()} if token_file.exists() else None


def warm_up(
    args: argparse.Namespace, target: Target, dialect: payloads.Dialect, per_body: int, bodies_file: Path
) -> dict[str, Any]:
    """The same load for --warmup seconds under a project of its own, then wait until it landed.

    A freshly started pipeline pays one-off costs in its first seconds (the broker's JIT
    compilers took ~5 CPU s, the engine plans its first inserts); a pipeline in service has
    paid them long ago. The measured project's counts never include these logs.
    """
    assert target.pipeline is not None
    project = f"{target.project}-warmup"
    key = target.pipeline.create_key(project)
    procs.wait_for_key(target.url, payloads.headers(payloads.DIALECTS["astralog"], key))
    group = spawn_load(
        argparse.Namespace(**{**vars(args), "duration": args.warmup}),
        replace(target, key=key, pids={}),
        dialect,
        per_body,
        bodies_file,
    )
    try:
        for i, event in enumerate(group.ready):
            if not event.wait(120):
                raise RuntimeError(f"warm-up load process {i} did not get ready within 120 s")
        t0 = time.monotonic()
        stats = sampling.StatsPoller(
            _stats_url(target, project, time.time_ns()), t0, 1.0, _stats_headers(args)
        )
        group.go.set()
        acked = 0
        for i, conn in enumerate(group.conns):
            if not conn.poll(args.warmup + 120):
                raise RuntimeError(f"warm-up load process {i} did not finish within 120 s of its end")
            with contextlib.suppress(EOFError):
                acked += conn.recv()["acked_logs"]
        deadline = time.monotonic() + args.tail_timeout
        landed = -1
        while landed < acked:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm-up's logs did not land within {args.tail_timeout:g} s")
            row = stats.poll(lag=False)
            landed = row["landed"] if row else landed
            time.sleep(0.5)
    finally:
        group.stop()
    out = {
        "seconds": args.warmup,
        "project": project,
        "acked_logs": acked,
        "landed_logs": landed,
        "landed_after_s": round(time.monotonic() - t0, 1),
    }
    print(
        f"warm-up: {acked:,} logs acknowledged, {landed:,} landed after {out['landed_after_s']:.0f} s",
        flush=True,
    )
    return out


def _snapshot(pids: dict[str, int]) -> dict[str, dict[str, Any]]:
    return {
        name: {"cpu_s": procs.cpu_seconds(pid), "threads": procs.thread_cpu(pid)}
        for name, pid in pids.items()
    }


def _costs(
    pids: dict[str, int],
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    idle: dict[str, float],
    window_s: float,
    acked: int,
    landed: int,
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, pid in pids.items():
        c0, c1 = before[name]["cpu_s"], after[name]["cpu_s"]
        if c0 is None or c1 is None:
            out[name] = {"pid": pid, "error": "process not readable in /proc"}
            continue
        # The worker is charged per landed log (its output), the others per acknowledged log.
        logs = landed if name == "worker" else acked
        cpu = c1 - c0
        threads = {t: s - before[name]["threads"].get(t, 0.0) for t, s in after[name]["threads"].items()}
        top = sorted(((t, round(s, 2)) for t, s in threads.items() if s >= 0.05), key=lambda x: -x[1])[:8]
        out[name] = {
            "pid": pid,
            "cpu_s": round(cpu, 2),
            "cores": round(cpu / window_s, 2),
            "idle_cores": idle.get(name),
            "cpu_s_per_million_logs": round(cpu / logs * 1e6, 1) if logs else None,
            "cpu_us_per_log": round(cpu / logs * 1e6, 2) if logs else None,
            "peak_rss_mb": procs.peak_rss_mb(pid),
            "threads_cpu_s": dict(top),
        }
    return out


def idle_cores(target: Target, headers: dict[str, str] | None) -> dict[str, float]:
    """The pipeline's CPU over IDLE_S with no load: what it burns doing nothing.

    A pipeline the bench started is measured only once its worker answers its stats: until then
    it may still be opening the engine (seen: a whole core over the first seconds), which is
    start-up, not idling. Any HTTP answer will do; only a refused connection is waited out."""
    if target.pipeline is not None:
        deadline = time.monotonic() + 60
        while True:
            try:
                procs.http_json(
                    _stats_url(target, target.project, 0) + "&lag=0", timeout_s=10, headers=headers
                )
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    break  # measured anyway; the figure then says so
                time.sleep(0.5)
        time.sleep(1.0)
    pipeline_pids = {n: p for n, p in target.pids.items() if not n.startswith("load")}
    idle0 = {n: procs.cpu_seconds(p) for n, p in pipeline_pids.items()}
    time.sleep(IDLE_S)
    idle1 = {n: procs.cpu_seconds(p) for n, p in pipeline_pids.items()}
    return {n: round(((idle1[n] or 0) - (idle0[n] or 0)) / IDLE_S, 3) for n in pipeline_pids}


def measure(
    args: argparse.Namespace, target: Target, group: LoadGroup, idle: dict[str, float]
) -> dict[str, Any]:
    """Release the load, sample until it is done and the tail has landed; everything measured."""
    pipeline_pids = {n: p for n, p in target.pids.items() if not n.startswith("load")}
    for i, event in enumerate(group.ready):
        if not event.wait(120):
            raise RuntimeError(f"load process {i} did not get ready within 120 s")

    log_file = args.home / "run" / "millrace.log"
    log_offset = log_file.stat().st_size if log_file.exists() and not args.no_start else 0
    since_ns = time.time_ns()
    # A project the bench created holds this run's rows only: counted without the receive
    # times, which cost the worker a column more per row and poll (--no-start: since the start).
    stats_url = (
        _stats_url(target, target.project, 0 if target.pipeline is not None else since_ns)
        if target.project
        else None
    )
    before = _snapshot(pipeline_pids)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    ticks = sampling.Ticks(group.counters, args.load_procs, target.pids, t0)
    stats = (
        sampling.StatsPoller(stats_url, t0, args.stats_interval, _stats_headers(args), args.lag_interval)
        if stats_url
        else None
    )
    group.go.set()
    if stats:
        stats.start()

    results: dict[int, dict[str, Any]] = {}
    pending = list(group.conns)
    next_tick, next_print = args.sample_interval, 5.0
    try:
        while pending:
            for conn in wait(pending, timeout=max(0.0, t0 + next_tick - time.monotonic())):
                assert isinstance(conn, Connection)
                with contextlib.suppress(EOFError):  # died without a result: reported as missing
                    res = conn.recv()
                    results[res["index"]] = res
                pending.remove(conn)
            if time.monotonic() - t0 >= next_tick:
                tick = ticks.sample()
                next_tick += args.sample_interval
                if tick["t"] >= next_print:
                    print(sampling.progress(tick, ticks.rows, stats), flush=True)
                    next_print += 5.0
            if time.monotonic() - t0 > args.duration + 120:
                raise RuntimeError("the load processes did not finish within 120 s of the deadline")
        ticks.sample()
        acked = sum(r["acked_logs"] for r in results.values())

        # The tail: the last acknowledged requests may still be in Kafka or in the worker's batch.
        # Counted here every TAIL_POLL_S for the first seconds, so the moment it has all landed
        # is not a poll interval late; a long tail (a backlog) at the usual interval.
        landed_at: float | None = None
        if stats:
            stats.stop()  # one poller at a time: from here on the loop below polls
        tail_started = time.monotonic()
        deadline = tail_started + args.tail_timeout
        while stats and time.monotonic() < deadline:
            latest = stats.poll(lag=False)
            if latest and latest["landed"] >= acked:
                landed_at = latest["t"]
                break
            short = time.monotonic() - tail_started < TAIL_FINE_S
            time.sleep(TAIL_POLL_S if short else max(args.stats_interval, TAIL_POLL_S))
            if time.monotonic() - t0 >= next_tick:
                ticks.sample()
                next_tick += args.sample_interval
    finally:
        if stats:
            stats.stop()
    end = time.monotonic() - t0
    tick = ticks.sample()
    after = _snapshot(pipeline_pids)
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    final = stats.poll() if stats else None  # after the stop: the last word on counts and lag
    if stats:
        print(sampling.progress(tick, ticks.rows, stats), flush=True)
    landed = final["landed"] if final else None
    if landed is not None and landed_at is None and stats:
        # Not all landed in time: the rate runs to the first sample that saw the final count.
        landed_at = next((r["t"] for r in stats.rows if r["landed"] >= landed), end)

    hist: dict[int, int] = {}
    failed: dict[str, int] = {}
    for r in results.values():
        for b, n in r["latency_hist"].items():
            hist[int(b)] = hist.get(int(b), 0) + n
        for status, n in r["failed"].items():
            failed[status] = failed.get(status, 0) + n
    missing = sorted(set(range(args.load_procs)) - set(results))
    if missing:
        failed["load process died without a result"] = len(missing)
    # 4xx answers stored nothing; a timeout, a dropped connection, a 5xx or a load process that
    # died with requests in flight may have stored something.
    unknown = sum(n for k, n in failed.items() if not (k.isdigit() and 400 <= int(k) < 500))
    load_s = max((r["elapsed_s"] for r in results.values()), default=end)
    stats_rows = stats.rows if stats else []
    answers = [r["answer_ms"] for r in stats_rows]
    lo, hi = 0.1 * args.duration, 0.9 * args.duration
    millrace = {
        "url": target.url,
        "project": target.project,
        "acked_logs": acked,
        "ok_requests": sum(r["ok_requests"] for r in results.values()),
        "failed_requests": failed,
        "load_seconds": round(load_s, 2),
        "acked_per_s": round(acked / load_s) if load_s else 0,
        "landed_logs": landed,
        # More rows than acknowledged logs: requests of unknown outcome (timed out at the client,
        # 5xx) that were stored after all; with none of those, duplicates. With them the counts
        # cannot prove that no acknowledged log is missing behind the extras.
        "all_landed": None if landed is None else landed >= acked,
        "unknown_outcome_requests": unknown,
        "unexplained_extra": None if landed is None else landed > acked and not unknown,
        "landed_extra": None if landed is None else landed - acked,
        "landed_complete_at_s": None if landed_at is None else round(landed_at, 2),
        "tail_seconds": None if landed_at is None else round(landed_at - load_s, 2),
        "landed_per_s": round(landed / landed_at) if landed and landed_at else None,
        "steady_acked_per_s": sampling.steady(ticks.rows, "acked", lo, hi),
        "steady_landed_per_s": sampling.steady(stats_rows, "landed", lo, hi),
        "request_latency_ms": {
            "p50": load.quantile(hist, 0.5),
            "p90": load.quantile(hist, 0.9),
            "p99": load.quantile(hist, 0.99),
            "max": load.quantile(hist, 1.0),
            "source": "client side, 2xx requests only, request sent -> response read",
        },
        "readable_lag_ms": sampling.readable_lag(ticks.rows, stats_rows),
        "lag_ms": {
            "p50": final["lag_p50_ms"] if final else None,
            "p99": final["lag_p99_ms"] if final else None,
            "max": final["lag_max_ms"] if final else None,
            "source": "worker /internal/v1/stats, whole run: gateway receive -> row inserted (inserted_at)",
        },
        "stats_answers_ms": {
            "count": len(answers),
            "mean": round(sum(answers) / len(answers), 1) if answers else None,
            "max": max(answers, default=None),
            "note": "time the worker took to answer /internal/v1/stats (it shares the pipeline's event loop)",
        },
    }
    costs = _costs(pipeline_pids, before, after, idle, end, acked, landed if landed else acked)
    for r in sorted(results.values(), key=lambda r: r["index"]):
        name = f"load-{r['index']}"
        costs[name] = {
            "pid": target.pids[name],
            "cpu_s": round(r["cpu_s"], 2),
            "cores": round(r["cpu_s"] / r["elapsed_s"], 2) if r["elapsed_s"] else None,
            "cpu_s_per_million_logs": round(r["cpu_s"] / acked * 1e6, 1) if acked else None,
            "cpu_us_per_log": round(r["cpu_s"] / acked * 1e6, 2) if acked else None,
            "peak_rss_mb": round(r["peak_rss_mb"], 1),
        }
    own = (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
    costs["bench-parent"] = {
        "pid": os.getpid(),
        "cpu_s": round(own, 2),
        "cores": round(own / end, 2),
        "cpu_s_per_million_logs": round(own / acked * 1e6, 1) if acked else None,
        "cpu_us_per_log": round(own / acked * 1e6, 2) if acked else None,
    }
    return {
        "millrace": millrace,
        "processes": costs,
        "measure_window_s": round(end, 2),
        "worker_batches": None if args.no_start else report.worker_batches(log_file, log_offset),
        "timeline": {"ticks": ticks.rows, "stats": stats_rows},
    }


def baselines(
    args: argparse.Namespace, pipeline: procs.Pipeline | None, bodies_file: Path, per_body: int, work: Path
) -> dict[str, Any]:
    from millrace.config import Settings
    from millrace.kafka.topics import ENVELOPE_OVERHEAD

    out: dict[str, Any] = {}
    settings = Settings.from_env(pipeline.env if pipeline else None)
    if pipeline is None:
        out["kafka_produce"] = {"error": "skipped with --no-start (it needs the bench's own broker)"}
    elif payloads.DIALECTS[args.dialect].content_type == "application/x-protobuf":
        # The tool reads its payload file as text: binary bodies would not be sent as they are.
        out["kafka_produce"] = {"error": "skipped for binary bodies (ProducerPerformance reads text)"}
    else:
        print(f"baseline: Kafka ProducerPerformance for ~{args.baseline_seconds:.0f}s ...", flush=True)
        try:
            out["kafka_produce"] = kafka_produce(
                lib_dir=settings.home / "kafka" / "lib",
                settings=settings,
                bodies_file=bodies_file,
                logs_per_body=per_body,
                seconds=args.baseline_seconds,
                partitions=settings.partitions,
                linger_ms=settings.linger_ms,
                compression=settings.kafka_compression,
                max_bytes=settings.max_decompressed_bytes + ENVELOPE_OVERHEAD,
                log_file=work / "producer-performance.log",
                separator=payloads.DIALECTS[args.dialect].separator,
            )
        except Exception as exc:  # a failed baseline is reported, it does not void the run
            out["kafka_produce"] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"baseline: ClickHouse (chDB) inserts for ~{args.baseline_seconds:.0f}s ...", flush=True)
    cmd = [
        sys.executable,
        "-m",
        "bench.baselines",
        "clickhouse",
        "--bodies",
        str(bodies_file),
        "--dialect",
        args.dialect,
        "--batch-rows",
        str(settings.batch_rows),
        "--seconds",
        str(args.baseline_seconds),
    ]
    try:
        done = subprocess.run(
            cmd, cwd=REPO, capture_output=True, text=True, timeout=args.baseline_seconds + 300, check=False
        )
    except subprocess.TimeoutExpired:
        out["clickhouse_insert"] = {"error": "timed out"}
        return out
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        out["clickhouse_insert"] = {"error": f"exit {done.returncode}: {done.stderr[-2000:]}"}
    else:
        out["clickhouse_insert"] = orjson.loads(lines[-1])
    return out


def _ensure_gone(pids: dict[str, int]) -> None:
    """`millrace down` stops everything; anything of ours that survived it is named and ended."""
    for name, pid in pids.items():
        if name.startswith("load"):
            continue
        if procs.alive(pid) and procs.cmdline(pid):
            print(f"warning: {name} (pid {pid}) survived `millrace down`; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def prepare(args: argparse.Namespace, name: str, work: Path) -> tuple[payloads.Dialect, int, Path, float]:
    """Generate and check one dialect's body pool and write it where the load processes read it."""
    dialect = payloads.DIALECTS[name]
    per_body = payloads.batch_size(dialect, args.batch_size)
    if per_body != args.batch_size:
        print(f"note: {dialect.name} takes at most {per_body} logs per request; using {per_body}")

    print(f"generating {args.pool} {dialect.name} bodies of {per_body} logs ...", flush=True)
    bodies = payloads.bodies(dialect, per_body, args.pool)
    for body in bodies:
        payloads.check(dialect, body, per_body)
    bodies_file = work / f"bodies-{name}.ndjson"
    bodies_file.write_bytes(payloads.pool_bytes(dialect, bodies))
    return dialect, per_body, bodies_file, sum(map(len, bodies)) / len(bodies)


def measure_fresh(args: argparse.Namespace, target: Target, name: str, work: Path) -> dict[str, Any]:
    """One more dialect of a sweep on `target`, a pipeline just started: its idle cost, its
    own warm-up, the load, and its measurement (the timeline left out: the main run's is charted)."""
    dialect, per_body, bodies_file, _ = prepare(args, name, work)
    procs.wait_for_key(target.url, payloads.headers(payloads.DIALECTS["astralog"], target.key))
    # What this pipeline's processes imported: a source changed since the build (an edit during
    # a long sweep) makes them run the parsers from source, and the figures stop comparing.
    compiled = formats.native.built() if formats.NATIVE else False
    if formats.NATIVE and not compiled:
        print(f"warning: {name} runs the parsers from source (they changed since `make native`)", flush=True)
    idle = idle_cores(target, _stats_headers(args))
    warmed = warm_up(args, target, dialect, per_body, bodies_file) if args.warmup > 0 else None
    group = spawn_load(args, target, dialect, per_body, bodies_file)
    print(f"sweep: {dialect.name}, {per_body} logs/request, {args.duration:.0f}s", flush=True)
    try:
        measured = measure(argparse.Namespace(**{**vars(args), "dialect": name}), target, group, idle)
    finally:
        group.stop()
    measured.pop("timeline", None)
    measured["parsers_compiled"] = compiled
    if warmed is not None:
        measured["warmup"] = warmed
    return measured


def stop(args: argparse.Namespace, target: Target) -> None:
    """Stop the bench's own pipeline and, unless --keep-data, drop its topic data and rows."""
    if target.pipeline is None:
        return
    print("stopping Millrace ...", flush=True)
    target.pipeline.down()
    _ensure_gone(target.pids)
    if not args.keep_data:
        # A 60 s run leaves gigabytes of topic data and rows; the logs in run/ stay for a look.
        _wipe(args.home, ("kafka/data", "kafka/cluster.id", "clickhouse"))


def run_peer(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The same AstraLog logs, as NDJSON, with the same load, into VictoriaLogs (bench/peer.py)."""
    binary = peer.build()
    _, per_body, bodies_file, _ = prepare(args, "astralog", work)
    lines = payloads.read_pool(payloads.DIALECTS["astralog"], bodies_file.read_bytes())
    ndjson_file = work / "bodies-victorialogs.ndjson"
    ndjson_file.write_bytes(peer.SEPARATOR.join(peer.ndjson(b) for b in lines))
    vl = peer.start(binary, args.out / "victorialogs.log")
    print(
        f"peer: VictoriaLogs {peer.VERSION} at {vl.url} (pid {vl.proc.pid}), {args.duration:.0f}s", flush=True
    )
    target = Target(vl.url, "", "", "", {})
    group = spawn_load(args, target, peer.DIALECT, per_body, ndjson_file, peer.SEPARATOR)
    try:
        for i, event in enumerate(group.ready):
            if not event.wait(120):
                raise RuntimeError(f"peer load process {i} did not get ready within 120 s")
        cpu0 = procs.cpu_seconds(vl.proc.pid) or 0.0
        t0 = time.monotonic()
        group.go.set()
        acked, load_s, failed = 0, 0.0, 0
        for i, conn in enumerate(group.conns):
            if not conn.poll(args.duration + 120):
                raise RuntimeError(f"peer load process {i} did not finish within 120 s of its end")
            tally = conn.recv()
            acked += tally["acked_logs"]
            load_s = max(load_s, tally["elapsed_s"])
            failed += sum(tally["failed"].values())
        deadline, landed = time.monotonic() + args.tail_timeout, 0
        while (landed := vl.count()) < acked and time.monotonic() < deadline:
            time.sleep(0.5)  # VictoriaLogs makes new rows searchable within about a second
        landed_s = time.monotonic() - t0
        cpu1 = procs.cpu_seconds(vl.proc.pid) or cpu0
    finally:
        group.stop()
        vl.stop()
    out = {
        "name": "victorialogs",
        "version": peer.VERSION,
        **peer.summary(acked, landed, load_s, landed_s, cpu1 - cpu0),
    }
    out["failed_requests"] = failed
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = args.out / f"{stamp}-work"
    work.mkdir(parents=True)
    dialect, per_body, bodies_file, avg_body = prepare(args, args.dialect, work)
    result: dict[str, Any] = {
        "version": 1,
        "started_at": stamp,
        "machine": machine(),
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "key"},
            "logs_per_request": per_body,
            "avg_body_bytes": round(avg_body),
            "avg_log_bytes": round(avg_body / per_body, 1),
            # Whether this checkout's compiled parsers are current (formats/native.py): what the
            # pipeline the bench starts runs. Figures from source and compiled do not compare.
            "parsers_compiled": formats.NATIVE,
        },
    }
    target: Target | None = None
    group: LoadGroup | None = None
    try:
        target = start(args, stamp)
        procs.wait_for_key(target.url, payloads.headers(payloads.DIALECTS["astralog"], target.key))
        idle = idle_cores(target, _stats_headers(args))  # before the warm-up, whose merges go on for a while
        if args.warmup > 0 and target.pipeline is not None:
            result["warmup"] = warm_up(args, target, dialect, per_body, bodies_file)
        group = spawn_load(args, target, dialect, per_body, bodies_file)
        print(
            f"load: {args.load_procs} process(es) x {args.connections} connections, {args.duration:.0f}s, "
            f"{dialect.name} {per_body} logs/request, {avg_body / 1024:.0f} KiB/request"
            + (" (gzip)" if args.gzip else "")
            + (", parsers compiled" if formats.NATIVE else ", parsers from source (`make native`)"),
            flush=True,
        )
        result.update(measure(args, target, group, idle))
        group.stop()
        if args.sweep and target.pipeline is not None:
            # Each other dialect on a pipeline started afresh (bench/README.md, "Sweep"): on a
            # reused one it paid the merges of every dialect before it.
            result["sweep"] = {args.dialect: {k: result[k] for k in ("millrace", "processes")}}
            # (sweep key, dialect, project suffix); the reference once more, last: the machine
            # drifts over a sweep's half hour, and ratios to one run at one end of it would carry
            # that drift (bench/README.md).
            runs = [(name, name, name) for name in sorted(set(payloads.DIALECTS) - {args.dialect})]
            runs.append((report.again(report.REFERENCE), report.REFERENCE, f"{report.REFERENCE}-again"))
            for key, name, suffix in runs:
                stop(args, target)
                target = None  # stopped: never stopped twice, whatever `start` does next
                # A project of its own (`bench-<ts>-<suffix>`): with --keep-data the rows stay.
                target = start(args, f"{stamp}-{suffix}")
                result["sweep"][key] = measure_fresh(args, target, name, work)
            result["sweep_table"] = report.sweep_rows(result["sweep"])
        if not args.no_baselines:
            result["baselines"] = baselines(args, target.pipeline, bodies_file, per_body, work)
            result["baselines"]["comparison"] = report.compare(result)
            result["millrace"]["stats_poll_cost_estimate"] = report.poll_cost(result)
    finally:
        if group is not None:
            group.stop()
        if target is not None:
            stop(args, target)
        if not args.keep_work and not args.peer:
            shutil.rmtree(work, ignore_errors=True)
    if args.peer:  # after Millrace is down, so the two never share the machine
        try:
            result["peer"] = run_peer(args, work)
        finally:
            if not args.keep_work:
                shutil.rmtree(work, ignore_errors=True)
        own = report.sweep_rows({args.dialect: result})[0]
        result["peer"]["millrace_over_peer"] = peer.ratios(own, result["peer"])
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print()
    print(report.table(result))
    if result.get("sweep_table"):
        print()
        print(report.sweep_table(result["sweep_table"]))
    if result.get("peer"):
        print()
        print(report.peer_table(result))
    paths = report.write(result, args.out)
    print(
        "\nwrote " + ", ".join(str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in paths)
    )
    m = result.get("millrace") or {}
    return 0 if m.get("all_landed") is not False and not m.get("unexplained_extra") else 1
