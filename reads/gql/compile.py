"""GQL AST -> one parameterized ClickHouse statement.

Identifiers in the SQL come only from the fixed tables below; everything the user
wrote (values, property names, the project) travels as a `{pN:Type}` parameter, so
no input can change the statement's shape. A field that is not a known column is a
property: `attributes[{pN:String}]` on logs, `properties[{pN:String}]` on events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from reads.gql.ast import (
    Aggregate,
    And,
    Bin,
    Compare,
    Expr,
    Having,
    Limit,
    Not,
    Or,
    Query,
    Sort,
    Text,
    Top,
)
from reads.gql.lexer import GQLError
from reads.gql.parser import AGGREGATE_NAMES, parse, parse_time
from schemas.record import (
    ALERT_EVENT_COLUMN_NAMES,
    ALERT_EVENTS_TABLE,
    EVENT_COLUMN_NAMES,
    EVENTS_TABLE,
    LEVELS,
    LOG_COLUMN_NAMES,
    LOGS_TABLE,
    MAP_COLUMN,
    level_of,
)

SEARCH_LIMIT = 100  # rows when the query says nothing
SEARCH_MAX = 1000
GROUPS_LIMIT = 1000  # groups when the query says nothing
GROUPS_MAX = 10_000

# What a search returns, in order: every column but the stored severity number and the Kafka
# bookkeeping. Timestamps are selected as integer nanoseconds and rendered by the caller, so
# output does not depend on the driver's timezone.
_NOT_SHOWN = frozenset({"severity_number", "kafka_topic", "kafka_partition", "kafka_offset"})
LOG_OUTPUT = tuple(c for c in LOG_COLUMN_NAMES if c not in _NOT_SHOWN)
EVENT_OUTPUT = tuple(c for c in EVENT_COLUMN_NAMES if c not in _NOT_SHOWN)
TIME_COLUMNS = frozenset({"timestamp", "observed_timestamp"})
# The timeline of alert transitions (migration 005), read like the other sources. Its rows
# are replaced by event id (a transition written twice is one row), hence FINAL. The tenant
# and the transition number are not shown.
ALERT_EVENT_OUTPUT = tuple(c for c in ALERT_EVENT_COLUMN_NAMES if c not in ("project", "seq"))
SOURCES = {LOGS_TABLE: LOG_OUTPUT, EVENTS_TABLE: EVENT_OUTPUT, ALERT_EVENTS_TABLE: ALERT_EVENT_OUTPUT}
_FROM = {ALERT_EVENTS_TABLE: f"{ALERT_EVENTS_TABLE} FINAL"}

Kind = Literal["string", "text", "level", "time", "array", "number"]


@dataclass(frozen=True, slots=True)
class Column:
    sql: str
    kind: Kind


_COMMON: dict[str, Column] = {
    "timestamp": Column("timestamp", "time"),
    "observed_timestamp": Column("observed_timestamp", "time"),
    "ua_browser": Column("ua_browser", "string"),
    "ua_os": Column("ua_os", "string"),
    "ua_device": Column("ua_device", "string"),
    "client_ip": Column("client_ip", "string"),
    "dialect": Column("dialect", "string"),
    "ingest_id": Column("ingest_id", "string"),
    # GoodLogs' server-injected fields: the columns hold them for every dialect.
    "$browser": Column("ua_browser", "string"),
    "$os": Column("ua_os", "string"),
    "$device": Column("ua_device", "string"),
    "$ip": Column("client_ip", "string"),
}

# Column names and the property names GoodLogs and the other dialects copy into them
# (formats/common.WELL_KNOWN_COLUMNS), matched case-insensitively.
_LOG_FIELDS: dict[str, Column] = {
    **_COMMON,
    "severity": Column("level", "level"),
    "level": Column("level", "level"),
    "severity_text": Column("severity_text", "string"),
    "message": Column("message", "text"),
    "body": Column("message", "text"),
    "service": Column("service", "string"),
    "environment": Column("environment", "string"),
    "env": Column("environment", "string"),
    "host": Column("host", "string"),
    "hostname": Column("host", "string"),
    "dataset": Column("dataset", "string"),
    "trace_id": Column("trace_id", "string"),
    "traceid": Column("trace_id", "string"),
    "span_id": Column("span_id", "string"),
    "spanid": Column("span_id", "string"),
    "request_id": Column("request_id", "string"),
    "requestid": Column("request_id", "string"),
    "session_id": Column("session_id", "string"),
    "sessionid": Column("session_id", "string"),
    "user_id": Column("user_id", "string"),
    "userid": Column("user_id", "string"),
    "flow_id": Column("flow_id", "string"),
    "flowid": Column("flow_id", "string"),
    "error_name": Column("error_name", "string"),
    "errorname": Column("error_name", "string"),
    "error_stack": Column("error_stack", "text"),
    "errorstack": Column("error_stack", "text"),
    "tags": Column("tags", "array"),
    "entity_name": Column("entity_name", "string"),
    "entity_kind": Column("entity_kind", "string"),
    "entity_tags": Column("entity_tags", "array"),
}
_EVENT_FIELDS: dict[str, Column] = {
    **_COMMON,
    "event": Column("event", "string"),
    "event_name": Column("event", "string"),
    "name": Column("event", "string"),
    "distinct_id": Column("distinct_id", "string"),
    "distinctid": Column("distinct_id", "string"),
    "$distinct_id": Column("distinct_id", "string"),
}
_ALERT_EVENT_FIELDS: dict[str, Column] = {
    "timestamp": Column("timestamp", "time"),
    "event_id": Column("event_id", "string"),
    "id": Column("event_id", "string"),
    "rule": Column("rule_id", "string"),
    "rule_id": Column("rule_id", "string"),
    "rule_name": Column("rule_name", "string"),
    "name": Column("rule_name", "string"),
    "group": Column("group_key", "string"),
    "group_key": Column("group_key", "string"),
    "state": Column("state", "string"),
    "previous_state": Column("previous_state", "string"),
    "value": Column("value", "number"),
    "op": Column("op", "string"),
    "threshold": Column("threshold", "number"),
}
FIELDS = {LOGS_TABLE: _LOG_FIELDS, EVENTS_TABLE: _EVENT_FIELDS, ALERT_EVENTS_TABLE: _ALERT_EVENT_FIELDS}

_SQL_OPS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    params: dict[str, Any]
    mode: Literal["search", "aggregate"]
    table: str
    columns: tuple[str, ...]  # search: LOG_OUTPUT/EVENT_OUTPUT; aggregate: the group fields as written
    bins: tuple[int, ...] = ()  # aggregate: indexes of `columns` holding a bucket's start in ms


@dataclass(slots=True)
class _Params:
    values: dict[str, Any] = field(default_factory=dict)

    def add(self, value: Any, type_: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{type_}}}"


def resolve(table: str, name: str, params: _Params, pos: int = 0) -> Column:
    """A known column, or the property of that exact name (the key bound as a parameter)."""
    column = FIELDS[table].get(name.lower())
    if column is not None:
        return column
    if table not in MAP_COLUMN:  # alert events have no free-form properties
        known = ", ".join(sorted(FIELDS[table]))
        raise GQLError(f"{table} has no field '{name}'; its fields are {known}", pos, 422)
    return Column(f"{MAP_COLUMN[table]}[{params.add(name, 'String')}]", "string")


def compile_query(query: Query, project: str, now_ns: int) -> Compiled:
    table = _source(query)
    params = _Params()
    where = [f"project = {params.add(project, 'String')}"]
    if query.window is not None:
        window = query.window
        since = now_ns - window.last_s * 1_000_000_000 if window.last_s is not None else window.since_ns
        if since is not None:
            where.append(f"timestamp >= fromUnixTimestamp64Nano({params.add(since, 'Int64')}, 'UTC')")
        if window.until_ns is not None:
            where.append(
                f"timestamp < fromUnixTimestamp64Nano({params.add(window.until_ns, 'Int64')}, 'UTC')"
            )
    where += [_expr(table, f, params) for f in query.filters]
    where_sql = " AND ".join(where)
    if query.aggregate is None:
        return _search(query, table, where_sql, params)
    return _aggregate(query, query.aggregate, table, where_sql, params)


def _source(query: Query) -> str:
    if query.source in SOURCES:
        return query.source
    raise GQLError(
        f"unknown source '{query.source}': use from:logs, from:events or from:alert_events",
        query.source_pos,
        422,
    )


def _search(query: Query, table: str, where_sql: str, params: _Params) -> Compiled:
    order: list[str] = []
    limit = SEARCH_LIMIT
    for stage in query.pipeline:
        if isinstance(stage, Top):
            raise GQLError(
                "'top N' ranks the groups of an aggregate (count by <field> | top 10); to cap rows"
                " use 'limit N'",
                stage.pos,
                422,
            )
        if isinstance(stage, Limit):
            if stage.n > SEARCH_MAX:
                raise GQLError(f"a search returns at most {SEARCH_MAX} rows", stage.pos, 422)
            limit = stage.n
        elif isinstance(stage, Sort):
            order += _sort_keys(resolve(table, stage.field.name, params, stage.field.pos), stage)
    order.append("timestamp DESC")  # newest first, and the tie-breaker of any sort
    output = SOURCES[table]
    # Aliases must not shadow columns: ClickHouse resolves WHERE names against aliases first.
    columns = ", ".join(f"toUnixTimestamp64Nano({c}) AS {c}_ns" if c in TIME_COLUMNS else c for c in output)
    sql = (
        f"SELECT {columns} FROM {_FROM.get(table, table)} WHERE {where_sql} "
        f"ORDER BY {', '.join(order)} LIMIT {params.add(limit, 'UInt32')}"
    )
    return Compiled(sql, params.values, "search", table, output)


def _sort_keys(column: Column, stage: Sort) -> list[str]:
    direction = "DESC" if stage.descending else "ASC"
    if column.kind == "level":
        return [f"severity_number {direction}"]
    if column.kind in ("time", "array", "number"):
        return [f"{column.sql} {direction}"]
    # Properties hold text; numbers among them sort as numbers, first.
    return [f"toFloat64OrNull({column.sql}) {direction} NULLS LAST", f"{column.sql} {direction}"]


def _aggregate(query: Query, agg: Aggregate, table: str, where_sql: str, params: _Params) -> Compiled:
    groups: list[str] = []
    bins: list[int] = []
    for i, group in enumerate(agg.group_by):
        if isinstance(group, Bin):
            groups.append(f"{_bin(table, group, params)} AS g{i}")
            bins.append(i)
            continue
        column = resolve(table, group.name, params, group.pos)
        if column.kind == "time":
            raise GQLError(
                f"cannot group by the time field '{group.name}': bucket it, e.g. bin({group.name}, 1m)",
                group.pos,
                422,
            )
        expr = f"arrayJoin({column.sql})" if column.kind == "array" else column.sql
        groups.append(f"{expr} AS g{i}")
    if agg.target is None:
        value = "count()"
    else:
        target = resolve(table, agg.target.name, params, agg.target.pos)
        if target.kind == "time":
            raise GQLError(f"cannot count distinct values of '{agg.target.name}'", agg.target.pos, 422)
        # An absent property (or an empty id) is not a distinct value: it counts no user.
        value = (
            f"uniqExact({target.sql})"
            if target.kind in ("array", "number")
            else f"uniqExactIf({target.sql}, {target.sql} != '')"
        )
    having = [_having(s.expr, params) for s in query.pipeline if isinstance(s, Having)]
    caps = [s.n for s in query.pipeline if isinstance(s, Top | Limit)]
    limit = min(caps) if caps else GROUPS_LIMIT
    order = []
    for stage in query.pipeline:
        if isinstance(stage, Top):
            order.append("value DESC")
        elif isinstance(stage, Sort):
            order.append(_group_sort(agg, stage))
    if bins and not order:
        order.append(f"g{bins[0]} ASC")  # a time series reads oldest first, as a chart draws it
    order += ["value DESC", *(f"g{i} ASC" for i in range(len(groups)))]
    inner = (
        f"SELECT {', '.join([*groups, f'{value} AS value'])} FROM {_FROM.get(table, table)} WHERE {where_sql}"
    )
    if groups:
        inner += f" GROUP BY {', '.join(f'g{i}' for i in range(len(groups)))}"
    if having:
        inner += f" HAVING {' AND '.join(having)}"
    outer = [*(f"g{i}" for i in range(len(groups))), "value", "count() OVER () AS total_groups"]
    sql = (
        f"SELECT {', '.join(outer)} FROM ({inner}) "
        f"ORDER BY {', '.join(dict.fromkeys(order))} LIMIT {params.add(limit, 'UInt32')}"
    )
    return Compiled(sql, params.values, "aggregate", table, tuple(g.name for g in agg.group_by), tuple(bins))


def _bin(table: str, group: Bin, params: _Params) -> str:
    """The bucket's start in ms since the epoch: whole multiples of the width, in UTC."""
    column = FIELDS[table].get(group.field.name.lower())
    if column is None or column.kind != "time":
        raise GQLError(
            f"bin() buckets a time field (timestamp or observed_timestamp), not '{group.field.name}'",
            group.field.pos,
            422,
        )
    width = params.add(group.seconds * 1000, "Int64")
    return f"intDiv(toUnixTimestamp64Milli({column.sql}), {width}) * {width}"


def _group_sort(agg: Aggregate, stage: Sort) -> str:
    direction = "DESC" if stage.descending else "ASC"
    name = stage.field.name
    if name.lower() in AGGREGATE_NAMES:
        return f"value {direction}"
    for i, group in enumerate(agg.group_by):
        if group.name == name or group.name.lower() == name.lower():
            return f"g{i} {direction}"
    known = ", ".join(["count", *(g.name for g in agg.group_by)])
    raise GQLError(f"cannot sort by '{name}': an aggregate sorts by {known}", stage.field.pos, 422)


def _having(expr: Expr, params: _Params) -> str:
    if isinstance(expr, Not):
        return f"NOT ({_having(expr.expr, params)})"
    if isinstance(expr, And | Or):
        joiner = " AND " if isinstance(expr, And) else " OR "
        return "(" + joiner.join(_having(i, params) for i in expr.items) + ")"
    if isinstance(expr, Compare) and expr.op in _SQL_OPS and expr.values[0].number is not None:
        return f"value {_SQL_OPS[expr.op]} {params.add(expr.values[0].number, 'Float64')}"
    pos = expr.field.pos if isinstance(expr, Compare) else expr.value.pos
    raise GQLError("compare the aggregate's value with a number, e.g. where count > 10", pos, 422)


# -- row filters ---------------------------------------------------------------------------


def _expr(table: str, expr: Expr, params: _Params) -> str:
    if isinstance(expr, Not):
        return f"NOT ({_expr(table, expr.expr, params)})"
    if isinstance(expr, And | Or):
        joiner = " AND " if isinstance(expr, And) else " OR "
        return "(" + joiner.join(_expr(table, i, params) for i in expr.items) + ")"
    if isinstance(expr, Text):
        return _text(table, expr.value.text, params)
    return _compare(table, expr, params)


def _text(table: str, text: str, params: _Params) -> str:
    p = params.add(text, "String")
    if table == LOGS_TABLE:
        return f"positionCaseInsensitiveUTF8(message, {p}) > 0"
    if table == ALERT_EVENTS_TABLE:
        return (
            f"(positionCaseInsensitiveUTF8(rule_name, {p}) > 0"
            f" OR positionCaseInsensitiveUTF8(group_key, {p}) > 0)"
        )
    return (
        f"(positionCaseInsensitiveUTF8(event, {p}) > 0"
        f" OR arrayExists(v -> positionCaseInsensitiveUTF8(v, {p}) > 0, mapValues(properties)))"
    )


def _compare(table: str, cmp: Compare, params: _Params) -> str:
    name = cmp.field.name
    column = FIELDS[table].get(name.lower())
    if cmp.op == "exists":
        if column is None:
            resolve(table, name, params, cmp.field.pos)  # refuses a field the table cannot have
            return f"mapContains({MAP_COLUMN[table]}, {params.add(name, 'String')})"
        if column.kind == "array":
            return f"notEmpty({column.sql})"
        return "1" if column.kind in ("time", "level", "number") else f"{column.sql} != ''"
    column = column or resolve(table, name, params, cmp.field.pos)
    if column.kind == "number":
        return _number(column, cmp, params)
    if column.kind == "level":
        return _level(column, cmp, params)
    if column.kind == "time":
        return _time(column, cmp, params)
    if column.kind == "array":
        return _array(column, cmp, params)
    return _string(column, cmp, params)


def _level(column: Column, cmp: Compare, params: _Params) -> str:
    levels = []
    for value in cmp.values:
        level = None if value.wildcard else level_of(value.text)
        if level is None:
            raise GQLError(
                f"unknown severity {value.text!r}: use one of {', '.join(LEVELS)}", value.pos, status=422
            )
        levels.append(level)
    if cmp.op == "in":
        return f"{column.sql} IN {params.add(levels, 'Array(String)')}"
    if cmp.op in ("eq", "ne"):
        return f"{column.sql} {_SQL_OPS[cmp.op]} {params.add(levels[0], 'String')}"
    # Ordered by severity: `severity >= warn` is warn, error and fatal.
    rank = LEVELS[levels[0]]
    chosen = [
        name
        for name, r in LEVELS.items()
        if (r > rank and cmp.op in ("gt", "gte"))
        or (r < rank and cmp.op in ("lt", "lte"))
        or (r == rank and cmp.op in ("gte", "lte"))
    ]
    return f"{column.sql} IN {params.add(chosen, 'Array(String)')}"


def _time(column: Column, cmp: Compare, params: _Params) -> str:
    if cmp.op == "in":
        raise GQLError(f"'{cmp.field.name}' takes a comparison, not a list", cmp.field.pos, 422)
    value = cmp.values[0]
    try:
        ns = parse_time(value.text, value.pos)
    except GQLError as exc:
        raise GQLError(exc.reason, exc.position, 422) from None
    return f"{column.sql} {_SQL_OPS[cmp.op]} fromUnixTimestamp64Nano({params.add(ns, 'Int64')}, 'UTC')"


def _number(column: Column, cmp: Compare, params: _Params) -> str:
    numbers = [v.number for v in cmp.values]
    for value, number in zip(cmp.values, numbers, strict=True):
        if number is None:
            raise GQLError(f"'{cmp.field.name}' is a number; {value.text!r} is not", value.pos, 422)
    if cmp.op == "in":
        return f"{column.sql} IN {params.add(numbers, 'Array(Float64)')}"
    return f"{column.sql} {_SQL_OPS[cmp.op]} {params.add(numbers[0], 'Float64')}"


def _array(column: Column, cmp: Compare, params: _Params) -> str:
    if cmp.op == "in":
        return f"hasAny({column.sql}, {params.add([v.text for v in cmp.values], 'Array(String)')})"
    if cmp.op in ("eq", "ne"):
        found = f"has({column.sql}, {params.add(cmp.values[0].text, 'String')})"
        return found if cmp.op == "eq" else f"NOT {found}"
    raise GQLError(f"'{cmp.field.name}' is a list: use {cmp.field.name}:value", cmp.field.pos, 422)


def _string(column: Column, cmp: Compare, params: _Params) -> str:
    if cmp.op == "in":
        return f"{column.sql} IN {params.add([v.text for v in cmp.values], 'Array(String)')}"
    value = cmp.values[0]
    if cmp.op in ("eq", "ne"):
        if value.wildcard:
            like = f"{column.sql} ILIKE {params.add(_like_pattern(value.text), 'String')}"
            return like if cmp.op == "eq" else f"NOT ({like})"
        if column.kind == "text":
            # Messages and stacks are prose: `message:timeout` finds the word in them.
            found = f"positionCaseInsensitiveUTF8({column.sql}, {params.add(value.text, 'String')}) > 0"
            return found if cmp.op == "eq" else f"NOT ({found})"
        return f"{column.sql} {_SQL_OPS[cmp.op]} {params.add(value.text, 'String')}"
    number = value.number
    if number is not None:
        # Property values are stored as text; a number compares as a number.
        return f"toFloat64OrNull({column.sql}) {_SQL_OPS[cmp.op]} {params.add(number, 'Float64')}"
    return f"{column.sql} {_SQL_OPS[cmp.op]} {params.add(value.text, 'String')}"


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def compile_text(text: str, project: str, now_ns: int) -> tuple[Query, Compiled]:
    """Parse and compile in one step (what the endpoints do)."""
    query = parse(text)
    return query, compile_query(query, project, now_ns)
