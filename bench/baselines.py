"""What the same machine does without Millrace in the way, with the same payloads.

(a) Kafka produce: Kafka's own `org.apache.kafka.tools.ProducerPerformance` (the
    kafka-tools jar, fetched with the broker by deploy/kafka/pom.xml) sends the same
    request bodies as records to a topic of its own on the bench's broker, with the
    gateway's producer settings (acks=all, idempotence, linger, compression). It runs until its
    5-second windows cover `seconds`, after a first window that is left out as JVM warm-up.
(b) ClickHouse insert: a separate process opens a fresh chDB path, applies the project's
    migrations, turns the same bodies into rows with the project's own parser (the
    record's columns and defaults filled in Python), then inserts batches of the worker's
    batch size through clickhouse-connect's columnar `store.insert_columns` for `seconds`.
    It also times that parse + column build, and the worker's own way for comparison: the
    same rows as envelopes carry them, read by the engine in one `INSERT ... SELECT`
    (`schemas.rows`, `store.insert_select`).

`python -m bench.baselines clickhouse ...` is (b)'s process; bench.run starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import payloads
from bench.payloads import DIALECTS, Dialect

if TYPE_CHECKING:
    from millrace.config import Settings

PERF_CLASS = "org.apache.kafka.tools.ProducerPerformance"
_WINDOW = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency"
)


# -- (a) Kafka ---------------------------------------------------------------------------------


def java_client_props(settings: Settings) -> list[str]:
    """Java client properties for Millrace's own connection settings (the local broker's SASL
    credentials included), from the same `client_options` every Python client uses."""
    from millrace.kafka.topics import client_options

    options = client_options(settings)
    props = [
        f"bootstrap.servers={options['bootstrap_servers']}",
        f"security.protocol={options['security_protocol']}",
    ]
    if "sasl_mechanism" in options:
        module = (
            "plain.PlainLoginModule" if options["sasl_mechanism"] == "PLAIN" else "scram.ScramLoginModule"
        )
        props += [
            f"sasl.mechanism={options['sasl_mechanism']}",
            f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
            f'username="{options["sasl_plain_username"]}" password="{options["sasl_plain_password"]}";',
        ]
    return props


async def _create_topic(settings: Settings, topic: str, partitions: int, max_bytes: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from millrace.kafka.topics import client_options

    admin = AIOKafkaAdminClient(**client_options(settings), client_id="millrace-bench")
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(topic, partitions, 1, topic_configs={"max.message.bytes": str(max_bytes)})]
            )
        for _ in range(100):  # a producer needs a leader for every partition
            (desc,) = await admin.describe_topics([topic])
            if (
                desc["error_code"] == 0
                and desc["partitions"]
                and all(p["leader"] >= 0 for p in desc["partitions"])
            ):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"topic {topic} has no leaders")
    finally:
        await admin.close()


def kafka_produce(
    *,
    lib_dir: Path,
    settings: Settings,
    bodies_file: Path,
    logs_per_body: int,
    seconds: float,
    partitions: int,
    linger_ms: int,
    compression: str,
    max_bytes: int,
    log_file: Path,
    separator: bytes = b"\n",
) -> dict[str, Any]:
    if not any(lib_dir.glob("kafka-tools-*.jar")):
        return {"error": f"kafka-tools jar missing from {lib_dir} (deploy/kafka/pom.xml fetches it)"}
    java = shutil.which("java") or "java"
    topic = "bench.produce-baseline"
    asyncio.run(_create_topic(settings, topic, partitions, max_bytes))
    from millrace.keys import write_secret

    security_file = log_file.with_name("producer-client.properties")
    write_secret(security_file, "".join(f"{line}\n" for line in java_client_props(settings)))
    cmd = [
        java,
        "-Xmx512m",
        "-cp",
        f"{lib_dir}/*",
        PERF_CLASS,
        "--topic",
        topic,
        "--num-records",
        "1000000000",  # ended by us once the windows cover `seconds`
        "--payload-file",
        str(bodies_file),
        "--payload-delimiter",  # a regular expression to the tool: the separators used are literal
        separator.decode(),
        "--throughput",
        "-1",
        # Security settings go in a file: the tool's --producer-props cannot carry a value with
        # '=' in it (a JAAS line has several), and the file keeps the password off the command line.
        "--producer.config",
        str(security_file),
        "--producer-props",
        "acks=all",
        "enable.idempotence=true",
        f"linger.ms={linger_ms}",
        f"compression.type={compression}",
        f"max.request.size={max_bytes}",
    ]
    windows: list[tuple[int, float, float, float]] = []  # (records, seconds, MB/s, avg latency ms)
    with log_file.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        deadline = time.monotonic() + seconds + 60
        # The loop below waits on the tool's output; a tool that prints nothing must not hang the bench.
        watchdog = threading.Timer(seconds + 90, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                m = _WINDOW.match(line)
                if m:
                    records, rate = int(m.group(1)), float(m.group(2))
                    windows.append(
                        (records, records / rate if rate else 0.0, float(m.group(3)), float(m.group(4)))
                    )
                if sum(w[1] for w in windows[1:]) >= seconds or time.monotonic() > deadline:
                    break
        finally:
            watchdog.cancel()
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    steady = windows[1:]
    if not steady:
        return {"error": f"ProducerPerformance printed no usable window; see {log_file}"}
    records = sum(w[0] for w in steady)
    elapsed = sum(w[1] for w in steady)
    rate = records / elapsed
    return {
        "tool": PERF_CLASS,
        "topic": topic,
        "records": records,
        "seconds": round(elapsed, 1),
        "records_per_s": round(rate, 1),
        "logs_per_s": round(rate * logs_per_body),
        "mb_per_s": round(sum(w[2] * w[1] for w in steady) / elapsed, 1),
        "avg_latency_ms": round(sum(w[3] * w[0] for w in steady) / records, 1),
        "warmup_window_records": windows[0][0],
        "settings": f"acks=all idempotence linger.ms={linger_ms} compression={compression}",
        "command": " ".join(cmd),
    }


# -- (b) ClickHouse ----------------------------------------------------------------------------


@dataclass
class _Columns:
    """One table's rows as clickhouse-connect's columnar insert takes them."""

    table: str
    columns: dict[str, list[Any]]
    rows: int = 0


def _rows(bodies: list[bytes], dialect: Dialect, batch_rows: int) -> tuple[_Columns, float, int]:
    """A columnar batch of `batch_rows` rows (the record's defaults and the request facts
    filled in), and the parse + build CPU seconds it took."""
    from formats import PARSERS, ParseContext
    from schemas.record import PIPELINE_COLUMNS, TABLE_COLUMNS, TABLE_DEFAULTS

    parse = PARSERS[dialect.parser]
    batch: _Columns | None = None
    logs = 0
    started = time.process_time()
    offset = 0
    while batch is None or batch.rows < batch_rows:
        body = bodies[offset % len(bodies)]
        now = time.time_ns()
        parsed = parse(
            body, ParseContext(received_at_ns=now, path=dialect.path, content_type=dialect.content_type)
        )
        if batch is None:
            batch = _Columns(parsed.table, {name: [] for name in TABLE_COLUMNS[parsed.table]})
        facts = {"project": "bench-baseline", "observed_timestamp": now, "dialect": dialect.parser}
        facts.update(kafka_topic="millrace.raw", kafka_partition=offset % 4, kafka_offset=offset)
        defaults = TABLE_DEFAULTS[parsed.table]
        for name, values in batch.columns.items():
            if name in PIPELINE_COLUMNS:
                values.extend([facts.get(name, defaults[name])] * len(parsed.rows))
            else:
                values.extend([row.get(name, defaults[name]) for row in parsed.rows])
        batch.rows += len(parsed.rows)
        logs += len(parsed.rows)
        offset += 1
    return batch, time.process_time() - started, logs


def clickhouse_insert(bodies_file: Path, dialect: Dialect, batch_rows: int, seconds: float) -> dict[str, Any]:
    from millrace import store
    from millrace.config import Settings

    bodies = payloads.read_pool(dialect, bodies_file.read_bytes())
    batch, parse_s, parsed_logs = _rows(bodies, dialect, batch_rows)
    with tempfile.TemporaryDirectory(prefix="millrace-bench-ch-") as tmp:
        settings = Settings.from_env({"MILLRACE_HOME": tmp})
        client = store.connect(settings)
        store.migrate(client)

        def insert_once(i: int) -> int:
            # A fresh token each time: the engine must store every batch, not dedupe the repeats.
            store.insert_columns(client, batch.table, batch.columns, f"bench-baseline-{i}")
            return int(batch.rows)

        inserts, rows, elapsed, cpu = _repeat_for(seconds, insert_once)
        (count,) = client.query(f"SELECT count() FROM {batch.table}").result_rows[0]
        stats_cost = _stats_cost(client)
        engine_rows = _engine_rows(client, bodies, dialect, batch_rows, seconds)
        client.close()
    return {
        "engine": "chDB (embedded ClickHouse), clickhouse-connect, store.insert_columns",
        "batch_rows": batch.rows,
        "inserts": inserts,
        "rows": rows,
        "rows_stored": int(count),
        "seconds": round(elapsed, 1),
        "rows_per_s": round(rows / elapsed),
        "cpu_s": round(cpu, 2),
        "cpu_us_per_row": round(cpu / rows * 1e6, 2),
        "parse_enrich_logs_per_s_one_core": round(parsed_logs / parse_s) if parse_s else None,
        "parse_enrich_us_per_log": round(parse_s / parsed_logs * 1e6, 2),
        "stats_query": stats_cost,
        "engine_rows": engine_rows,
    }


def _engine_rows(
    client: Any, bodies: list[bytes], dialect: Dialect, batch_rows: int, seconds: float
) -> dict[str, Any]:
    """The same bodies the way the worker stores them: the envelopes' rows, one
    `INSERT ... SELECT` per batch in which the engine reads them (`schemas.rows`)."""
    from millrace import store
    from schemas import rows as row_codec

    now = time.time_ns()
    envelopes = [payloads.envelope(dialect, b, i, "bench-baseline", now) for i, b in enumerate(bodies)]
    table = envelopes[0].table
    offset = 0

    def insert_once(i: int) -> int:
        nonlocal offset
        lines: list[bytes] = []
        count = 0
        while count < batch_rows:
            envelope = envelopes[offset % len(envelopes)]
            facts = {"project": envelope.project, "observed_timestamp": now, "dialect": envelope.dialect}
            facts.update(kafka_topic="bench", kafka_partition=0, kafka_offset=offset)
            lines.extend(row_codec.line(facts, envelope.body))
            count += envelope.rows
            offset += 1
        store.insert_select(
            client,
            table,
            row_codec.COLUMNS[table],
            lambda source: row_codec.select_sql(table, source),
            row_codec.STRUCTURE[table],
            lines,
            f"bench-baseline-rows-{i}",
            row_codec.INPUT_SETTINGS,
            {},
        )
        return count

    inserts, rows, elapsed, cpu = _repeat_for(seconds, insert_once)
    return {
        "engine": "chDB, INSERT ... SELECT over the envelopes' rows (schemas.rows), as the worker stores",
        "batch_rows": batch_rows,
        "inserts": inserts,
        "rows_per_s": round(rows / elapsed),
        "cpu_us_per_row": round(cpu / rows * 1e6, 2),
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _repeat_for(seconds: float, insert_once: Callable[[int], int]) -> tuple[int, int, float, float]:
    """Call `insert_once(i)` (it returns the rows it stored) for at least `seconds`, at least once:
    (inserts, rows, wall seconds, process CPU seconds, all threads)."""
    cpu0, started = _cpu_s(), time.perf_counter()
    inserts = rows = 0
    while inserts == 0 or time.perf_counter() - started < seconds:
        rows += insert_once(inserts)
        inserts += 1
    return inserts, rows, time.perf_counter() - started, _cpu_s() - cpu0


def _stats_cost(client: Any, repeats: int = 5) -> dict[str, Any]:
    """What one /internal/v1/stats answer costs the worker's engine at this table size.

    The bench polls it about once a second during the run, so this is the sampler's
    overhead on the worker, measured here where nothing else runs.
    """
    from reads.query import project_stats

    cpu0, started = _cpu_s(), time.perf_counter()
    for _ in range(repeats):
        rows = project_stats(client, "bench-baseline", 0)["logs"]
    elapsed = time.perf_counter() - started
    cpu = _cpu_s() - cpu0
    cpu1 = _cpu_s()
    for _ in range(repeats):
        project_stats(client, "bench-baseline", 0, lag=False)
    count_cpu = _cpu_s() - cpu1
    return {
        "rows": rows,
        "ms": round(elapsed / repeats * 1000, 1),
        "cpu_ms": round(cpu / repeats * 1000, 1),
        "count_only_cpu_ms": round(count_cpu / repeats * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baselines")
    sub = p.add_subparsers(dest="what", required=True)
    ch = sub.add_parser("clickhouse", help="raw chDB insert throughput of the bench's rows")
    ch.add_argument("--bodies", type=Path, required=True)
    ch.add_argument("--dialect", default="astralog", choices=sorted(DIALECTS))
    ch.add_argument("--batch-rows", type=int, default=50_000)
    ch.add_argument("--seconds", type=float, default=15)
    args = p.parse_args(argv)
    result = clickhouse_insert(args.bodies, DIALECTS[args.dialect], args.batch_rows, args.seconds)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
