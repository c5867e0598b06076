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
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from formats import Parsed, ParseError
from formats.useragent import user_agent
from millrace import store
from schemas.envelope import Envelope, encode
from schemas.record import EVENTS_TABLE, LOGS_TABLE, PIPELINE_COLUMNS, TABLE_COLUMNS, TABLE_DEFAULTS
from tests.conftest import Stack
from tests.formats.test_idempotency import CASES
from tests.workers.rows_helpers import envelope_for, record
from workers.steps import Decoded, TableBatch, decode_envelope, insert_table
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
