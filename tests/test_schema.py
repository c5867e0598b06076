"""The record definition in schemas/record.py and the DDL in schemas/migrations agree."""

from __future__ import annotations

import re

import pytest

from millrace import store
from schemas.record import ALERT_EVENT_COLUMNS, ALERT_EVENTS_TABLE, ENGINE_COLUMNS, EVENT_COLUMNS, LOG_COLUMNS
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
