"""CPU per log of each hot-path stage, measured on the real functions in one process.

    .venv/bin/python -m bench.micro [--dialect astralog] [--reps 7] [--no-insert]

Stages, in the order a log meets them:

- gateway `check`: what the gateway runs to answer (a dialect's validate-only fast path
  from `VALIDATORS`, else its full parser), and `parse` (the full parser) beside it;
- gateway `envelope`: `schemas.envelope.encode`;
- worker `decode + parse + enrich`: the worker's `submit` work per message, appended
  into one columnar batch of `--batch-rows` rows, as the worker does (the batch stays
  alive, so the garbage collector's cost of a large batch is included);
- worker `insert`: `store.insert_columns` of that batch into a fresh embedded ClickHouse
  (chDB) directory, process CPU (all threads, background merges stopped), and the part of
  it spent in Python serializing the batch (`client.insert` without the engine call);
- worker `store parse`: for bodies the gateway marks `store_parses`, the whole worker side
  instead: decode, defer, and the `INSERT ... SELECT` in which the engine parses the raw
  bodies (`pipeline.insert_table`), process CPU (all threads).

Each figure is the minimum over `--reps` repetitions of CPU time (`time.process_time`),
the least disturbed by other processes on a shared machine. Wall-clock throughput is
never used. Results print as a table and, with `--json`, as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench import payloads


def _best(fn: Callable[[], Any], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        gc.collect()
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def measure(dialect_name: str, reps: int, batch_rows: int, insert: bool) -> dict[str, float]:
    from aiokafka.structs import ConsumerRecord

    import formats
    from formats import PARSERS, ParseContext
    from schemas.envelope import encode
    from workers.pipeline import TableBatch, decode_step, enrich_step, parse_step

    dialect = payloads.DIALECTS[dialect_name]
    per_body = payloads.batch_size(dialect, 500)
    bodies = payloads.bodies(dialect, per_body, max(1, batch_rows // per_body))
    logs = per_body * len(bodies)
    now = time.time_ns()
    ctx = ParseContext(received_at_ns=now, path=dialect.path, content_type=dialect.content_type)
    validators: dict[str, Any] = getattr(formats, "VALIDATORS", {})  # absent before the fast path
    check = validators.get(dialect.parser) or PARSERS[dialect.parser]
    parse = PARSERS[dialect.parser]
    envelopes = [payloads.envelope(dialect, body, i, "bench-micro", now) for i, body in enumerate(bodies)]
    records = [
        ConsumerRecord("millrace.raw", i % 4, i, 0, 0, None, encode(e), None, 0, len(e.body), [])
        for i, e in enumerate(envelopes)
    ]
    batch: list[Any] = []

    def worker() -> None:
        table = None
        for record in records:
            envelope = decode_step(record)
            parsed = parse_step(envelope)
            if table is None:
                table = TableBatch.empty(parsed.table)
            enrich_step(envelope, parsed, record, table)
        batch[:] = [table]

    us = 1e6 / logs
    out = {
        "gateway_check_us": _best(lambda: [check(b, ctx) for b in bodies], reps) * us,
        "gateway_full_parse_us": _best(lambda: [parse(b, ctx) for b in bodies], reps) * us,
        "gateway_envelope_us": _best(lambda: [encode(e) for e in envelopes], reps) * us,
        "worker_decode_parse_enrich_us": _best(worker, reps) * us,
    }
    if insert:
        out.update(_insert(batch[0], records, max(2, reps // 2)))
    out["logs_per_rep"] = logs
    return out


def _insert(table: Any, records: list[Any], reps: int) -> dict[str, float]:
    from millrace import store
    from millrace.config import Settings
    from workers.pipeline import TableBatch, decode_step, insert_table

    with tempfile.TemporaryDirectory(prefix="millrace-micro-") as home:
        client = store.connect(Settings.from_env({"MILLRACE_HOME": home}))
        store.migrate(client)
        # Background merges of earlier repetitions would land on later ones (and on the other
        # path): stopped, so these are the inserts alone; `make bench` shows merges per log.
        client.command("SYSTEM STOP MERGES")
        store.insert_columns(client, table.table, table.columns, "warm-up")
        tokens = iter(range(10**6))
        total = _best(
            lambda: store.insert_columns(client, table.table, table.columns, f"m{next(tokens)}"), reps
        )
        # The same call with the engine step replaced: what clickhouse-connect spends in Python.
        backend = client._backend  # the library's own split: measured, not changed
        real = backend.execute_data_insert

        def serialize_only(context: Any, runtime: Any, body: Any, retry_body: Any) -> dict[str, Any]:
            for _chunk in body:
                pass
            return {}

        backend.execute_data_insert = serialize_only
        try:
            python = _best(lambda: store.insert_columns(client, table.table, table.columns, "x"), reps)
        finally:
            backend.execute_data_insert = real
        store_parse = None
        if all(decode_step(r).store_parses for r in records):

            def store_parsed() -> None:
                deferred = TableBatch.empty(table.table)
                for record in records:
                    deferred.defer(decode_step(record), record)
                insert_table(client, deferred, f"s{next(tokens)}")

            store_parse = _best(store_parsed, reps)
        client.close()
    out = {
        "worker_insert_us": total * 1e6 / table.rows,
        "worker_insert_python_us": python * 1e6 / table.rows,
        "batch_rows": table.rows,
    }
    if store_parse is not None:
        out["worker_store_parse_us"] = store_parse * 1e6 / table.rows
    return out


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
