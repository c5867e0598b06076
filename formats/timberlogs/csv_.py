"""Timberlogs CSV: a header row of schema field names, then one log per row.

- delimiter: tab when the header line has more tabs than commas, else comma.
- quoting as RFC 4180 (`"a, b"`, `""` for a quote, newlines inside quotes).
- header names match the schema fields case-insensitively (`userid` -> `userId`); a column
  the schema does not know is kept as an attribute under its header name, as in JSON.
- cells are text; an empty cell is an absent field (so query defaults fill it). Typed fields
  are converted: `timestamp` and `stepIndex` from digits (`1705312200000` ms), `data` from a
  JSON object, `tags` from a JSON array or else a comma-separated list. A cell that does not
  convert is passed on as text, and the schema check names it.
- a row whose field count differs from the header's, or a duplicate/empty header name,
  refuses the request ("Failed to parse line 3: expected 4 fields, found 3").
"""

from __future__ import annotations

import csv
import io
from typing import Any, Final

import orjson

from formats.base import ParseContext
from formats.timberlogs.schema import FIELDS, MAX_LOGS, decode, fail, number

_CANONICAL: Final = {name.lower(): name for name in FIELDS}


def entries(body: bytes, ctx: ParseContext) -> list[Any]:
    text = decode(body)
    first_line = text.lstrip("\r\n").partition("\n")[0]
    delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    out: list[Any] = []
    names: list[str] | None = None
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # blank line
            if names is None:
                names = _header(cells)
                continue
            if len(cells) != len(names):
                found = len(cells)
                fail(f"Failed to parse line {reader.line_num}: expected {len(names)} fields, found {found}")
            out.append(
                {name: _cell(name, cell) for name, cell in zip(names, cells, strict=True) if cell != ""}
            )
            if len(out) > MAX_LOGS:
                break
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        fail(f"Failed to parse line {reader.line_num}: {exc}")
    return out


def _header(cells: list[str]) -> list[str]:
    names: list[str] = []
    for position, cell in enumerate(cells, 1):
        name = cell.strip()
        if not name:
            fail(f"Failed to parse CSV header: column {position} has no name")
        name = _CANONICAL.get(name.lower(), name)
        if name in names:
            fail(f"Failed to parse CSV header: column '{name}' appears twice")
        names.append(name)
    return names


def _cell(name: str, cell: str) -> Any:
    if name == "timestamp" or name == "stepIndex":
        value = number(cell.strip())
        return cell if value is None else value
    if name == "data" and cell.lstrip().startswith("{"):
        try:
            return orjson.loads(cell)
        except orjson.JSONDecodeError:
            return cell
    if name == "tags":
        if cell.lstrip().startswith("["):
            try:
                return orjson.loads(cell)
            except orjson.JSONDecodeError:
                return cell
        return [tag.strip() for tag in cell.split(",") if tag.strip()]
    return cell
