"""Normalized rows on their way to the engine: how they travel and how the engine reads them.

The gateway parses a request once (`formats`), and the envelope carries the resulting rows
as one JSON array of row objects (`encode`), each holding only the columns its parser
set. The worker never parses them: per envelope it writes one JSONEachRow line

    {"f": {<request facts: the PIPELINE_COLUMNS>}, "r": <the envelope's rows, as they came>}

and the engine turns a batch of such lines into table rows with one `INSERT ... SELECT`
(`select_sql`) whose input structure (`STRUCTURE`) is derived from the record definition
below, for every table and every format alike. A column a row leaves out takes its default
from `schemas.record` (the type's own default, or through `ifNull` where the record's
default is another value), exactly as a columnar insert of the same dicts would.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from schemas.record import EVENT_COLUMNS, EVENTS_TABLE, LOG_COLUMNS, LOGS_TABLE, PIPELINE_COLUMNS


def encode(rows: list[dict[str, Any]]) -> bytes:
    """The rows as the envelope carries them. Raises `orjson.JSONEncodeError` for a value JSON
    cannot hold (a lone surrogate in a string, an integer past 64 bits)."""
    return orjson.dumps(rows)


def line(facts: dict[str, Any], rows: bytes | memoryview) -> tuple[bytes | memoryview, ...]:
    """One input line, in pieces: the rows are written out as they came, never copied into
    a line of their own."""
    head = orjson.dumps({"f": facts})
    return (head[:-1], b',"r":', rows, b"}\n")


def _input_type(kind: str) -> str:
    """How a column's values are spelled in the JSON input (timestamps as integer ns)."""
    if kind.startswith("DateTime64"):
        return "Int64"
    return kind.replace("LowCardinality(String)", "String")


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def _type_default(value: Any) -> bool:
    return value in ("", 0, (), {})


def _structure(columns: tuple[tuple[str, str, Any], ...]) -> str:
    facts = ", ".join(f"{name} {_input_type(kind)}" for name, kind, _ in columns if name in PIPELINE_COLUMNS)
    own = ", ".join(
        f"{name} {t if _type_default(default) else f'Nullable({t})'}"
        for name, kind, default in columns
        if name not in PIPELINE_COLUMNS
        for t in (_input_type(kind),)
    )
    return f"f Tuple({facts}), r Array(Tuple({own}))"


def _select(columns: tuple[tuple[str, str, Any], ...]) -> str:
    expressions = []
    for name, kind, default in columns:
        value = f"f.{name}" if name in PIPELINE_COLUMNS else f"r.{name}"
        if not _type_default(default):
            value = f"ifNull({value}, {_literal(default)})"
        if kind.startswith("DateTime64"):
            value = f"fromUnixTimestamp64Nano({value}, 'UTC')"
        expressions.append(f"{value} AS {name}")
    return "SELECT " + ", ".join(expressions) + " FROM {source} ARRAY JOIN r"


_COLUMNS: Final = {LOGS_TABLE: LOG_COLUMNS, EVENTS_TABLE: EVENT_COLUMNS}
COLUMNS: Final = {table: tuple(c[0] for c in columns) for table, columns in _COLUMNS.items()}
STRUCTURE: Final = {table: _structure(columns) for table, columns in _COLUMNS.items()}
_SELECT: Final = {table: _select(columns) for table, columns in _COLUMNS.items()}

# How the engine reads the lines. Splitting the input over threads costs more CPU than it
# saves here (measured with the AstraLog SQL this replaced; kept).
INPUT_SETTINGS: Final = {
    "input_format_json_defaults_for_missing_elements_in_named_tuple": 1,
    "input_format_null_as_default": 1,
    "input_format_parallel_parsing": 0,
}


def select_sql(table: str, source: str) -> str:
    """The SELECT producing every column of `table` from `source` (a `file(...)` or `input(...)`)."""
    return _SELECT[table].replace("{source}", source)
