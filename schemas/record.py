"""The one record shape every dialect is normalized to, and the events shape.

A record is a plain dict keyed by column name (as in snuba's processors): parsers
fill the columns they know, the pipeline fills the request facts, and
`LOG_DEFAULTS` supplies the rest. `tests/test_schema.py` checks these column lists
against the DDL in `schemas/migrations/`, so the two cannot disagree.
"""

from __future__ import annotations

from typing import Any, Final

# (column, ClickHouse type, default). Timestamps are integer nanoseconds since the
# epoch: clickhouse-connect sends ints to DateTime64(9) as raw ticks, no conversion.
LOG_COLUMNS: Final[tuple[tuple[str, str, Any], ...]] = (
    ("project", "LowCardinality(String)", ""),
    ("timestamp", "DateTime64(9, 'UTC')", 0),
    ("observed_timestamp", "DateTime64(9, 'UTC')", 0),
    ("level", "LowCardinality(String)", "info"),
    ("severity_text", "LowCardinality(String)", ""),
    ("severity_number", "UInt8", 9),
    ("message", "String", ""),
    ("service", "LowCardinality(String)", ""),
    ("environment", "LowCardinality(String)", ""),
    ("host", "LowCardinality(String)", ""),
    ("dataset", "LowCardinality(String)", ""),
    ("trace_id", "String", ""),
    ("span_id", "String", ""),
    ("request_id", "String", ""),
    ("session_id", "String", ""),
    ("user_id", "String", ""),
    ("flow_id", "String", ""),
    ("tags", "Array(LowCardinality(String))", ()),
    ("entity_name", "LowCardinality(String)", ""),
    ("entity_kind", "LowCardinality(String)", ""),
    ("entity_tags", "Array(LowCardinality(String))", ()),
    ("error_name", "String", ""),
    ("error_stack", "String", ""),
    ("attributes", "Map(LowCardinality(String), String)", {}),
    ("ua_browser", "LowCardinality(String)", ""),
    ("ua_os", "LowCardinality(String)", ""),
    ("ua_device", "LowCardinality(String)", ""),
    ("client_ip", "String", ""),
    ("dialect", "LowCardinality(String)", ""),
    ("ingest_id", "String", ""),
    ("kafka_topic", "LowCardinality(String)", ""),
    ("kafka_partition", "UInt32", 0),
    ("kafka_offset", "UInt64", 0),
)

EVENT_COLUMNS: Final[tuple[tuple[str, str, Any], ...]] = (
    ("project", "LowCardinality(String)", ""),
    ("timestamp", "DateTime64(9, 'UTC')", 0),
    ("observed_timestamp", "DateTime64(9, 'UTC')", 0),
    ("event", "LowCardinality(String)", ""),
    ("distinct_id", "String", ""),
    ("properties", "Map(LowCardinality(String), String)", {}),
    ("ua_browser", "LowCardinality(String)", ""),
    ("ua_os", "LowCardinality(String)", ""),
    ("ua_device", "LowCardinality(String)", ""),
    ("client_ip", "String", ""),
    ("dialect", "LowCardinality(String)", ""),
    ("ingest_id", "String", ""),
    ("kafka_topic", "LowCardinality(String)", ""),
    ("kafka_partition", "UInt32", 0),
    ("kafka_offset", "UInt64", 0),
)

# Columns the engine fills itself (DEFAULT expressions); never sent by the pipeline.
ENGINE_COLUMNS: Final[tuple[tuple[str, str, Any], ...]] = (("inserted_at", "DateTime64(3, 'UTC')", None),)

LOG_COLUMN_NAMES: Final = tuple(c[0] for c in LOG_COLUMNS)
EVENT_COLUMN_NAMES: Final = tuple(c[0] for c in EVENT_COLUMNS)
LOG_DEFAULTS: Final = {name: default for name, _, default in LOG_COLUMNS}
EVENT_DEFAULTS: Final = {name: default for name, _, default in EVENT_COLUMNS}

LOGS_TABLE: Final = "logs"
EVENTS_TABLE: Final = "events"
TABLE_COLUMNS: Final = {LOGS_TABLE: LOG_COLUMN_NAMES, EVENTS_TABLE: EVENT_COLUMN_NAMES}
TABLE_DEFAULTS: Final = {LOGS_TABLE: LOG_DEFAULTS, EVENTS_TABLE: EVENT_DEFAULTS}
# Where each table keeps the fields it has no column for (searchable as map keys).
# The alert timeline (migration 005): one row per state transition of a rule's group, written
# by the evaluator (millrace.alert_store) and read as GQL's `from:alert_events` (reads.gql).
ALERT_EVENTS_TABLE: Final = "alert_events"
ALERT_EVENT_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("project", "LowCardinality(String)"),
    ("timestamp", "DateTime64(9, 'UTC')"),
    ("event_id", "String"),
    ("rule_id", "String"),
    ("rule_name", "String"),
    ("group_key", "String"),
    ("state", "LowCardinality(String)"),
    ("previous_state", "LowCardinality(String)"),
    ("value", "Float64"),
    ("op", "LowCardinality(String)"),
    ("threshold", "Float64"),
    ("seq", "UInt64"),
)
ALERT_EVENT_COLUMN_NAMES: Final = tuple(c[0] for c in ALERT_EVENT_COLUMNS)

MAP_COLUMN: Final = {LOGS_TABLE: "attributes", EVENTS_TABLE: "properties"}

# Columns a parser may fill. The rest are request facts and bookkeeping that the
# pipeline owns, so a log body can never forge its project or its Kafka offset.
PIPELINE_COLUMNS: Final = frozenset(
    {
        "project",
        "observed_timestamp",
        "ua_browser",
        "ua_os",
        "ua_device",
        "client_ip",
        "dialect",
        "ingest_id",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
    }
)
PARSER_LOG_COLUMNS: Final = frozenset(LOG_COLUMN_NAMES) - PIPELINE_COLUMNS
PARSER_EVENT_COLUMNS: Final = frozenset(EVENT_COLUMN_NAMES) - PIPELINE_COLUMNS

# Normalized levels and their OpenTelemetry severity numbers (the lowest of each range).
LEVELS: Final = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}

_LEVEL_ALIASES: Final = {
    "trace": "trace",
    "finest": "trace",
    "verbose": "trace",
    "debug": "debug",
    "dbg": "debug",
    "fine": "debug",
    "finer": "debug",
    "info": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "log": "info",
    "ok": "info",
    "success": "info",
    "warn": "warn",
    "warning": "warn",
    "wrn": "warn",
    "error": "error",
    "err": "error",
    "severe": "error",
    "critical": "error",
    "crit": "error",
    "alert": "error",
    "emergency": "error",
    "emerg": "error",
    "fatal": "fatal",
    "panic": "fatal",
}


def level_of(name: str) -> str | None:
    """The normalized level a free-form name means, or None when it names no level."""
    return _LEVEL_ALIASES.get(name.strip().lower())


def normalize_level(original: str | None, default: str = "info") -> tuple[str, int]:
    """Map a free-form level to (normalized level, severity number); unknown maps to `default`."""
    if original:
        level = _LEVEL_ALIASES.get(original.strip().lower())
        if level is not None:
            return level, LEVELS[level]
    return default, LEVELS[default]
