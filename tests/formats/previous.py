"""The parsers' code as it was at 7e02f11, before their speed-ups: the oracle of test_differential.

Only the functions that changed are kept here (to_text, flatten, put_attribute, split_fields,
copy_well_known, parse_timestamp, the Elasticsearch `_bulk` parser and the Timberlogs row
builder), verbatim but for the names they call, which point at each other here; everything
unchanged is imported from `formats`. Not for anything but comparing: the new code must
answer exactly what this answers.
"""

from __future__ import annotations

import math
from typing import Any
from unittest import mock

import orjson

import formats.timberlogs
from formats.base import ParseContext, Parsed, ParseError, Rejection
from formats.common import (
    MAX_ATTRIBUTE_KEYS,
    MAX_DEPTH,
    WELL_KNOWN_COLUMNS,
    _from_int,
    _text_time,
    ascii_digits,
    level_fields,
    str_list,
)
from formats.es_bulk import (
    _COLUMN_KEYS,
    _LEVEL_KEYS,
    _MESSAGE_KEYS,
    SUPPORTED,
    UNSUPPORTED,
    BulkItem,
    index_of_path,
)
from formats.timberlogs.schema import (
    _KNOWN,
    _OPTIONAL_STRINGS,
    ENVIRONMENTS,
    LEVEL_VALUES,
    MAX_ISSUES,
    MAX_LOGS,
    MAX_MESSAGE,
    MAX_SOURCE,
    MIN_LOGS,
    QUERY_DEFAULTS,
    Issue,
    _enum,
    _issue,
    _kind,
    _step,
    _string,
    _tags,
    _timestamp,
    fail,
)
from schemas.record import LEVELS


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


def to_text(value: Any) -> str:
    """An attribute value as stored: strings verbatim, everything else as compact JSON."""
    if isinstance(value, str):
        return value
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
    call, and the commonest leaf types without `to_text`.
    """
    if depth > MAX_DEPTH:
        raise ParseError(f"'{prefix}' is nested deeper than {MAX_DEPTH} levels", code="too_deep")
    if not isinstance(value, dict):
        if prefix:
            out[prefix] = to_text(value)
        return
    if not value and prefix:
        out[prefix] = "{}"
    leaf_depth = depth < MAX_DEPTH
    for key, item in value.items():
        if len(out) >= MAX_ATTRIBUTE_KEYS:
            raise ParseError(
                f"more than {MAX_ATTRIBUTE_KEYS} attributes in one record", code="too_many_fields"
            )
        if type(key) is not str:
            key = str(key)
        name = f"{prefix}.{key}" if prefix else key
        kind = type(item)
        if kind is dict or not name or not leaf_depth:
            flatten(item, name, out, depth + 1)
        elif kind is str:
            out[name] = item
        elif kind is int:  # what orjson writes for an int (a bool is not `int` here)
            out[name] = str(item)
        else:
            out[name] = to_text(item)


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
                if isinstance(value, list | str):
                    row["tags"] = str_list(value)
                    continue
            elif isinstance(value, str):
                row[column] = value
                continue
            elif isinstance(value, int | float):
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
            if isinstance(value, list | str):
                row["tags"] = str_list(value)
        elif isinstance(value, str):
            row[column] = value
        elif isinstance(value, int | float):
            row[column] = to_text(value)


def es_bulk_parse(body: bytes, ctx: ParseContext) -> Parsed:
    default_index = index_of_path(ctx.path)
    lines = [line for line in body.split(b"\n") if line.strip()]
    if not lines:
        raise ParseError("request body is required", code="empty_body")
    rows: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    items: list[BulkItem] = []
    actions: dict[bytes, tuple[str, dict[str, Any]]] = {}  # shippers repeat one action line
    n = 0
    while n < len(lines):
        line = bytes(lines[n])  # the line itself when the body is bytes; a hashable copy of a buffer's
        known = actions.get(line)
        if known is None:
            known = actions[line] = _es_action(line, n)
        op, meta = known
        index = meta.get("_index", default_index)
        if not isinstance(index, str) or not index:
            raise ParseError(
                f"Validation Failed: 1: index is missing for action [{n + 1}];", code="invalid_action"
            )
        raw_id = meta.get("_id")
        doc_id = None if raw_id is None else to_text(raw_id)
        if op == "delete":
            n += 1
            _refuse(
                items,
                rejected,
                BulkItem(op, index, doc_id, 400, "illegal_argument_exception", "delete is not supported"),
            )
            continue
        if n + 1 >= len(lines):
            raise ParseError(
                f"the bulk request's last action [{op}] has no document line", code="invalid_action"
            )
        source, n = lines[n + 1], n + 2
        if op == "update":
            _refuse(
                items,
                rejected,
                BulkItem(op, index, doc_id, 400, "illegal_argument_exception", "update is not supported"),
            )
            continue
        row = _es_row(source, index, doc_id, ctx)
        if isinstance(row, str):
            _refuse(items, rejected, BulkItem(op, index, doc_id, 400, "document_parsing_exception", row))
            continue
        rows.append(row)
        items.append(BulkItem(op, index, doc_id, 201))
    return Parsed(rows=rows, rejected=rejected, answer=items)


def _refuse(items: list[BulkItem], rejected: list[Rejection], item: BulkItem) -> None:
    rejected.append(Rejection(len(items), item.error or item.error_type))
    items.append(item)


def _es_action(line: bytes, n: int) -> tuple[str, dict[str, Any]]:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"Malformed action/metadata line [{n + 1}]: {exc}", code="invalid_action") from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise ParseError(
            f"Malformed action/metadata line [{n + 1}], expected an object with one action",
            code="invalid_action",
        )
    ((op, meta),) = doc.items()
    if op not in SUPPORTED and op not in UNSUPPORTED:
        raise ParseError(
            f"Malformed action/metadata line [{n + 1}], expected one of [create, delete, index, update]"
            f" but found [{op}]",
            code="invalid_action",
        )
    if not isinstance(meta, dict):
        raise ParseError(
            f"Malformed action/metadata line [{n + 1}], the [{op}] value must be an object",
            code="invalid_action",
        )
    return op, meta


def _es_row(source: bytes, index: str, doc_id: str | None, ctx: ParseContext) -> dict[str, Any] | str:
    """The document's row, or why it is refused."""
    try:
        doc = orjson.loads(source)
    except orjson.JSONDecodeError as exc:
        return f"failed to parse the document: {exc}"
    if not isinstance(doc, dict):
        return "the document must be a JSON object"
    stamp = doc.pop("@timestamp", None)
    ns = time_or_received(stamp, ctx)
    if ns is None:
        return f"failed to parse field [@timestamp] of type [date]: {to_text(stamp)[:100]}"
    fields: dict[str, str] = {}
    message = ""
    for key in _MESSAGE_KEYS:
        if isinstance(doc.get(key), str):
            message = doc.pop(key)
            break
    try:
        flatten(doc, "", fields)
    except ParseError as exc:  # too deep, too many fields: this document alone
        return exc.message
    except RecursionError:
        return f"the document is nested deeper than {MAX_DEPTH} levels"
    level_text = None
    for key in _LEVEL_KEYS:
        if key in fields:
            level_text = fields.pop(key)
            break
    level, number, severity_text = level_fields(level_text)
    row: dict[str, Any] = {
        "timestamp": ns,
        "message": message,
        "level": level,
        "severity_number": number,
        "severity_text": severity_text,
        "dataset": index,
    }
    for column, keys in _COLUMN_KEYS:
        for key in keys:
            if fields.get(key):
                row[column] = fields.pop(key)
                break
    if doc_id is not None:
        fields["_id"] = doc_id
    row["attributes"] = fields
    return row


def build_rows(
    entries: list[Any],
    ctx: ParseContext,
    *,
    implicit_level: str | None = None,
    severity_texts: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Validate every entry (after defaults) and map them to rows; any issue refuses them all.

    `implicit_level` is the level of a format whose lines may carry none (text, OBL), used
    after the `level` query default. `severity_texts` are the levels as written, where the
    format had them in another spelling (`WARNING`, a syslog severity name).
    """
    n = len(entries)
    if n < MIN_LOGS:
        fail(
            "No logs in the request: at least 1 log is required",
            [_issue([], "Array must contain at least 1 element(s)")],
        )
    if n > MAX_LOGS:
        fail(
            f"Too many logs: the limit is {MAX_LOGS} per request",
            [_issue([], f"Array must contain at most {MAX_LOGS} element(s)")],
        )
    defaults = {key: value for key in QUERY_DEFAULTS if (value := ctx.query.get(key))}
    if implicit_level is not None:
        defaults.setdefault("level", implicit_level)
    issues: list[Issue] = []
    rows: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        try:
            row = _timberlogs_row(i, entry, defaults, ctx.received_at_ns, issues)
        except ParseError as exc:  # flattening past its bounds (nesting, field count)
            issues.append(_issue([i], exc.message))
            row = None
        if row is not None:
            if severity_texts is not None:
                row["severity_text"] = severity_texts[i]
            rows.append(row)
        if len(issues) >= MAX_ISSUES:
            del issues[MAX_ISSUES:]
            break
    if issues:
        first = issues[0]
        where = ".".join(str(p) for p in first["path"][1:]) or "log"
        more = f" (and {len(issues) - 1} more issue(s))" if len(issues) > 1 else ""
        fail(f"Invalid log at index {first['path'][0]}: {where}: {first['message']}{more}", issues)
    return rows


def _timberlogs_row(
    i: int, entry: Any, defaults: dict[str, str], received_at_ns: int, issues: list[Issue]
) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        issues.append(_issue([i], f"Expected object, received {_kind(entry)}"))
        return None
    before = len(issues)
    get = entry.get

    def fill(key: str) -> Any:
        value = get(key)
        return defaults.get(key) if value is None else value

    level = _enum(i, "level", fill("level"), LEVEL_VALUES, issues)
    message = _string(i, "message", get("message"), MAX_MESSAGE, issues, required=True)
    source = _string(i, "source", fill("source"), MAX_SOURCE, issues, required=True)
    environment = _enum(i, "environment", fill("environment"), ENVIRONMENTS, issues)
    dataset = _string(i, "dataset", fill("dataset"), None, issues)
    version = _string(i, "version", get("version"), None, issues)
    columns: dict[str, Any] = {}
    for key, column in _OPTIONAL_STRINGS:
        value = _string(i, key, get(key), None, issues)
        if value is not None:
            columns[column] = value
    data = get("data")
    if data is not None and not isinstance(data, dict):
        issues.append(_issue([i, "data"], f"Expected object, received {_kind(data)}"))
    tags = _tags(i, get("tags"), issues)
    ts = _timestamp(i, get("timestamp"), issues)
    step = _step(i, get("stepIndex"), issues)
    if len(issues) > before or level is None or message is None or source is None or environment is None:
        return None

    attributes: dict[str, str] = {}
    if version is not None:
        attributes["version"] = version
    if step is not None:
        attributes["stepIndex"] = str(step)
    for key, value in entry.items():
        if key not in _KNOWN:
            put_attribute(attributes, key, value)
    if data:
        if attributes:
            flat: dict[str, str] = {}
            flatten(data, "", flat)
            for key, value in flat.items():
                attributes[f"data.{key}" if key in attributes else key] = value
        else:
            flatten(data, "", attributes)
    row: dict[str, Any] = {
        "timestamp": received_at_ns if ts is None else ts,
        "level": level,
        "severity_text": level,
        "severity_number": LEVELS[level],
        "message": message,
        "service": source,
        "environment": environment,
        "dataset": "default" if dataset is None else dataset,
        **columns,
        "attributes": attributes,
    }
    if tags:
        row["tags"] = tags
    return row


def timberlogs_parse(body: bytes, ctx: ParseContext) -> Parsed:
    """The Timberlogs parser with the row builder above (the format modules did not change)."""
    with mock.patch.object(formats.timberlogs, "build_rows", build_rows):
        return formats.timberlogs.parse(body, ctx)
