"""The worker's one insert: the engine builds table rows from the envelopes' rows.

Checked against the reference, a columnar insert of the same row dicts through
clickhouse-connect (each column the row's value or the record's default, the request
facts from the envelope): every column of every row must be equal, for every parser's
seed examples and fuzz-corpus templates. A version 1 envelope (the raw body) must store
exactly what the version 2 envelope of the same request stores.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from formats import Parsed, ParseError
from formats.useragent import user_agent
from millrace import store
from millrace.config import ConfigError
from schemas.envelope import Envelope, encode
from schemas.record import EVENTS_TABLE, LOGS_TABLE, PIPELINE_COLUMNS, TABLE_COLUMNS, TABLE_DEFAULTS
from tests import bodies as bodies_module
from tests.conftest import Stack
from tests.formats.test_idempotency import CASES
from tests.workers.rows_helpers import envelope_for, record
from workers.steps import Decoded, TableBatch, decode_envelope, insert_table, store_insert
from workers.steps.enrich import line_of

pytestmark = pytest.mark.integration


def accepted_cases() -> list[tuple[str, bytes, Any]]:
    from formats import PARSERS

    out = []
    for name, body, ctx in CASES:
        try:
            parsed: Parsed = PARSERS[name](body, ctx)
        except ParseError:
            continue
        if parsed.rows:
            out.append((name, body, ctx))
    return out


def reference_columns(
    envelope: Envelope, parsed_rows: list[dict[str, Any]], topic: str, offset: int
) -> dict[str, list[Any]]:
    agent = user_agent(envelope.user_agent)
    facts = {
        "project": envelope.project,
        "observed_timestamp": envelope.received_at_ns,
        "ua_browser": agent.browser,
        "ua_os": agent.os,
        "ua_device": agent.device,
        "client_ip": envelope.client_ip,
        "dialect": envelope.dialect,
        "ingest_id": envelope.request_id,
        "kafka_topic": topic,
        "kafka_partition": 3,
        "kafka_offset": offset,
    }
    defaults = TABLE_DEFAULTS[envelope.table]
    return {
        name: [
            facts[name] if name in PIPELINE_COLUMNS else row.get(name, defaults[name]) for row in parsed_rows
        ]
        for name in TABLE_COLUMNS[envelope.table]
    }


def stored(client: Client, table: str, topic: str) -> list[tuple[Any, ...]]:
    columns = [c for c in TABLE_COLUMNS[table] if c != "kafka_topic"]
    result = client.query(
        f"SELECT {', '.join(columns)} FROM {table} WHERE kafka_topic = {{t:String}}", parameters={"t": topic}
    ).result_rows
    # Map key order is storage order; compared by content, as readers see it.
    return sorted(
        tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v for v in row) for row in result
    )


async def test_the_engine_stores_what_a_columnar_insert_of_the_same_rows_stores(stack: Stack) -> None:
    import orjson

    run = uuid.uuid4().hex[:10]
    cases = accepted_cases()
    assert len(cases) > 20  # the check covers every dialect, not a handful
    batches: dict[str, TableBatch] = {}
    reference: dict[str, dict[str, list[Any]]] = {}
    for offset, (name, body, ctx) in enumerate(cases):
        envelope = envelope_for(body, name, ctx)
        topic = f"ins-{run}-{envelope.table}"
        batch = batches.setdefault(envelope.table, TableBatch(envelope.table))
        batch.add(line_of(Decoded(envelope, record(topic, encode(envelope), offset))))
        columns = reference_columns(envelope, orjson.loads(envelope.body), f"{topic}-py", offset)
        into = reference.setdefault(envelope.table, {c: [] for c in columns})
        for column, values in columns.items():
            into[column].extend(values)
    assert set(batches) == {LOGS_TABLE, EVENTS_TABLE}
    for table, batch in batches.items():
        await asyncio.to_thread(insert_table, stack.client, batch, f"ins-{run}-{table}")
        await asyncio.to_thread(
            store.insert_columns, stack.client, table, reference[table], f"ins-{run}-{table}-py"
        )
        engine = stored(stack.client, table, f"ins-{run}-{table}")
        python = stored(stack.client, table, f"ins-{run}-{table}-py")
        assert len(engine) == batch.rows > 0
        assert engine == python


def test_a_version_1_envelope_is_parsed_by_the_worker_into_the_same_rows() -> None:
    now = time.time_ns()
    for name, body, ctx in accepted_cases():
        new = envelope_for(body, name, ctx, received_at_ns=now)
        old = envelope_for(body, name, ctx, raw=True, received_at_ns=now)
        upgraded = decode_envelope(record("t", encode(old)))
        assert (upgraded.body, upgraded.table, upgraded.rows) == (new.body, new.table, new.rows), name


async def test_deferred_skip_indexes_are_left_out_of_the_insert_and_built_by_the_merge(stack: Stack) -> None:
    """MILLRACE_DEFER_SKIP_INDEXES: the insert's part holds no token or bloom-filter index (the
    time minmax stays); a merge builds them; every row and every search answer is the same."""
    deferred = await asyncio.to_thread(store.deferrable_indexes, stack.client, [LOGS_TABLE, EVENTS_TABLE])
    indexes = stack.query(
        "SELECT table, name, type FROM system.data_skipping_indices "
        "WHERE database = currentDatabase() AND table IN ('logs', 'events')"
    )
    for table in (LOGS_TABLE, EVENTS_TABLE):
        named = {name for t, name, kind in indexes if t == table and kind != "minmax"}
        assert set(deferred.get(table, "").split(",")) - {""} == named
    assert "idx_message" in deferred[LOGS_TABLE] and "idx_timestamp" not in deferred[LOGS_TABLE]

    run = uuid.uuid4().hex[:10]
    batch = TableBatch(LOGS_TABLE)
    messages = [f"deferred {run} needle{i}" for i in range(200)]
    body = bodies_module.drain_body(messages, project_id="defer", service="defer")
    envelope = envelope_for(body)
    batch.add(line_of(Decoded(envelope, record(f"defer-{run}", encode(envelope)))))
    sizes = {}
    for name, defer in (("indexed", False), ("deferred", True)):
        table = f"defer_{name}_{run}"
        stack.client.command(f"CREATE TABLE {table} AS logs")
        insert = await store_insert(replace(stack.settings, defer_skip_indexes=defer), stack.client)
        await asyncio.to_thread(insert, stack.client, batch, f"{table}-1", into=table)  # type: ignore[call-arg]
        sizes[name] = _index_bytes(stack, table)
    assert sizes["deferred"] < sizes["indexed"] / 4  # only the minmax on timestamp was written

    for name in ("indexed", "deferred"):
        table = f"defer_{name}_{run}"
        found = stack.query(f"SELECT count() FROM {table} WHERE hasToken(message, 'needle7')")
        assert found == [(1,)]
        assert stack.query(f"SELECT count() FROM {table}") == [(200,)]
    stack.client.command(f"OPTIMIZE TABLE defer_deferred_{run} FINAL")
    assert _index_bytes(stack, f"defer_deferred_{run}") == sizes["indexed"]  # the merge built them all
    for name in ("indexed", "deferred"):
        stack.client.command(f"DROP TABLE defer_{name}_{run}")


def test_deferring_needs_an_engine_that_has_the_setting(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "DEFER_SETTING", "no_such_setting_in_any_engine")
    with pytest.raises(ConfigError, match="DEFER_SKIP_INDEXES=1 needs a ClickHouse with the setting"):
        store.deferrable_indexes(stack.client, [LOGS_TABLE])


def test_deferring_refuses_index_names_the_setting_cannot_list(stack: Stack) -> None:
    table = f"defer_odd_{uuid.uuid4().hex[:10]}"
    stack.client.command(f"CREATE TABLE {table} AS logs")
    stack.client.command(f"ALTER TABLE {table} ADD INDEX `odd, name` message TYPE bloom_filter GRANULARITY 1")
    try:
        with pytest.raises(ConfigError, match="cannot name the skip indexes"):
            store.deferrable_indexes(stack.client, [table])
    finally:
        stack.client.command(f"DROP TABLE {table}")


def _index_bytes(stack: Stack, table: str) -> int:
    ((size,),) = stack.query(
        "SELECT sum(secondary_indices_uncompressed_bytes) FROM system.parts "
        "WHERE database = currentDatabase() AND table = {t:String} AND active",
        t=table,
    )
    return int(size)
