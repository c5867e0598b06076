"""CPU per log of each hot-path stage, measured on the real functions in one process.

    .venv/bin/python -m bench.micro [--dialect astralog] [--reps 7] [--no-insert]

Stages, in the order a log meets them:

- gateway `parse`: the dialect's parser (`formats.PARSERS`), the gateway's only parse;
- gateway `answer`: the client's answer to the parsed request (the gateway dialect's
  `success`: `_bulk`'s item list, OTLP's response in the request's encoding, ...);
- gateway `rows`: encoding the rows for the envelope (`schemas.rows.encode`);
- gateway `envelope`: `schemas.envelope.encode`, which compresses the rows (zstd, level 1);
- worker `decode + lines`: decoding each envelope (inflating its rows) and writing its input
  line (`schemas.rows.line`: the request facts, the rows as they came), per message;
- worker `insert`: the engine reading those lines into a fresh embedded ClickHouse (chDB)
  directory in one `INSERT ... SELECT` of `--batch-rows` rows (`store.insert_select`),
  process CPU (all threads, background merges stopped).

Each figure is the minimum over `--reps` repetitions of CPU time (`time.process_time`),
the least disturbed by other processes on a shared machine. Wall-clock throughput is
never used. Results print as a table and, with `--json`, as JSON. Only public entry
points are driven (formats, schemas, the gateway's dialects, the store client): no worker
internals.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import pkgutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench import payloads


def _best(fn: Callable[[], Any], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        gc.collect()  # each repetition starts from the same heap
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def measure(dialect_name: str, reps: int, batch_rows: int, insert: bool) -> dict[str, float]:
    from formats import PARSERS, ParseContext
    from millrace.gc_tuning import tune_gc
    from schemas import rows
    from schemas.envelope import decode, encode

    dialect = payloads.DIALECTS[dialect_name]
    per_body = payloads.batch_size(dialect, 500)
    bodies = payloads.bodies(dialect, per_body, max(1, batch_rows // per_body))
    logs = per_body * len(bodies)
    now = time.time_ns()
    ctx = ParseContext(received_at_ns=now, path=dialect.path, content_type=dialect.content_type)
    parse = PARSERS[dialect.parser]
    parsed = [parse(b, ctx) for b in bodies]
    envelopes = [payloads.envelope(dialect, body, i, "bench-micro", now) for i, body in enumerate(bodies)]
    wire = [encode(e) for e in envelopes]
    lines: list[bytes | memoryview] = []
    tune_gc()  # as the gateway and the worker run

    def worker() -> None:
        out: list[bytes | memoryview] = []
        for offset, value in enumerate(wire):
            envelope = decode(value)
            facts = {"project": envelope.project, "observed_timestamp": envelope.received_at_ns}
            facts.update(kafka_topic="millrace.raw", kafka_partition=offset % 4, kafka_offset=offset)
            out.extend(rows.line(facts, envelope.body))
        lines[:] = out

    us = 1e6 / logs
    answer = _answer(dialect)
    out = {
        "gateway_parse_us": _best(lambda: [parse(b, ctx) for b in bodies], reps) * us,
        "gateway_answer_us": _best(lambda: [answer(p, now) for p in parsed], reps) * us,
        "gateway_rows_us": _best(lambda: [rows.encode(p.rows) for p in parsed], reps) * us,
        "gateway_envelope_us": _best(lambda: [encode(e) for e in envelopes], reps) * us,
        "worker_decode_lines_us": _best(worker, reps) * us,
    }
    if insert:
        out["worker_insert_us"] = _insert(envelopes[0].table, lines, max(2, reps // 2)) * us
    out["logs_per_rep"] = logs
    return out


def _answer(dialect: payloads.Dialect) -> Callable[[Any, int], Any]:
    """The gateway's answer for a request of `dialect`: the `success` of the gateway dialect
    named as its parser, or OTLP's protobuf one (a second dialect of the same name)."""
    import gateway.dialects
    from gateway.dialects.base import Dialect
    from gateway.dialects.otlp import OTLP_PROTOBUF

    if "protobuf" in dialect.content_type:
        return OTLP_PROTOBUF.success
    by_name: dict[str, Dialect] = {}
    for info in pkgutil.iter_modules(gateway.dialects.__path__, "gateway.dialects."):
        for value in vars(importlib.import_module(info.name)).values():
            if isinstance(value, Dialect) and value is not OTLP_PROTOBUF:
                by_name[value.name] = value
    return by_name[dialect.parser].success


def _insert(table: str, lines: list[bytes | memoryview], reps: int) -> float:
    """CPU seconds of the engine's insert of `lines` (best of `reps`)."""
    from millrace import store
    from millrace.config import Settings
    from schemas import rows

    with tempfile.TemporaryDirectory(prefix="millrace-micro-") as home:
        client = store.connect(Settings.from_env({"MILLRACE_HOME": home}))
        store.migrate(client)
        # Background merges of earlier repetitions would land on later ones: stopped, so these
        # are the inserts alone; `make bench` shows merges per log.
        client.command("SYSTEM STOP MERGES")
        tokens = iter(range(10**6))

        def insert_once() -> None:
            store.insert_select(
                client,
                table,
                rows.COLUMNS[table],
                lambda source: rows.select_sql(table, source),
                rows.STRUCTURE[table],
                lines,
                f"m{next(tokens)}",
                rows.INPUT_SETTINGS,
                {},
            )

        insert_once()  # warm-up
        best = _best(insert_once, reps)
        client.close()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialect", default="astralog", choices=sorted(payloads.DIALECTS))
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--no-insert", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.dialect, args.reps, args.batch_rows, not args.no_insert)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:32s} {value:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
