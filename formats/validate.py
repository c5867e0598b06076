"""Building blocks of the gateway's validate-only fast paths.

A dialect's `validate(body, ctx)` gives the same answer as its `parse` (the same
ParseError, or the same counts) without building rows: the gateway only needs the
answer, the worker builds the rows from the raw body later. Each check here is
one-sided: True means the full parse cannot fail on that value; False means "not
sure", and the caller then runs the full parse of that record, which raises exactly
the error `parse` would. So the two can never disagree, only the speed differs.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any, Final

from formats.base import Parsed
from formats.common import MAX_ATTRIBUTE_KEYS, to_text

# The gateway's answers use only the counts; rows of a validated body carry no data.
_PLACEHOLDER: Final[dict[str, Any]] = {}
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
# At most this many keys are looked at before a record counts as unusual (full parse):
# far below MAX_ATTRIBUTE_KEYS, so a "plain" record can never reach that limit.
KEY_BUDGET: Final = MAX_ATTRIBUTE_KEYS // 2
_fromisoformat = datetime.fromisoformat


def accepted(count: int, table: str | None = None) -> Parsed:
    """The answer for `count` accepted records, without their rows."""
    rows = [_PLACEHOLDER] * count
    return Parsed(rows=rows) if table is None else Parsed(rows=rows, table=table)


def texts_set(item: Any, known: AbstractSet[str], texts: tuple[str, ...]) -> bool:
    """`item` is an object of `known` fields only, with every one of `texts` a non-empty string."""
    if type(item) is not dict or not item.keys() <= known:
        return False
    for name in texts:
        value = item.get(name)
        if type(value) is not str or not value:
            return False
    return True


def plain_object(value: dict[str, Any]) -> bool:
    """Whether flattening `value` surely succeeds: scalars, lists of scalars, objects of those.

    Deeper nesting, lists holding containers, or many keys answer False (not sure), never
    because the value is invalid.
    """
    if len(value) > KEY_BUDGET:
        return False
    keys = len(value)
    scalars = _SCALARS
    for item in value.values():
        kind = type(item)
        if kind in scalars:
            continue
        if kind is dict:
            keys += len(item)
            if keys > KEY_BUDGET:
                return False
            for inner in item.values():
                kind = type(inner)
                if kind not in scalars and (kind is not list or not _scalar_list(inner)):
                    return False
        elif kind is not list or not _scalar_list(item):
            return False
    return True


def _scalar_list(value: list[Any]) -> bool:
    scalars = _SCALARS
    return all(type(v) in scalars for v in value)


def iso_time(value: Any) -> bool:
    """Whether `common.parse_timestamp(value)` surely returns a time, for ISO 8601 text.

    Takes only text with a `-` at index 4 (a date, so never parse_timestamp's numeric
    path) that `datetime.fromisoformat` reads, in the years 1971..2098: any UTC offset
    (less than a day) keeps those inside the accepted 1970..2100 range.
    """
    if type(value) is not str or value[4:5] != "-":
        return False
    try:
        year = _fromisoformat(value.strip()).year
    except ValueError:
        return False
    return 1971 <= year <= 2098


def flatten_plain(value: dict[str, Any], out: dict[str, str]) -> None:
    """`common.flatten(value, "", out)` for an object `plain_object` accepted that has no "" key.

    Those bounds (two levels, few keys, a non-empty prefix for every leaf) are what let
    this skip the general function's depth and count checks and its recursion.
    """
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            out[key] = item
        elif kind is dict:
            if not item:
                out[key] = "{}"
            for inner_key, inner in item.items():
                out[f"{key}.{inner_key}"] = inner if type(inner) is str else to_text(inner)
        else:
            out[key] = to_text(item)
