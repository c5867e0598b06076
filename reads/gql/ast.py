"""The parsed form of a GQL query: what to read, which rows, and what to do with them.

Every node keeps the position it came from, so the compiler can point at the part of
the query it cannot run. `to_dict()` is the `query` echoed in every answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "exists"]


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # as written: `severity`, `orderId`, `$browser`
    pos: int


@dataclass(frozen=True, slots=True)
class Value:
    text: str
    pos: int
    quoted: bool = False

    @property
    def wildcard(self) -> bool:
        return not self.quoted and "*" in self.text

    @property
    def number(self) -> float | None:
        if self.quoted:
            return None
        try:
            number = float(self.text)
        except ValueError:
            return None
        return number if number == number and abs(number) != float("inf") else None

    def to_json(self) -> Any:
        number = self.number
        if number is not None:
            # An int only where JSON carries it exactly (orjson refuses ints past 64 bits: 1e308).
            whole = number.is_integer() and "." not in self.text and abs(number) < 2**63
            return int(number) if whole else number
        return self.text


@dataclass(frozen=True, slots=True)
class Compare:
    field: Field
    op: Op
    values: tuple[Value, ...]  # one value; several for `in`; none for `exists`

    def to_dict(self) -> dict[str, Any]:
        value: Any = [v.to_json() for v in self.values] if self.op == "in" else None
        if self.op not in ("in", "exists"):
            value = self.values[0].to_json()
        return {"field": self.field.name, "op": self.op, "value": value}


@dataclass(frozen=True, slots=True)
class Text:
    """A full-text term: case-insensitive substring of the message (logs) or the event (events)."""

    value: Value

    def to_dict(self) -> dict[str, Any]:
        return {"field": "_text", "op": "contains", "value": self.value.text}


@dataclass(frozen=True, slots=True)
class Not:
    expr: Expr
    pos: int

    def to_dict(self) -> dict[str, Any]:
        return {"op": "not", "filter": self.expr.to_dict()}


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"op": "and", "filters": [i.to_dict() for i in self.items]}


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"op": "or", "filters": [i.to_dict() for i in self.items]}


Expr = Compare | Text | Not | And | Or


@dataclass(frozen=True, slots=True)
class Window:
    """The time range: `last` seconds before now, or explicit bounds (ns; `until` exclusive)."""

    last_s: int | None = None
    last_text: str = ""
    since_ns: int | None = None
    until_ns: int | None = None
    pos: int = 0

    def to_dict(self) -> dict[str, Any]:
        if self.last_s is not None:
            return {"last": self.last_text}
        return {"since_ns": self.since_ns, "until_ns": self.until_ns}


@dataclass(frozen=True, slots=True)
class Bin:
    """A time bucket to group by: `bin(timestamp, 1m)` is each row's time rounded down to the minute."""

    field: Field
    seconds: int
    text: str  # the width as written, lower-cased: `1m`
    pos: int

    @property
    def name(self) -> str:
        """The result's key: the time field's name, holding each bucket's start."""
        return self.field.name

    def label(self) -> str:
        return f"bin({self.field.name}, {self.text})"


Group = Field | Bin


@dataclass(frozen=True, slots=True)
class Aggregate:
    func: Literal["count", "count_distinct"]
    target: Field | None
    group_by: tuple[Group, ...]
    pos: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "aggregate", "func": self.func}
        if self.target is not None:
            out["field"] = self.target.name
        out["group_by"] = [g.label() if isinstance(g, Bin) else g.name for g in self.group_by]
        return out


@dataclass(frozen=True, slots=True)
class Top:
    n: int
    pos: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": "top", "n": self.n}


@dataclass(frozen=True, slots=True)
class Sort:
    field: Field
    descending: bool
    pos: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": "sort", "field": self.field.name, "order": "desc" if self.descending else "asc"}


@dataclass(frozen=True, slots=True)
class Limit:
    n: int
    pos: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": "limit", "n": self.n}


@dataclass(frozen=True, slots=True)
class Having:
    """A `where` on the aggregate's value (`count by service | where count > 10`)."""

    expr: Expr
    pos: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": "where", "filter": self.expr.to_dict()}


Stage = Aggregate | Top | Sort | Limit | Having


@dataclass(frozen=True, slots=True)
class Query:
    source: str = "logs"
    source_pos: int = 0
    filters: tuple[Expr, ...] = ()  # all ANDed
    window: Window | None = None
    pipeline: tuple[Stage, ...] = field(default=())

    @property
    def aggregate(self) -> Aggregate | None:
        return next((s for s in self.pipeline if isinstance(s, Aggregate)), None)

    @property
    def mode(self) -> Literal["search", "aggregate"]:
        return "aggregate" if self.aggregate is not None else "search"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "mode": self.mode,
            "filters": [f.to_dict() for f in self.filters],
            "pipeline": [s.to_dict() for s in self.pipeline],
        }
        if self.window is not None:
            out["time_range"] = self.window.to_dict()
        return out
