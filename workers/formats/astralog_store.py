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

import re
from typing import Any, Final

import orjson

from schemas.record import LEVEL_ALIASES, LEVELS, LOGS_TABLE

TABLE: Final = LOGS_TABLE

# What `parse_timestamp` reads and parseDateTime64BestEffort reads alike (both keep microseconds).
_ISO: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)
_iso_match = _ISO.fullmatch
_PLAIN_SCALARS: Final = frozenset({str, int, bool, type(None)})


def ready(item: dict[str, Any]) -> bool:
    """Whether `select_sql` stores `item` as `astralog._plain_row` would.

    Called only on records `astralog._plain` accepted (known keys, texts set, ISO time,
    metadata of scalars and one level of objects).
    """
    if not _iso_match(item["timestamp"]):
        return False
    level = item["level"]
    # ASCII lower-casing is the same in both; Python's strip() and Unicode lower() are not.
    if not level.isascii() or level != level.strip():
        return False
    metadata = item.get("metadata")
    if not metadata:
        return True
    if "" in metadata:
        return False
    for value in metadata.values():
        kind = type(value)
        if kind in _PLAIN_SCALARS:
            continue
        if kind is float:
            if not _float_ready(value):
                return False
        elif kind is dict:
            for inner in value.values():
                inner_kind = type(inner)
                if inner_kind not in _PLAIN_SCALARS and (inner_kind is not float or not _float_ready(inner)):
                    return False
        else:
            return False
    return True


def _float_ready(value: float) -> bool:
    # Both print the shortest round-trip digits but start exponents at different magnitudes:
    # only the range where both print plain decimals (integral values get ".0" in the SQL).
    magnitude = abs(value)
    return magnitude < 1e15 and (magnitude >= 1e-4 or value.is_integer())


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

COLUMNS: Final = (
    "project",
    "timestamp",
    "observed_timestamp",
    "level",
    "severity_text",
    "severity_number",
    "service",
    "message",
    "attributes",
    "ua_browser",
    "ua_os",
    "ua_device",
    "client_ip",
    "dialect",
    "ingest_id",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
)


def select_sql(source: str, topic_param: str = "topic") -> str:
    """The SELECT producing `COLUMNS` from `source` (a `file(...)` or `input(...)` table).

    Metadata is flattened as `flatten_plain` does (objects one level deep into `a.b`,
    an empty object as "{}"), then `project_id` is added; a key seen twice keeps its
    last value, as a Python dict does.
    """
    inner_text = _TEXT.format(raw="y.2", path="l.metadata, i, j")
    outer_text = _TEXT.format(raw="x.2", path="l.metadata, i")
    nested = (
        f"arrayMap((y, j) -> (concat(x.1, '.', y.1), {inner_text}), "
        "JSONExtractKeysAndValuesRaw(x.2), arrayEnumerate(JSONExtractKeysAndValuesRaw(x.2)))"
    )
    pairs = (
        "arrayConcat(arrayFlatten(arrayMap((x, i) -> if(startsWith(x.2, '{'), "
        f"if(x.2 = '{{}}', [(x.1, '{{}}')], {nested}), [(x.1, {outer_text})]), "
        "JSONExtractKeysAndValuesRaw(l.metadata) AS top, arrayEnumerate(top))), "
        "[('project_id', l.project_id)])"
    )
    return f"""SELECT
    proj,
    toDateTime64(parseDateTime64BestEffort(l.timestamp, 6, 'UTC'), 9, 'UTC'),
    fromUnixTimestamp64Nano(obs, 'UTC'),
    transform(lower(l.level), {_ALIAS_KEYS}, {_ALIAS_LEVELS}, 'info'),
    l.level,
    transform(lower(l.level), {_ALIAS_KEYS}, {_ALIAS_NUMBERS}, toUInt8({LEVELS["info"]})),
    l.service,
    l.message,
    mapFromArrays(arrayMap(t -> t.1, kv), arrayMap(t -> t.2, kv)),
    uab, uao, uad, ip, dia, rid,
    {{{topic_param}:String}},
    p,
    o
FROM (
    -- A key seen twice keeps its last value: reversed, each key's first occurrence, reversed back.
    SELECT o, p, obs, proj, rid, uab, uao, uad, ip, dia, l,
           arrayReverse(arrayFilter((t, i) -> indexOf(rkeys, t.1) = i, rev, arrayEnumerate(rev))) AS kv
    FROM (
        -- Only the facts and the record: `b` (the whole body) must not be copied per record.
        SELECT o, p, obs, proj, rid, uab, uao, uad, ip, dia, l,
               arrayReverse({pairs}) AS rev, arrayMap(u -> u.1, rev) AS rkeys
        FROM {source}
        ARRAY JOIN b.logs AS l
    )
)"""
