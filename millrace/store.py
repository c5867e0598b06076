"""ClickHouse access: one client factory for both the embedded engine and a server.

`chdb://<dir>` runs the ClickHouse engine inside this process (chDB allows one engine
path per process, so only the worker opens it); `http(s)://...` talks to a server.
clickhouse-connect gives both the same synchronous API; callers on an event loop run
these functions in a thread.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import clickhouse_connect
import structlog
from clickhouse_connect.driver.client import Client

from millrace.config import ConfigError, Settings
from schemas.record import EVENT_COLUMNS, EVENTS_TABLE, LOG_COLUMNS, LOGS_TABLE

# Column types of the tables the pipeline inserts into, from the record definition (which
# tests/test_schema.py checks against the DDL): given these, the client skips the
# DESCRIBE TABLE round trip it would otherwise make before every insert.
_COLUMN_TYPES: dict[str, dict[str, str]] = {
    LOGS_TABLE: {name: kind for name, kind, _ in LOG_COLUMNS},
    EVENTS_TABLE: {name: kind for name, kind, _ in EVENT_COLUMNS},
}

log = structlog.get_logger()

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def connect(settings: Settings, *, create_database: bool = True) -> Client:
    """A client whose current database is Millrace's, created if absent."""
    tls: dict[str, Any] = {"ca_cert": settings.clickhouse_ca} if settings.clickhouse_ca else {}
    client = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn, **tls)
    if create_database:
        client.command(
            on_cluster(
                f"CREATE DATABASE IF NOT EXISTS {_ident(settings.database)}", settings.clickhouse_cluster
            )
        )
    client.database = settings.database
    if settings.embedded_store:
        # chDB keeps the database as handle state: apply it now, once.
        client.command(f"USE {_ident(settings.database)}")
        clear_staging(client)
    return client


def staging_dir(client: Client) -> Path:
    """Where an embedded insert stages its rows: inside the engine's own data path (under
    MILLRACE_HOME by default), mode 0700, because the rows are tenants' log bodies."""
    return Path(client.uri.removeprefix("chdb://")) / "millrace-staging"


def clear_staging(client: Client) -> None:
    """Remove staged files a crashed insert left behind, and (re)create the private directory."""
    path = staging_dir(client)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"{name!r} is not a valid ClickHouse identifier")
    return name


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every numbered migration, in order."""
    found = []
    for entry in resources.files("schemas").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


_DDL_TARGET = re.compile(
    r"^((?:CREATE|ALTER|DROP)\s+(?:TABLE|MATERIALIZED\s+VIEW|VIEW|DATABASE)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?[\w.`]+)",
    flags=re.IGNORECASE,
)
_LOCAL_ENGINE = re.compile(r"\bENGINE\s*=\s*(?!Replicated)(\w*MergeTree)\b")


def on_cluster(statement: str, cluster: str) -> str:
    """The cluster-ready form of one migration statement; unchanged when `cluster` is empty.

    The files in schemas/migrations are written for one server (and chDB). On a
    replicated cluster (one shard, N replicas) every DDL runs `ON CLUSTER` and every
    MergeTree family engine becomes its Replicated* twin with the server's default
    replica path and name (`default_replica_path`/`default_replica_name`, `{uuid}`,
    `{shard}`, `{replica}` macros), so the same files serve both.
    """
    if not cluster:
        return statement
    name = _ident(cluster)
    statement = _DDL_TARGET.sub(lambda m: f"{m[1]} ON CLUSTER {name}", statement, count=1)
    return _LOCAL_ENGINE.sub(lambda m: f"ENGINE = Replicated{m[1]}", statement)


def migrate(client: Client, cluster: str = "") -> list[str]:
    """Apply migrations not yet recorded; each statement is idempotent, so a crash mid-way is safe."""
    client.command(
        on_cluster(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
            "ENGINE = ReplacingMergeTree ORDER BY version",
            cluster,
        )
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
    applied = []
    for version, name, sql in migrations():
        if version in done:
            continue
        for statement in _statements(sql):
            client.command(on_cluster(statement, cluster))
        client.insert("schema_migrations", [[version, name]], column_names=["version", "name"])
        applied.append(name)
        log.info("migration_applied", migration=name)
    return applied


def insert_columns(
    client: Client,
    table: str,
    columns: Mapping[str, Sequence[Any]],
    dedup_token: str,
    *,
    like: str | None = None,
) -> None:
    """One columnar insert. The token makes a retried identical batch a no-op in the engine.
    `like`: the pipeline table whose column types `table` has (a staging table)."""
    names = list(columns)
    types = _COLUMN_TYPES.get(like or table)
    client.insert(
        table,
        [columns[n] for n in names],
        column_names=names,
        column_type_names=[types[n] for n in names] if types and types.keys() >= set(names) else None,
        column_oriented=True,
        settings={
            "insert_deduplication_token": dedup_token,
            # Partitions are receive days, so a batch spans two only around midnight; never refuse.
            "throw_on_max_partitions_per_insert_block": 0,
        },
    )


def embedded(client: Client) -> bool:
    """Whether `client` is the in-process engine (chDB) rather than a server."""
    return client.uri.startswith("chdb:")


def insert_select(
    client: Client,
    table: str,
    columns: Sequence[str],
    select: Callable[[str], str],
    structure: str,
    data: Sequence[bytes | memoryview],
    dedup_token: str,
    input_settings: Mapping[str, int | str],
    parameters: Mapping[str, Any],
) -> None:
    """One `INSERT ... SELECT` over JSONEachRow `data` (its pieces, in order), so the engine
    parses the rows itself.

    `select(source)` builds the SELECT from a table expression: a file the embedded engine
    reads (chDB takes SQL, not a request body), or the request body of a server's `input()`.
    The dedup token works as in `insert_columns`.
    """
    settings = {
        **input_settings,
        "insert_deduplication_token": dedup_token,
        "throw_on_max_partitions_per_insert_block": 0,
        # One part per partition, as a columnar insert writes: the SELECT's blocks are squashed
        # into one, by one thread, so a message's rows are never split over two parts.
        "max_insert_threads": 1,
        "min_insert_block_size_rows": 1 << 40,
        "min_insert_block_size_bytes": 1 << 40,
    }
    head = f"INSERT INTO {_ident(table)} ({', '.join(_ident(c) for c in columns)})"
    if embedded(client):
        staging = staging_dir(client)
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix="insert-", suffix=".jsonl", dir=staging) as tmp:
            tmp.writelines(data)  # ~70 MB for a large batch: not joined in memory first
            tmp.flush()
            source = f"file({_quote(tmp.name)}, 'JSONEachRow', {_quote(structure)})"
            client.command(f"{head} {select(source)}", parameters=dict(parameters), settings=settings)
    else:
        source = f"input({_quote(structure)})"
        client.command(
            f"{head} {select(source)} FORMAT JSONEachRow",
            parameters=dict(parameters),
            data=b"".join(data),
            settings=settings,
        )


# The engine setting that leaves named skip indexes out of an insert's new part; merges (or an
# explicit MATERIALIZE INDEX) build them. Recent ClickHouse releases and the chDB here have it.
DEFER_SETTING = "exclude_materialize_skip_indexes_on_insert"
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def deferrable_indexes(client: Client, tables: Sequence[str]) -> dict[str, str]:
    """Per table, its skip indexes an insert may leave to merges (MILLRACE_DEFER_SKIP_INDEXES),
    as the engine setting names them: all but the `minmax` ones, which are cheap and prune by time.
    Read from the tables themselves, so a migration that adds an index is covered. Raises
    ConfigError when the engine does not know the setting (an older server)."""
    known = client.query("SELECT count() FROM system.settings WHERE name = {s:String}", {"s": DEFER_SETTING})
    if not known.result_rows[0][0]:
        raise ConfigError(
            f"MILLRACE_DEFER_SKIP_INDEXES=1 needs a ClickHouse with the setting {DEFER_SETTING}; "
            f"this store ({client.server_version}) has none: upgrade it or unset the setting"
        )
    found = client.query(
        "SELECT table, groupArray(name) FROM system.data_skipping_indices "
        "WHERE database = currentDatabase() AND table IN {t:Array(String)} AND type != 'minmax' "
        "GROUP BY table",
        {"t": list(tables)},
    )
    # The engine reads the setting as a list of names: one it cannot parse would fail every insert.
    odd = [name for _, names in found.result_rows for name in names if not _PLAIN_NAME.match(name)]
    if odd:
        raise ConfigError(f"MILLRACE_DEFER_SKIP_INDEXES=1 cannot name the skip indexes {odd}: rename them")
    return {str(table): ",".join(names) for table, names in found.result_rows}


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def watermarks(client: Client, topic: str) -> dict[tuple[str, int], int]:
    """Highest stored offset per (table, partition) of `topic`."""
    result = client.query(
        "SELECT target, kafka_partition, max(max_offset) FROM ingest_watermarks "
        "WHERE kafka_topic = {topic:String} GROUP BY target, kafka_partition",
        parameters={"topic": topic},
    )
    return {(str(t), int(p)): int(o) for t, p, o in result.result_rows}
