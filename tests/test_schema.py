"""The record definition in schemas/record.py and the DDL in schemas/migrations agree."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from millrace import store
from reads import query
from schemas.record import (
    ALERT_EVENT_COLUMNS,
    ALERT_EVENTS_TABLE,
    ENGINE_COLUMNS,
    EVENT_COLUMNS,
    LOG_COLUMNS,
    LOG_DEFAULTS,
)
from tests.conftest import Stack

_COLUMN = re.compile(r"^\s{4}([a-z_]+)\s+(.+?)(?:\s+DEFAULT .+?)?(?:\s+CODEC\(.*\))?,?$")


def ddl_columns(table: str) -> list[tuple[str, str]]:
    sql = "\n".join(sql for _, _, sql in store.migrations())
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table}\s*\((.*?)\n\)", sql, flags=re.S)
    assert body, f"no CREATE TABLE for {table}"
    columns = []
    for line in body.group(1).splitlines():
        match = _COLUMN.match(line)
        if match and not line.strip().startswith("INDEX"):
            columns.append((match.group(1), match.group(2)))
    return columns


@pytest.mark.parametrize(("table", "spec"), [("logs", LOG_COLUMNS), ("events", EVENT_COLUMNS)])
def test_record_columns_match_the_ddl(table: str, spec: tuple[tuple[str, str, object], ...]) -> None:
    assert [(name, type_) for name, type_, _ in (*spec, *ENGINE_COLUMNS)] == ddl_columns(table)


def test_alert_event_columns_match_the_ddl() -> None:
    assert list(ALERT_EVENT_COLUMNS) == ddl_columns(ALERT_EVENTS_TABLE)


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [v for v, _, _ in store.migrations()]
    assert list(range(1, len(versions) + 1)) == versions


@pytest.mark.parametrize("table", ["logs", "events"])
def test_pipeline_tables_merge_wider_than_the_default(stack: Stack, table: str) -> None:
    """Migration 004 is in effect in the engine: fewer, wider background merges."""
    ((create,),) = stack.query(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name = {t:String}",
        t=table,
    )
    assert "merge_selector_base = 20" in create


def test_level_and_service_counts_cover_every_row_of_every_insert(stack: Stack) -> None:
    """schema_fields' log_levels and log_services (migration 003's view) hold each level's and
    service's exact count over several inserts, and its newest event time."""
    project = f"schema-values-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()
    sent: list[tuple[str, str, int]] = []
    kinds = [("error", "api"), ("info", "api"), ("info", "web"), ("info", ""), ("warn", "web")]
    for batch in range(2):
        rows = [
            (level, service, now - (batch * 100 + i) * 10**9)
            for i, (level, service) in enumerate(kinds * (batch + 1))
        ]
        sent += rows
        columns: dict[str, list[Any]] = {name: [] for name in LOG_DEFAULTS}
        for level, service, ts in rows:
            row = {**LOG_DEFAULTS, "project": project, "level": level, "service": service}
            row["timestamp"], row["observed_timestamp"] = ts, now
            for name, value in row.items():
                columns[name].append(value)
        store.insert_columns(stack.client, "logs", columns, dedup_token=f"schema-values-{uuid.uuid4()}")

    schema = query.discovered_schema(stack.client, project)
    for source, at in (("log_levels", 0), ("log_services", 1)):
        expected = Counter(r[at] for r in sent if r[at])
        assert {s["name"]: s["volume"] for s in schema[source]} == expected, source
    newest = stack.query(
        "SELECT source, key, toUnixTimestamp64Nano(max(last_seen)) FROM schema_fields "
        "WHERE project = {p:String} AND source IN ('log_levels', 'log_services') GROUP BY source, key",
        p=project,
    )
    for source, key, seen in newest:
        at = 0 if source == "log_levels" else 1
        assert seen == max(ts for *names, ts in sent if names[at] == key), (source, key)
