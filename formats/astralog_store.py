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
from typing import Annotated, Any, Final

import msgspec
import orjson

from formats.validate import KEY_BUDGET, iso_time, texts_set
from schemas.record import LEVEL_ALIASES, LEVELS, LOGS_TABLE

TABLE: Final = LOGS_TABLE

_DIGITS: Final = "0123456789"
_PLAIN_SCALARS: Final = frozenset({str, int, bool, type(None)})
# An AstraLog record's fields: the texts that must be non-empty strings, and all it may have.
# Defined here, where the shape test needs them; `astralog` (which imports this module) uses them.
TEXT_FIELDS: Final = ("project_id", "level", "service", "message")
KNOWN_FIELDS: Final = frozenset({*TEXT_FIELDS, "timestamp", "metadata"})


def ready(item: Any) -> bool:
    """Whether `astralog._plain(item)` holds and `select_sql` stores `item` as `_plain_row` would.

    One pass over the record, as cheap as `_plain` alone: the gateway runs it on each record
    of a body `body_ready` was not sure of, and falls back to `_plain` for the first record
    it answers False for.
    """
    if not texts_set(item, KNOWN_FIELDS, TEXT_FIELDS):
        return False
    timestamp = item.get("timestamp")
    if type(timestamp) is not str or not time_ready(timestamp):
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


# The usual body as msgspec types: decoding it checks in one C pass what `ready` checks field by
# field in Python (known keys only, non-empty texts, metadata of scalars and one level of
# objects, no "" key). What a type cannot say is left to `body_ready`. Ints stay within what
# orjson reads as ints (it reads larger ones as floats); the key counts stay below KEY_BUDGET.
_Text = Annotated[str, msgspec.Meta(min_length=1)]
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # msgspec bounds are int64
_Float = Annotated[float, msgspec.Meta(gt=-1e15, lt=1e15)]
_TOP_KEYS: Final = 22
_INNER_KEYS: Final = 21
_Inner = Annotated[dict[str, str | _Int | _Float | bool | None], msgspec.Meta(max_length=_INNER_KEYS)]
_Metadata = Annotated[
    dict[str, str | _Int | _Float | bool | _Inner | None], msgspec.Meta(max_length=_TOP_KEYS)
]
assert _TOP_KEYS * (1 + _INNER_KEYS) <= KEY_BUDGET


class _Record(msgspec.Struct, forbid_unknown_fields=True):
    project_id: _Text
    timestamp: str
    level: _Text
    service: _Text
    message: _Text
    metadata: _Metadata | None = None


# Unknown fields are refused, not skipped: msgspec skips a value without checking its UTF-8 or
# converting its numbers, where orjson refuses the body (found by review; tests/test_fastpath.py).
class _Body(msgspec.Struct, forbid_unknown_fields=True):
    logs: Annotated[list[_Record], msgspec.Meta(min_length=1)]


_DECODE: Final = msgspec.json.Decoder(_Body).decode


def body_ready(body: bytes) -> int | None:
    """The number of records of `body` if `ready` holds for each of them, else None (not sure).

    Each record as orjson reads it, for `astralog.validate`: None sends it the
    record-by-record way, which also answers every malformed body. Saves the gateway
    orjson's dicts and most of `ready`'s Python (tests/test_fastpath.py checks the two agree).
    """
    try:
        logs = _DECODE(body).logs
    # DecodeError: also every failed type check; the others: bad UTF-8, nesting past its depth.
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    for record in logs:
        level = record.level
        if not time_ready(record.timestamp) or not level.isascii() or level != level.strip():
            return None
        metadata = record.metadata
        if metadata:
            if "" in metadata:
                return None
            for value in metadata.values():
                kind = type(value)
                if kind is float:
                    if not _float_ready(value):  # type: ignore[arg-type]
                        return None
                elif kind is dict:
                    for inner in value.values():  # type: ignore[union-attr]
                        if type(inner) is float and not _float_ready(inner):
                            return None
    return len(logs)


# Verdicts on the two halves of a time, `YYYY-MM-DD?hh:mm:ss` and the rest (fraction, zone):
# the logs of one batch share a handful of seconds, and with millisecond fractions of tails, so
# each half is judged once (finer fractions mostly miss, and the cache starts over).
_HEADS: Final[dict[str, bool]] = {}
_TAILS: Final[dict[str, bool]] = {}
_CACHED: Final = 4096  # per half; a full cache starts over
_REFERENCE_HEAD: Final = "2000-01-01T00:00:00"
_LONGEST: Final = 19 + len(".123456789+00:00")  # what `_iso_shape` can accept


def time_ready(text: str) -> bool:
    """`_iso_shape(text) and iso_time(text)`, from cached verdicts on its two halves.

    The two agree: every check of the shape is on one half or the other, and
    `fromisoformat` reads the tail the same after any valid head (tests/test_fastpath.py).
    Longer texts are refused before any caching: a client's junk never stays in memory.
    """
    if len(text) > _LONGEST:
        return False
    head = text[:19]
    verdict = _HEADS.get(head)
    if verdict is None:
        verdict = _iso_shape(head) and iso_time(head)
        if len(_HEADS) >= _CACHED:
            _HEADS.clear()
        _HEADS[head] = verdict
    if not verdict:
        return False
    tail = text[19:]
    verdict = _TAILS.get(tail)
    if verdict is None:
        verdict = _iso_shape(_REFERENCE_HEAD + tail) and iso_time(_REFERENCE_HEAD + tail)
        if len(_TAILS) >= _CACHED:
            _TAILS.clear()
        _TAILS[tail] = verdict
    return verdict


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
) -> tuple[bytes, ...]:
    """One input row: the request facts, then the body as it came (never re-encoded), in
    pieces: the body is not copied into a line of its own before it is written out."""
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
    return (head[:-1], b',"b":', body, b"}\n")


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

# Where the quick way may differ from the exact one, in metadata's source text: after a `:`,
# a number with an exponent or an all-zero fraction, `-0`, a run of 17+ digits and dots (16+
# digits: a fraction may round away, `1.0000000000000000001` is the float 1.0, and 19 digits
# overflow 64 bits; up to 15 digits a decimal with a fraction is never integral), null, or a
# string starting with `{` (also spelled `\u007b`). A match inside a string is a false alarm
# (the exact way runs), never a wrong row.
_AMBIGUOUS: Final = (
    r':\s*(-?[0-9]+(\.[0-9]+)?[eE]|-?[0-9]+\.0+\s*[,}]|-0\s*[,}]|-?[0-9.]{17}|null|"\{|"\\u007[bB])'
)
_AMBIGUOUS_SQL: Final = _AMBIGUOUS.replace("\\", "\\\\")  # a SQL string's escaping (no quote in it)

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
    "attributes": (
        "mapFromArrays(arrayConcat(qk, arrayMap(t -> t.1, kv), ['project_id']), "
        "arrayConcat(qv, arrayMap(t -> t.2, kv), [l.project_id]))"
    ),
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

    Two ways to get there. The quick one reads the metadata in one pass as a map of texts
    (`qk`, `qv`); it is right unless the source spells a value the engine writes back
    differently (an integral float such as `26.0`, an exponent, `-0`, 16+ digits),
    holds a null (the map makes it ""), a string starting with `{` (the map cannot tell it
    from an object), or a key twice. `_AMBIGUOUS` finds the first four in the text, with
    false alarms but no misses; two key checks (before and after flattening) see the rest.
    A record flagged so (`ok` false) takes the exact way; for the others the exact way reads
    an empty text, so its arrays are empty and cheap. (No `if` picks between the two
    results: on arrays and maps the engine's `if` cost more than both ways together.)
    """
    inner_text = _TEXT.format(raw="y.2", path="ms, i, j")
    outer_text = _TEXT.format(raw="x.2", path="ms, i")
    # The object's pairs are extracted once and bound as `kvs` (a lambda over a one-element
    # array: SQL has no let); written twice, the engine parsed the object twice.
    nested = (
        f"arrayMap(kvs -> arrayMap((y, j) -> (concat(x.1, '.', y.1), {inner_text}), kvs, "
        "arrayEnumerate(kvs)), "
        "[JSONExtractKeysAndValuesRaw(x.2)])[1]"
    )
    exact = (
        "arrayFlatten(arrayMap((x, i) -> if(startsWith(x.2, '{'), "
        f"if(x.2 = '{{}}', [(x.1, '{{}}')], {nested}), [(x.1, {outer_text})]), "
        "arrayMap(t -> t.1, top), arrayMap(t -> t.2, top)))"
    )
    quick = (
        "arrayFlatten(arrayMap((k, v) -> if(startsWith(v, '{'), "
        "if(v = '{}', [(k, v)], arrayMap(n -> arrayMap((k2, v2) -> (concat(k, '.', k2), v2), "
        "mapKeys(n), mapValues(n)), [JSONExtract(v, 'Map(String, String)')])[1]), [(k, v)]), "
        "mapKeys(m), mapValues(m)))"
    )
    columns = ",\n    ".join(f"{expression} AS {name}" for name, expression in _EXPRESSIONS.items())
    # Each stage reads the one before it; every stage passes on the facts and the record `l`
    # (never `b`, the whole body, which would be copied per record).
    stages = [
        f"match(l.metadata, '{_AMBIGUOUS_SQL}') AS flagged",
        # A flagged text is not read the quick way at all (an empty one is cheap to read).
        "flagged, JSONExtract(if(flagged, '', l.metadata), 'Map(String, String)') AS m",
        f"flagged, {quick} AS q, arrayUniq(mapKeys(m)) = length(m) AS once",
        "flagged, once, arrayMap(t -> t.1, q) AS qk, arrayMap(t -> t.2, q) AS qv",
        "qk, qv, NOT flagged AND once AND arrayUniq(qk) = length(qk) AND NOT has(qk, 'project_id') AS ok",
        # From here on the exact way, over an empty text where the quick one was right.
        "ok, arrayFilter(x -> ok, qk) AS qk, arrayFilter(x -> ok, qv) AS qv, if(ok, '', l.metadata) AS ms",
        # `indexed`: the metadata's (key, raw value) pairs with their position (JSONType's path).
        "ok, qk, qv, ms, arrayZip(JSONExtractKeysAndValuesRaw(ms) AS kvraw, arrayEnumerate(kvraw)) "
        "AS indexed, arrayMap(u -> u.1, kvraw) AS tkeys",
        # A key seen twice keeps its last value, as in a Python dict: first among the metadata's
        # own keys (so an earlier object's children are dropped with it), then among the
        # flattened names (`a.b` next to `a: {b}`); the record's project_id replaces the
        # metadata's own. Only computed when a key repeats.
        "ok, qk, qv, ms, if(arrayUniq(tkeys) = length(tkeys), indexed, "
        "arrayFilter(t -> NOT has(arraySlice(tkeys, t.2 + 1), t.1.1), indexed)) AS top",
        f"ok, qk, qv, arrayReverse({exact}) AS rev, arrayMap(u -> u.1, rev) AS rkeys",
        "ok, qk, qv, arrayFilter(t -> t.1 != 'project_id', arrayReverse(if(arrayUniq(rkeys) = length(rkeys), "
        "rev, arrayFilter((t, i) -> indexOf(rkeys, t.1) = i, rev, arrayEnumerate(rev))))) AS kv",
    ]
    facts = "o, p, obs, proj, rid, uab, uao, uad, ip, dia, l"
    sql = f"SELECT {facts}, {stages[0]}\nFROM {source}\nARRAY JOIN b.logs AS l"
    for stage in stages[1:]:
        sql = f"SELECT {facts}, {stage}\nFROM (\n{sql}\n)"
    return f"SELECT\n    {columns}\nFROM (\n{sql}\n)"
