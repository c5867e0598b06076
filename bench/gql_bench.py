"""GQL read benchmark: N synthetic logs in a fresh embedded engine, then the two queries
the read side promises to answer in well under a second.

    .venv/bin/python -m bench.gql_bench --rows 10000000

The rows are generated inside the engine (INSERT ... SELECT FROM numbers()), through
the real migrations, so the materialized views (schema discovery, usage) run as in
production. They spread evenly over the last `--hours` hours across 20 services,
mostly in the project being queried and 10% in others. Each query goes through the
same path as `POST /v1/gql/query` minus HTTP: parse, compile, execute, render.
Not a timed test: timings depend on the machine; this prints them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from typing import Any

from millrace import store
from millrace.config import Settings
from reads.query import run_gql

PROJECT = "bench"
QUERIES = (
    ("search: errors of one service, last hour", "severity:error service:svc-3 last:1h | limit 100"),
    ("search: errors with a property, last hour", "severity:error orderId:ord_42* last:1h"),
    ("search: full text, last hour", "timeout last:1h | limit 50"),
    ("aggregate: count by service, last day", "count by service | last 24h"),
    ("aggregate: count by property, last day", "severity:error | count by region | top 10 | last 24h"),
)

# Column expressions over `number`; {now:Int64} and {span:Int64} are bound parameters.
_ROW = """
    if(number % 10 = 0, concat('other-', toString(number % 7)), 'bench') AS project,
    fromUnixTimestamp64Nano({now:Int64} - toInt64(cityHash64(number) % {span:Int64}), 'UTC') AS timestamp,
    fromUnixTimestamp64Nano({now:Int64}, 'UTC') AS observed_timestamp,
    ['debug', 'info', 'info', 'info', 'info', 'info', 'warn', 'error'][number % 8 + 1] AS level,
    level AS severity_text,
    [5, 9, 9, 9, 9, 9, 13, 17][number % 8 + 1] AS severity_number,
    concat(['request served', 'cache miss', 'upstream timeout', 'payment declined'][number % 4 + 1],
           ' #', toString(number)) AS message,
    concat('svc-', toString(number % 20)) AS service,
    'prod' AS environment,
    concat('host-', toString(number % 50)) AS host,
    map('orderId', concat('ord_', toString(number % 100000)),
        'region', ['eu', 'us', 'ap'][number % 3 + 1],
        'duration_ms', toString(number % 2000)) AS attributes,
    'bench' AS dialect
"""
_COLUMNS = (
    "project, timestamp, observed_timestamp, level, severity_text, severity_number, message, service, "
    "environment, host, attributes, dialect"
)


def load(client: Any, rows: int, hours: int, chunk: int) -> float:
    now = time.time_ns()
    started = time.perf_counter()
    done = 0
    while done < rows:
        n = min(chunk, rows - done)
        client.command(
            f"INSERT INTO logs ({_COLUMNS}) SELECT {_ROW} FROM numbers({{offset:UInt64}}, {{n:UInt64}})",
            parameters={"now": now, "span": hours * 3600 * 10**9, "offset": done, "n": n},
        )
        done += n
        print(f"  loaded {done:,} rows ({time.perf_counter() - started:.1f} s)", flush=True)
    return time.perf_counter() - started


def timed(client: Any, q: str, runs: int) -> tuple[list[float], list[float], Any]:
    """Wall and CPU ms per run. The engine runs in this process, so process CPU time is the
    query's own work: on a shared machine wall time also counts waiting for a core."""
    wall, cpu = [], []
    data: Any = None
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        data = run_gql(client, PROJECT, q, time.time_ns())["data"]
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return wall, cpu, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--hours", type=int, default=24, help="spread the rows over this many hours")
    parser.add_argument("--runs", type=int, default=5, help="runs per query (the first is cold)")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="rows per INSERT")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="millrace-gql-bench-") as home:
        settings = replace(Settings.from_env({"MILLRACE_HOME": home}))
        client = store.connect(settings)
        store.migrate(client)
        print(f"loading {args.rows:,} rows over {args.hours} h into {settings.clickhouse_dsn}")
        seconds = load(client, args.rows, args.hours, args.chunk)
        print(f"loaded in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s, materialized views included)")
        client.command("OPTIMIZE TABLE logs FINAL")  # as after the background merges of a running system
        ((stored,),) = client.query(
            "SELECT count() FROM logs WHERE project = {p:String}", parameters={"p": PROJECT}
        ).result_rows
        print(f"project '{PROJECT}' holds {stored:,} of {args.rows:,} rows\n")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"{'query':<46} {'cold ms':>8} {'median ms':>10} {'max ms':>8} {'CPU ms':>7}  result")
        for name, q in QUERIES:
            wall, cpu, data = timed(client, q, args.runs)
            warm, warm_cpu = wall[1:] or wall, cpu[1:] or cpu
            if data["mode"] == "search":
                outcome = f"{data['count']} rows"
            else:
                outcome = f"{data['total_groups']} groups, top {data['results'][0]['value']:,}"
            print(
                f"{name:<46} {wall[0]:>8.1f} {statistics.median(warm):>10.1f} {max(warm):>8.1f}"
                f" {statistics.median(warm_cpu):>7.1f}  {outcome}"
            )
            print(f"    {q}")
        client.close()


if __name__ == "__main__":
    main()
