"""AstraLog bodies the store parses itself: the shape test and the SQL that stands in for `parse`.

Most AstraLog traffic is one shape: the five text fields, an ISO time, and flat or
two-level metadata of strings and numbers. For a body whose every record has that
shape (`ready`, run by the gateway while it validates), the worker does no per-log
Python at all: it hands the raw body to ClickHouse, and `select_sql` turns it into
exactly the rows `astralog.parse` would build (tests/test_store_parse.py compares the
two on generated bodies). Anything else (lists, deep nesting, numeric times, integral
floats whose JSON text the engine writes differently) keeps the Python parser.

The engine reads one JSON line per envelope (`line`): the request facts and the body,
embedded verbatim.
"""

from __future__ import annotations

from math import copysign
from typing import Any, Final

import orjson

from schemas.record import LEVEL_ALIASES, LEVELS, LOGS_TABLE
from workers.formats.validate import KEY_BUDGET, iso_time, texts_set

TABLE: Final = LOGS_TABLE

_DIGITS: Final = "0123456789"
_PLAIN_SCALARS: Final = frozenset({str, int, bool, type(None)})
# `astralog._plain`'s record shape (kept here, not imported: astralog imports this module).
_TEXT_FIELDS: Final = ("project_id", "level", "service", "message")
_KNOWN: Final = frozenset({*_TEXT_FIELDS, "timestamp", "metadata"})


def ready(item: Any) -> bool:
    """Whether `astralog._plain(item)` holds and `select_sql` stores `item` as `_plain_row` would.

    One pass over the record, as cheap as `_plain` alone: the gateway runs it on every
    record and falls back to `_plain` for the first record it answers False for.
    """
    if not texts_set(item, _KNOWN, _TEXT_FIELDS):
        return False
    timestamp = item.get("timestamp")
    if type(timestamp) is not str or not _iso_shape(timestamp) or not iso_time(timestamp):
        return False
    level = item["level"]
    # ASCII lower-casing is the same in both; Python's strip() and Unicode lower() are not.
    if not level.isascii() or level != level.strip():
        return False
    metadata = item.get("metadata")
    if metadata is None:
        return True
    if type(metadata) is not dict or "" in metadata:
        return False
    keys = len(metadata)
    for value in metadata.values():
        kind = type(value)
        if kind in _PLAIN_SCALARS:
            continue
        if kind is float:
            if not _float_ready(value):
                return False
        elif kind is dict:
            keys += len(value)
            for inner in value.values():
                inner_kind = type(inner)
                if inner_kind not in _PLAIN_SCALARS and (inner_kind is not float or not _float_ready(inner)):
                    return False
        else:
            return False
    return keys <= KEY_BUDGET


def _iso_shape(text: str) -> bool:
    """`YYYY-MM-DD[T ]hh:mm:ss[.f{1,9}][Z|+hh:mm|-hh:mm]`, the ISO form that `parse_timestamp`
    and parseDateTime64BestEffort read alike (both keep microseconds). The digits themselves
    are checked by `iso_time`'s fromisoformat; a regex here cost the gateway twice as much."""
    if (
        len(text) < 19
        or not text.isascii()
        or text[4] != "-"
        or text[7] != "-"
        or text[10] not in "T "
        or text[13] != ":"
        or text[16] != ":"
    ):
        return False
    tail = text[19:]
    if tail[:1] == ".":
        rest = tail[1:].lstrip(_DIGITS)
        if not 1 <= len(tail) - 1 - len(rest) <= 9:
            return False
        tail = rest
    return not tail or tail == "Z" or (len(tail) == 6 and tail[0] in "+-" and tail[3] == ":")


def _float_ready(value: float) -> bool:
    # Both print the shortest round-trip digits but start exponents at different magnitudes:
    # only the range where both print plain decimals (integral values get ".0" in the SQL).
    # -0.0 inside a nested object comes back from the engine as 0.0: refused everywhere.
    magnitude = abs(value)
    return magnitude < 1e15 and (magnitude >= 1e-4 or (value.is_integer() and copysign(1.0, value) > 0))


def line(
    body: bytes,
    *,
    offset: int,
    partition: int,
    observed_ns: int,
    project: str,
    ingest_id: str,
    browser: str,
    os: str,
    device: str,
    client_ip: str,
    dialect: str,
) -> bytes:
    """One input row: the request facts, then the body as it came (never re-encoded)."""
    head = orjson.dumps(
        {
            "o": offset,
            "p": partition,
            "obs": observed_ns,
            "proj": project,
            "rid": ingest_id,
            "uab": browser,
            "uao": os,
            "uad": device,
            "ip": client_ip,
            "dia": dialect,
        }
    )
    return b"".join((head[:-1], b',"b":', body, b"}\n"))


STRUCTURE: Final = (
    "o UInt64, p UInt32, obs Int64, proj String, rid String, uab String, uao String, uad String, "
    "ip String, dia String, b Tuple(logs Array(Tuple(project_id String, timestamp String, "
    "level String, service String, message String, metadata String)))"
)

# How the engine must read those rows: metadata arrives as its raw JSON text.
INPUT_SETTINGS: Final = {
    "input_format_json_read_objects_as_strings": 1,
    "input_format_skip_unknown_fields": 1,
    "input_format_null_as_default": 1,
    "input_format_json_defaults_for_missing_elements_in_named_tuple": 1,
    # Measured: splitting the input over threads costs more CPU than it saves here.
    "input_format_parallel_parsing": 0,
}

_ALIAS_KEYS: Final = "[" + ",".join(f"'{k}'" for k in LEVEL_ALIASES) + "]"
_ALIAS_LEVELS: Final = "[" + ",".join(f"'{v}'" for v in LEVEL_ALIASES.values()) + "]"
_ALIAS_NUMBERS: Final = "[" + ",".join(str(LEVELS[v]) for v in LEVEL_ALIASES.values()) + "]::Array(UInt8)"

# A value as `common.to_text` writes it, from the engine's re-serialized JSON text `raw`:
# strings decoded; a float with an integral value gets the ".0" orjson writes (the engine
# drops it, so the value's JSON type is asked of the source text, by position).
_TEXT = (
    "multiIf(startsWith({raw}, '\"'), JSONExtractString({raw}), "
    "match({raw}, '^-?[0-9]+$') AND JSONType({path}) = 'Double', concat({raw}, '.0'), {raw})"
)

# Each column the SELECT fills, with its expression over a record `l` (the body's `logs[i]`,
# typed by STRUCTURE), its facts and `kv` (the flattened metadata); the rest keep their defaults.
_EXPRESSIONS: Final = {
    "project": "proj",
    "timestamp": "toDateTime64(parseDateTime64BestEffort(l.timestamp, 6, 'UTC'), 9, 'UTC')",
    "observed_timestamp": "fromUnixTimestamp64Nano(obs, 'UTC')",
    "level": f"transform(lower(l.level), {_ALIAS_KEYS}, {_ALIAS_LEVELS}, 'info')",
    "severity_text": "l.level",
    "severity_number": (
        f"transform(lower(l.level), {_ALIAS_KEYS}, {_ALIAS_NUMBERS}, toUInt8({LEVELS['info']}))"
    ),
    "service": "l.service",
    "message": "l.message",
    "attributes": "mapFromArrays(arrayMap(t -> t.1, kv), arrayMap(t -> t.2, kv))",
    "ua_browser": "uab",
    "ua_os": "uao",
    "ua_device": "uad",
    "client_ip": "ip",
    "dialect": "dia",
    "ingest_id": "rid",
    "kafka_topic": "{topic:String}",
    "kafka_partition": "p",
    "kafka_offset": "o",
}
COLUMNS: Final = tuple(_EXPRESSIONS)


def select_sql(source: str) -> str:
    """The SELECT producing `COLUMNS` from `source` (a `file(...)` or `input(...)` table);
    the Kafka topic is the query parameter `topic`.

    Metadata is flattened as `flatten_plain` does (objects one level deep into `a.b`,
    an empty object as "{}"), then `project_id` is added; a key seen twice keeps its
    last value, as a Python dict does.
    """
    inner_text = _TEXT.format(raw="y.2", path="l.metadata, i, j")
    outer_text = _TEXT.format(raw="x.2", path="l.metadata, i")
    # The object's pairs are extracted once and bound as `kvs` (a lambda over a one-element
    # array: SQL has no let); written twice, the engine parsed the object twice.
    nested = (
        f"arrayMap(kvs -> arrayMap((y, j) -> (concat(x.1, '.', y.1), {inner_text}), kvs, "
        "arrayEnumerate(kvs)), "
        "[JSONExtractKeysAndValuesRaw(x.2)])[1]"
    )
    pairs = (
        "arrayConcat(arrayFlatten(arrayMap((x, i) -> if(startsWith(x.2, '{'), "
        f"if(x.2 = '{{}}', [(x.1, '{{}}')], {nested}), [(x.1, {outer_text})]), "
        "arrayMap(t -> t.1, top), arrayMap(t -> t.2, top))), "
        "[('project_id', l.project_id)])"
    )
    columns = ",\n    ".join(f"{expression} AS {name}" for name, expression in _EXPRESSIONS.items())
    # A key seen twice keeps its last value, as in a Python dict: first among the metadata's own
    # keys (so an earlier object's children are dropped with it), then among the flattened
    # names (`a.b` next to `a: {b}`, and the record's project_id). Only when a key repeats.
    return f"""SELECT
    {columns}
FROM (
    SELECT o, p, obs, proj, rid, uab, uao, uad, ip, dia, l,
           arrayReverse(if(arrayUniq(rkeys) = length(rkeys), rev,
                           arrayFilter((t, i) -> indexOf(rkeys, t.1) = i, rev, arrayEnumerate(rev)))) AS kv
    FROM (
        SELECT o, p, obs, proj, rid, uab, uao, uad, ip, dia, l,
               arrayReverse({pairs}) AS rev, arrayMap(u -> u.1, rev) AS rkeys
        FROM (
            -- Only the facts and the record: `b` (the whole body) must not be copied per record.
            -- `top`: the metadata's (key, raw value) pairs with their position (JSONType's path).
            SELECT o, p, obs, proj, rid, uab, uao, uad, ip, dia, l,
                   if(arrayUniq(tkeys) = length(tkeys), indexed,
                      arrayFilter(t -> NOT has(arraySlice(tkeys, t.2 + 1), t.1.1), indexed)) AS top
            FROM (
                SELECT o, p, obs, proj, rid, uab, uao, uad, ip, dia, l,
                       arrayZip(JSONExtractKeysAndValuesRaw(l.metadata) AS kvraw,
                                arrayEnumerate(kvraw)) AS indexed,
                       arrayMap(u -> u.1, kvraw) AS tkeys
                FROM {source}
                ARRAY JOIN b.logs AS l
            )
        )
    )
)"""
