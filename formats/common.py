"""Helpers shared by the dialect parsers: JSON decoding, timestamps, attribute flattening."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, cast

import orjson

from formats.base import ParseContext, ParseError
from schemas.record import LEVELS, normalize_level

# Nesting deeper than this is refused: it is never a real log, and flattening it
# would be work proportional to an attacker's patience.
MAX_DEPTH: Final = 32
MAX_ATTRIBUTE_KEYS: Final = 1000

_EPOCH_NS_BOUNDS: Final = (0, 4_102_444_800 * 10**9)  # 1970 .. 2100
_EPOCH_UTC: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE: Final = datetime(1970, 1, 1)
YEARLESS_FUTURE_NS: Final = 24 * 3600 * 10**9  # how far ahead a year-less time may be (see recent_year_ns)


def load_json(body: bytes, what: str = "body") -> Any:
    """Decode JSON or raise ParseError; orjson itself rejects invalid UTF-8 and overflows."""
    if not body.strip():
        raise ParseError(f"the {what} is empty; send a JSON document", code="empty_body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ParseError(
            f"the {what} is not valid JSON: {exc}", code="invalid_json", position=exc.pos
        ) from None


def json_body(body: bytes, ctx: ParseContext, what: str = "body") -> Any:
    """The body as JSON: the router's decoding of these very bytes when there is one."""
    return ctx.document if ctx.document is not None else load_json(body, what)


def parse_timestamp(value: Any) -> int | None:
    """The one time rule: an event time in ns since the epoch, from RFC 3339 / ISO 8601 / SQL
    text or a Unix time in s, ms, us or ns (the unit guessed by magnitude, as most shippers do).

    Integers (and digit strings) are scaled in integer arithmetic: through a float, a time in
    ms such as 1704110400123 comes out 64 ns off. Text without a zone is UTC. The epoch
    itself is a placeholder, not an event time. Returns None when the value is not a time
    in 1970..2100, so the caller decides between refusing the item and the ingest time.
    """
    if isinstance(value, str):
        text = value.strip()
        if text[4:5] == "-":  # the commonest shape, `2024-01-01T...`: no number, straight to the text rule
            return _text_time(text)
        if ascii_digits(text) and len(text) <= 19:
            value = int(text)
        elif ascii_digits(text.replace(".", "", 1)):
            value = float(text)
        else:
            return _text_time(text)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return _from_int(value, 0.0)
    if isinstance(value, float):
        if not math.isfinite(value) or value <= 0:
            return None
        whole = int(value)
        return _from_int(whole, value - whole)
    return None


def time_or_received(value: Any, ctx: ParseContext) -> int | None:
    """An item's event time by the one rule, the receive time when it gives none, or None when
    what it gives is not a time (the caller refuses the item in its API's own words)."""
    return ctx.received_at_ns if value is None else parse_timestamp(value)


def _text_time(text: str) -> int | None:
    ns = _utc_iso_ns(text)
    if ns < 0:  # not the common shape: the datetime path
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        # Integer arithmetic on the distance from the epoch: no float rounding, and a quarter of
        # the cost of timestamp(). No zone = UTC.
        delta = dt - (_EPOCH_NAIVE if dt.tzinfo is None else _EPOCH_UTC)
        if delta.microseconds == dt.microsecond:
            ns = ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) * 1000
        else:  # a UTC offset with a fraction of a second: whole seconds via timestamp(), as always
            ns = (int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond) * 1000
    return ns if _EPOCH_NS_BOUNDS[0] < ns <= _EPOCH_NS_BOUNDS[1] else None


def _utc_iso_ns(text: str) -> int:
    """`YYYY-MM-DDTHH:MM:SS[.fraction][Z]` in 1970..2100 as ns since the epoch, or -1 for any other
    text, which `fromisoformat` then reads. Most shippers write this shape; reading it here,
    without a datetime and its arithmetic, halves `parse_timestamp` (524 -> 250 ns). The result
    is what the datetime path gives: a fraction to the microsecond (further digits dropped), no
    zone = UTC.
    No table lookups (the compiled code would box a constant tuple for each) and no product of
    big factors (below).
    """
    n = len(text)
    if n < 19 or n > 30 or not text.isascii():
        return -1
    b = text.encode()
    if b[4] != 45 or b[7] != 45 or b[10] != 84 or b[13] != 58 or b[16] != 58:  # - - T : :
        return -1
    century = _two(b, 0)
    low = _two(b, 2)
    month = _two(b, 5)
    day = _two(b, 8)
    hour = _two(b, 11)
    minute = _two(b, 14)
    second = _two(b, 17)
    year = century * 100 + low
    if century < 0 or low < 0 or year < 1970 or year > 2100 or month < 1 or month > 12 or day < 1:
        return -1
    if hour < 0 or hour > 23 or minute < 0 or minute > 59 or second < 0 or second > 59:
        return -1
    if month == 2:
        last = 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    else:
        last = 30 + ((month + month // 8) & 1)  # 31 in Jan, Mar, May, Jul, Aug, Oct, Dec
    if day > last:
        return -1
    micro = 0
    i = 19
    if i < n and b[i] == 46:  # "."
        i += 1
        digits = 0
        while i < n and 48 <= b[i] <= 57:
            if digits < 6:
                micro = micro * 10 + b[i] - 48
            digits += 1
            i += 1
        if digits == 0:
            return -1
        while digits < 6:
            micro *= 10
            digits += 1
    if i < n and b[i] == 90:  # "Z"
        i += 1
    if i != n:
        return -1
    # Days since 1970-01-01 in the proleptic Gregorian calendar, years counted from March.
    y = year - 1 if month <= 2 else year
    shifted = month - 3 if month > 2 else month + 9
    days = y * 365 + y // 4 - y // 100 + y // 400 + (153 * shifted + 2) // 5 + day - 1 - 719_468
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second  # < 2**32
    # seconds * 10**9 in two 16-bit halves: compiled, a product is a machine multiply only while
    # both factors are under 2**30, else Python ints (~50 ns). 2**16 * 10**9 = 1953125 << 25.
    return ((seconds >> 16) * 1_953_125 << 25) + (seconds & 0xFFFF) * 1_000_000_000 + micro * 1000


def _two(b: bytes, i: int) -> int:
    """The two ASCII digits at `i` as a number, or -1."""
    tens = b[i] - 48
    ones = b[i + 1] - 48
    if 0 <= tens <= 9 and 0 <= ones <= 9:
        return tens * 10 + ones
    return -1


def to_text(value: Any) -> str:
    """An attribute value as stored: strings verbatim, everything else as compact JSON; a NaN or
    infinite double (which JSON cannot hold: orjson writes `null`) as proto3's JSON spells it."""
    if isinstance(value, str):
        return value
    if type(value) is int:  # what orjson writes, for a fraction of the cost (and past 64 bits too)
        return str(value)
    if type(value) is float and not math.isfinite(value):  # an OTLP double, say (JSON decoders refuse them)
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        # orjson refuses nesting deeper than 255; repr() of a list nested ~1000 deep overflows too.
        try:
            return str(value)
        except RecursionError:
            raise ParseError("a value is nested too deeply to store", code="too_deep") from None


def flatten(value: Any, prefix: str, out: dict[str, str], depth: int = 0) -> None:
    """Flatten nested objects into dotted keys (`a.b.c`); lists stay JSON text.

    Searchable as `attributes['a.b.c']` without JSON functions at query time. This runs for
    every attribute of every log of every format: leaves are stored in the loop, without a
    call, and the commonest leaf types without `to_text`; an object inside an object (ECS's
    `{"host": {"name": ...}}`) is walked in the same call too, the deeper ones by recursion.
    """
    if depth > MAX_DEPTH:
        raise ParseError(f"'{prefix}' is nested deeper than {MAX_DEPTH} levels", code="too_deep")
    if not isinstance(value, dict):
        if prefix:
            out[prefix] = to_text(value)
        return
    if not value and prefix:
        out[prefix] = "{}"
    if depth >= MAX_DEPTH - 1:  # near the bound, where leaves are refused too: the plain walk
        _flatten_deep(value, prefix, out, depth)
        return
    _walk(value, prefix, out, depth)


def _walk(value: dict[Any, Any], prefix: str, out: dict[str, str], depth: int) -> None:
    """`flatten`'s walk of an object. The objects are typed as dicts here and below (not `Any`):
    the compiled parsers (formats/native.py) then iterate them as dicts, a third faster."""
    # The field count is checked before each key, but only once `out` could be full by then:
    # each leaf adds one entry, so an object with room for all its keys needs no check until
    # a child object (which may add any number) has been walked.
    checked = len(out) + len(value) > MAX_ATTRIBUTE_KEYS
    names = _names_under(prefix) if prefix else None
    for key, item in value.items():
        if checked and len(out) >= MAX_ATTRIBUTE_KEYS:
            raise _too_many_fields()
        name = _child(names, prefix, key) if prefix else _dotted("", key)
        kind = type(item)
        if kind is str and name:
            out[name] = item
        elif kind is dict and name:
            # The same walk one level down, inline (its leaves are still under the bound).
            if not item:
                out[name] = "{}"
            child: dict[Any, Any] = item
            checked2 = len(out) + len(child) > MAX_ATTRIBUTE_KEYS
            names2 = _names_under(name) if child else None
            for key2, item2 in child.items():
                if checked2 and len(out) >= MAX_ATTRIBUTE_KEYS:
                    raise _too_many_fields()
                name2 = _child(names2, name, key2)
                kind2 = type(item2)
                if kind2 is str:
                    out[name2] = item2
                elif kind2 is dict:
                    flatten(item2, name2, out, depth + 2)
                    checked2 = True
                elif kind2 is int:
                    out[name2] = str(item2)
                else:
                    out[name2] = to_text(item2)
            checked = True
        elif kind is int and name:  # what orjson writes for an int (a bool is not `int` here)
            out[name] = str(item)
        elif kind is dict or not name:
            flatten(item, name, out, depth + 1)
            checked = True
        else:
            out[name] = to_text(item)


def _flatten_deep(value: dict[Any, Any], prefix: str, out: dict[str, str], depth: int) -> None:
    """`flatten`'s walk of an object at the last levels before the bound, one call per object."""
    leaf_depth = depth < MAX_DEPTH
    dot = f"{prefix}." if prefix else ""
    for key, item in value.items():
        if len(out) >= MAX_ATTRIBUTE_KEYS:
            raise _too_many_fields()
        name = _dotted(dot, key)
        kind = type(item)
        if kind is dict or not name or not leaf_depth:
            flatten(item, name, out, depth + 1)
        elif kind is str:
            out[name] = item
        elif kind is int:
            out[name] = str(item)
        else:
            out[name] = to_text(item)


# Dotted names already built, by parent name. The same keys under the same objects come in
# log after log (ECS's `host.name`, `http.status`, ...): a leaf then reuses one string, whose
# hash is already known, instead of building, hashing and freeing a new one. Bounded: names
# past `_MAX_NAME` and children past `_MAX_CHILDREN` are built each time, as without it, and
# a full cache starts over (parents of one-off names must not keep out the common ones).
_NAMES: Final[dict[str, dict[str, str]]] = {}
_MAX_PARENTS: Final = 256
_MAX_CHILDREN: Final = 64
_MAX_NAME: Final = 64


def _names_under(parent: str) -> dict[str, str] | None:
    """The cache of `parent`'s children's dotted names; None for a parent too long to cache."""
    names = _NAMES.get(parent)
    if names is None and len(parent) < _MAX_NAME:
        if len(_NAMES) >= _MAX_PARENTS:
            _NAMES.clear()
        names = _NAMES[parent] = {}
    return names


def _child(names: dict[str, str] | None, parent: str, key: Any) -> str:
    """`parent.key`, from `names` (parent's cache) when it was built before."""
    if names is None or type(key) is not str:  # only plain text keys: their equality is the text's
        return _dotted(parent + ".", key)
    name = names.get(key)
    if name is None:
        name = parent + "." + key
        if len(names) < _MAX_CHILDREN and len(name) <= _MAX_NAME:
            names[key] = name
    return name


def _dotted(dot: str, key: Any) -> str:
    """A child's dotted name: its parent's prefix and dot ("" at the top) and its key as text."""
    try:
        return cast(str, dot + key)  # "" + key is key itself
    except TypeError:  # a key that is not text: never from JSON, but a caller's dict may hold one
        return dot + str(key)


def _too_many_fields() -> ParseError:
    return ParseError(f"more than {MAX_ATTRIBUTE_KEYS} attributes in one record", code="too_many_fields")


def optional_str(item: dict[str, Any], key: str) -> str:
    """A string field, or '' when absent; other scalar types are kept as their text."""
    value = item.get(key)
    if value is None:
        return ""
    return value if isinstance(value, str) else to_text(value)


def str_list(value: Any) -> list[str]:
    """A list of tags; a lone string counts as one tag, anything else is JSON text."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v if isinstance(v, str) else to_text(v) for v in value]
    return [to_text(value)]


# ---------------------------------------------------------------------------------------------
# Helpers of the TG2G, Dynatrace, GoodLogs and Timberlogs parsers.

# pino's and bunyan's numeric levels
_NUMERIC_LEVELS: Final = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
_MONTHS: Final = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}

# Field names most senders use for the fields that have their own column. Only scalar values
# move to a column; an object under one of these names stays in `attributes`, flattened.
WELL_KNOWN_COLUMNS: Final[dict[str, str]] = {
    "requestId": "request_id",
    "request_id": "request_id",
    "traceId": "trace_id",
    "trace_id": "trace_id",
    "spanId": "span_id",
    "span_id": "span_id",
    "userId": "user_id",
    "user_id": "user_id",
    "sessionId": "session_id",
    "session_id": "session_id",
    "flowId": "flow_id",
    "flow_id": "flow_id",
    "errorName": "error_name",
    "error_name": "error_name",
    "errorStack": "error_stack",
    "error_stack": "error_stack",
    "env": "environment",
    "environment": "environment",
    "host": "host",
    "hostname": "host",
    "service": "service",
    "dataset": "dataset",
    "tags": "tags",
}


def media_type(content_type: str) -> str:
    """`Application/JSON; charset=utf-8` -> `application/json`."""
    return content_type.partition(";")[0].strip().lower()


def utf8_exceeds(text: str, limit: int) -> bool:
    """Whether `text` is over `limit` bytes in UTF-8, encoding it only when the length cannot tell."""
    n = len(text)
    if n * 4 <= limit:
        return False
    if n > limit:
        return True
    return not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > limit


def _from_int(number: int, fraction: float) -> int | None:
    """The unit guess by magnitude, whole units in integers.

    The fraction of a unit is kept to the microsecond, as much as a double holds at these magnitudes.
    """
    if number <= 0:
        return None
    if number < 10**11:
        ns = number * 10**9 + round(fraction * 1e6) * 1000
    elif number < 10**14:
        ns = number * 10**6 + round(fraction * 1e3) * 1000
    elif number < 10**17:
        ns = number * 10**3 + round(fraction) * 1000
    else:
        ns = number
    return ns if ns <= _EPOCH_NS_BOUNDS[1] else None


def datetime_ns(dt: datetime) -> int | None:
    """An aware datetime as ns since the epoch, or None outside 1970..2100."""
    ns = (int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond) * 1000
    return ns if _EPOCH_NS_BOUNDS[0] < ns <= _EPOCH_NS_BOUNDS[1] else None


def ascii_digits(text: str) -> bool:
    """str.isdigit() admits '²' and other digits int() refuses; this does not."""
    return text.isascii() and text.isdigit()


def recent_year_ns(
    month: int, day: int, hour: int, minute: int, second: int, micro: int, received_at_ns: int
) -> int | None:
    """A time given without its year (RFC 3164), placed in the latest year that is not in the future.

    Logs come from the past (a replayed file may be months old), so a line stamped `Jan 15`
    and received in November is this January's, not next January's, and one stamped
    `Dec 31 23:59:59` and received on January 1st belongs to the year before. "Future" allows
    a day: the stamp is the sender's local time taken as UTC (up to 14 hours ahead east of
    UTC), and a `Jan  1 00:00:01` from a fast clock received on December 31st is next year's.
    """
    try:
        year = datetime.fromtimestamp(received_at_ns / 1e9, UTC).year
    except (OverflowError, OSError, ValueError):
        return None
    for candidate in (year + 1, year, year - 1, year - 2, year - 3, year - 4):
        try:
            ns = datetime_ns(datetime(candidate, month, day, hour, minute, second, micro, tzinfo=UTC))
        except ValueError:  # Feb 29 outside a leap year, or hours and days out of range
            continue
        if ns is not None and ns <= received_at_ns + YEARLESS_FUTURE_NS:
            return ns
    return None


def parse_bsd_timestamp(text: str, received_at_ns: int) -> int | None:
    """RFC 3164 `Mmm dd hh:mm:ss` (day space- or zero-padded), taken as UTC, year from the receive time."""
    if len(text) != 15 or text[3] != " " or text[6] != " " or text[9] != ":" or text[12] != ":":
        return None
    month = _MONTHS.get(text[:3])
    day, hour, minute, second = text[4:6].lstrip(" "), text[7:9], text[10:12], text[13:15]
    if month is None or not all(ascii_digits(part) for part in (day, hour, minute, second)):
        return None
    return recent_year_ns(month, int(day), int(hour), int(minute), int(second), 0, received_at_ns)


def normalized_level(text: str) -> tuple[str, int]:
    """`normalize_level(text)`: (normalized level, severity number). The rule (schemas/record.py)
    runs interpreted, several times the cost of a lookup from here; levels are a few short words
    sent in every log, so those are remembered (as dynatrace.py does its own)."""
    if type(text) is str and len(text) <= 32:  # a str subclass may compare as it likes
        return _short_normalized_level(text)
    return normalize_level(text)


@lru_cache(maxsize=1024)
def _short_normalized_level(text: str) -> tuple[str, int]:
    return normalize_level(text)


def level_fields(value: Any) -> tuple[str, int, str]:
    """(level, severity_number, severity_text) for a level as sent; pino/bunyan numbers (10..60) count too."""
    if value is None:
        return "info", LEVELS["info"], ""
    if isinstance(value, str):
        level, number = normalized_level(value)
        return level, number, value
    text = to_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in _NUMERIC_LEVELS:
        level = _NUMERIC_LEVELS[value]
        return level, LEVELS[level], text
    level, number = normalized_level(text)
    return level, number, text


def put_attribute(out: dict[str, str], key: str, value: Any) -> None:
    """One field into attributes: strings as they are, objects flattened under `key.`, the rest as JSON."""
    if len(out) >= MAX_ATTRIBUTE_KEYS and key not in out:
        raise ParseError(f"more than {MAX_ATTRIBUTE_KEYS} attributes in one record", code="too_many_fields")
    if isinstance(value, str):
        out[key] = value
    elif isinstance(value, dict):
        flatten(value, key, out, 1)
    else:
        out[key] = to_text(value)


# Tuples, not `int | float`: isinstance with a tuple is several times cheaper on these paths.
_NUMBER: Final[tuple[type, ...]] = (int, float)
_LIST_OR_STR: Final[tuple[type, ...]] = (list, str)


def split_fields(
    item: dict[str, Any],
    skip: frozenset[str],
    row: dict[str, Any],
    attributes: dict[str, str],
    mapping: dict[str, str] = WELL_KNOWN_COLUMNS,
) -> None:
    """Move each field of `item` (but those in `skip`) to the column `mapping` names, else to attributes.

    A column already set keeps its value and the later alias stays an attribute, so two
    spellings of one field in one record both survive.
    """
    for key, value in item.items():
        if key in skip:
            continue
        column = mapping.get(key)
        if column is not None and column not in row:
            if column == "tags":
                if isinstance(value, _LIST_OR_STR):
                    row["tags"] = str_list(value)
                    continue
            elif isinstance(value, str):
                row[column] = value
                continue
            elif isinstance(value, _NUMBER):
                row[column] = to_text(value)
                continue
        put_attribute(attributes, key, value)


def copy_well_known(item: dict[str, Any], row: dict[str, Any]) -> None:
    """Fill the columns of well-known fields from `item`, leaving `item` itself whole (maps kept verbatim)."""
    for key, value in item.items():
        column = WELL_KNOWN_COLUMNS.get(key)
        if column is None or column in row:
            continue
        if column == "tags":
            if isinstance(value, _LIST_OR_STR):
                row["tags"] = str_list(value)
        elif isinstance(value, str):
            row[column] = value
        elif isinstance(value, _NUMBER):
            row[column] = to_text(value)
