"""The read core: typed queries and GQL compiled to parameterized ClickHouse SQL, and run.

Every read path goes through here: the gateway's `GET /api/v1/logs` and the GoodLogs
endpoints (`/v1/gql*`, `/v1/schema`, `/v1/info`), directly with a ClickHouse server or
via the worker's internal read port in embedded mode. `GET /api/v1/logs` is a GQL query
built from its parameters, so both share one compiler (`reads.gql`) and one projection.
User input only ever reaches ClickHouse as a bound parameter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from millrace import store
from reads.alerts import RuleError, compile_alert, samples
from reads.gql import GQLError, compile_query, compile_text
from reads.gql.ast import Compare, Expr, Field, Limit, Query, Text, Value, Window
from reads.gql.compile import TIME_COLUMNS, Compiled
from reads.gql.parser import time_ns, time_range
from schemas.record import LEVELS, LOGS_TABLE

MAX_LIMIT = 1000
MAX_BATCH = 10  # queries per POST /v1/gql (the seed's "Max 10 queries")
# A runaway query costs its caller, not the engine everybody's inserts share.
_QUERY_SETTINGS = {"max_execution_time": 30}


class QueryError(ValueError):
    """The query's parameters are invalid; the message says which and why."""


@dataclass(frozen=True, slots=True)
class LogQuery:
    project: str
    since_ns: int | None = None
    until_ns: int | None = None
    levels: tuple[str, ...] = ()
    service: str | None = None
    text: str | None = None
    limit: int = 100

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogQuery:
        data = dict(data)
        data["levels"] = tuple(data.get("levels") or ())
        query = cls(**data)
        query.validate()
        return query

    def validate(self) -> None:
        if not self.project:
            raise QueryError("a query needs a project")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        unknown = [lvl for lvl in self.levels if lvl not in LEVELS]
        if unknown:
            raise QueryError(f"unknown level {unknown[0]!r}; use one of {', '.join(LEVELS)}")

    def to_gql(self) -> Query:
        """The same search as a GQL query: `level IN ... service = ... "text" | limit N`."""
        filters: list[Expr] = []
        if self.levels:
            filters.append(
                Compare(Field("level", 0), "in", tuple(Value(lvl, 0, True) for lvl in self.levels))
            )
        if self.service:
            filters.append(Compare(Field("service", 0), "eq", (Value(self.service, 0, True),)))
        if self.text:
            filters.append(Text(Value(self.text, 0, True)))
        window = None
        if self.since_ns is not None or self.until_ns is not None:
            window = Window(since_ns=self.since_ns, until_ns=self.until_ns)
        return Query(filters=tuple(filters), window=window, pipeline=(Limit(self.limit, 0),))


def parse_time(name: str, value: str) -> int:
    """ISO 8601 (zone optional, UTC assumed) to ns; the error names the parameter."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise QueryError(f"'{name}' must be an ISO 8601 time, e.g. 2024-05-31T15:30:45Z") from None
    ns = time_ns(dt)
    if ns is None:
        raise QueryError(f"'{name}' is out of range: {time_range()}")
    return ns


def compile_logs(query: LogQuery) -> tuple[str, dict[str, Any]]:
    query.validate()
    compiled = compile_query(query.to_gql(), query.project, now_ns=0)
    return compiled.sql, compiled.params


def format_ns(ns: int) -> str:
    """RFC 3339 with nanoseconds, UTC: lossless and sortable as text."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"


def _search_rows(client: Client, compiled: Compiled) -> list[dict[str, Any]]:
    result = client.query(compiled.sql, parameters=compiled.params, settings=_QUERY_SETTINGS)
    rows = []
    for values in result.result_rows:
        row = dict(zip(compiled.columns, values, strict=True))
        for c in TIME_COLUMNS.intersection(row):
            row[c] = format_ns(int(row[c]))
        rows.append(row)
    return rows


def run_logs(client: Client, query: LogQuery) -> list[dict[str, Any]]:
    query.validate()
    return _search_rows(client, compile_query(query.to_gql(), query.project, now_ns=0))


def run_compiled(client: Client, compiled: Compiled) -> dict[str, Any]:
    """The `data` of a GQL answer: rows newest first, or groups with their value and how many there are."""
    if compiled.mode == "search":
        rows = _search_rows(client, compiled)
        return {"mode": "search", "table": compiled.table, "results": rows, "count": len(rows)}
    result = client.query(compiled.sql, parameters=compiled.params, settings=_QUERY_SETTINGS)
    n = len(compiled.columns)
    results = []
    total = 0
    for values in result.result_rows:
        item = dict(zip(compiled.columns, values[:n], strict=True))
        for i in compiled.bins:
            item[compiled.columns[i]] = format_ns(int(values[i]) * 1_000_000)
        item["value"] = _number(values[n])
        total = int(values[n + 1])
        results.append(item)
    return {"mode": "aggregate", "table": compiled.table, "results": results, "total_groups": total}


def run_gql(client: Client, project: str, text: str, now_ns: int) -> dict[str, Any]:
    """`{"query": <parsed>, "data": <result>}`; a query GQL cannot run raises GQLError."""
    query, compiled = compile_text(text, project, now_ns)
    return {"query": query.to_dict(), "data": run_compiled(client, compiled)}


def run_gql_batch(client: Client, project: str, texts: list[str], now_ns: int) -> list[dict[str, Any]]:
    """One outcome per query; a bad query fails alone. Store failures raise (the whole batch fails)."""
    outcomes: list[dict[str, Any]] = []
    for text in texts:
        try:
            outcomes.append({"status": "ok", **run_gql(client, project, text, now_ns)})
        except GQLError as exc:
            outcomes.append({"status": "error", "error": exc.to_dict()})
    return outcomes


def discovered_schema(client: Client, project: str, max_keys: int = 500) -> dict[str, Any]:
    """GoodLogs' schema: property keys with type, examples and volume, event names with volume.

    Reads `schema_fields`, which materialized views keep as data arrives (migration 003).
    """
    result = client.query(
        "SELECT source, key, sum(volume) AS volume, sum(numbers), sum(booleans), "
        "groupUniqArrayMerge(10)(examples) "
        "FROM schema_fields WHERE project = {project:String} GROUP BY source, key "
        "ORDER BY source, volume DESC, key LIMIT {per_source:UInt32} BY source",
        parameters={"project": project, "per_source": max_keys},
        settings=_QUERY_SETTINGS,
    )
    out: dict[str, list[dict[str, Any]]] = {
        "log_properties": [],
        "event_properties": [],
        "event_names": [],
        "log_levels": [],
        "log_services": [],
    }
    for source, key, volume, numbers, booleans, examples in result.result_rows:
        volume = int(volume)
        if source in ("logs", "events"):
            type_ = "number" if numbers == volume else "boolean" if booleans == volume else "string"
            samples = sorted(str(e) for e in examples)
            shown: list[Any] = [_typed(e, type_) for e in samples[:5]]
            target = "log_properties" if source == "logs" else "event_properties"
            out[target].append({"key": key, "type": type_, "examples": shown, "volume": volume})
        elif source in ("event_names", "log_levels", "log_services"):
            out[source].append({"name": key, "volume": volume})
    return out


def usage(client: Client, project: str) -> dict[str, int]:
    """Logs and events stored for a project, and their uncompressed bytes (from `project_usage`)."""
    result = client.query(
        "SELECT source, sum(rows), sum(bytes) FROM project_usage WHERE project = {project:String} "
        "GROUP BY source",
        parameters={"project": project},
        settings=_QUERY_SETTINGS,
    )
    totals = {str(source): (int(rows), int(size)) for source, rows, size in result.result_rows}
    logs, events = totals.get("logs", (0, 0)), totals.get("events", (0, 0))
    return {"logs": logs[0], "events": events[0], "bytes": logs[1] + events[1]}


def _typed(example: str, type_: str) -> Any:
    if type_ == "number":
        number = float(example)
        return int(number) if number.is_integer() and "." not in example else number
    if type_ == "boolean":
        return example == "true"
    return example


def _number(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() else number


def project_stats(client: Client, project: str, since_ns: int = 0, *, lag: bool = True) -> dict[str, Any]:
    """Rows stored for a project (received since `since_ns`) and the pipeline lag
    (receive -> inserted) quantiles in ms: what operators and the benchmark watch.
    Without `lag` only the counts (the lag's quantiles read two more columns of every row);
    with `since_ns` 0 the counts read only the project column, not the receive times."""
    params = {"project": project, "since": since_ns}
    where = "project = {project:String}"
    if since_ns:
        where += " AND observed_timestamp >= fromUnixTimestamp64Nano({since:Int64}, 'UTC')"
    # No count of distinct requests: hashing every row's ingest_id took ~85% of this query's
    # CPU (140 of 166 ms at 1.9M rows), and the bench polls it while the worker is loaded.
    lags = (
        "quantile(0.5)(dateDiff('millisecond', observed_timestamp, inserted_at)), "
        "quantile(0.99)(dateDiff('millisecond', observed_timestamp, inserted_at)), "
        "max(dateDiff('millisecond', observed_timestamp, inserted_at))"
        if lag
        else "NULL, NULL, NULL"
    )
    ((logs, p50, p99, max_lag),) = client.query(
        f"SELECT count(), {lags} FROM logs WHERE {where}", parameters=params
    ).result_rows
    ((events,),) = client.query(f"SELECT count() FROM events WHERE {where}", parameters=params).result_rows
    return {
        "logs": int(logs),
        "events": int(events),
        "lag_ms": {"p50": _num(p50), "p99": _num(p99), "max": _num(max_lag)},
    }


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else round(number, 1)  # NaN when there are no rows


def alert_values(client: Client, project: str, text: str, window_s: int, now_ns: int) -> list[dict[str, Any]]:
    """An alert rule's query over its window ending at `now_ns`: one value per group, as JSON.
    The evaluator's read, compiled and run like every other query (QueryError if it cannot run)."""
    try:
        compiled = compile_alert(text, project, window_s, now_ns, window_given=False)
    except RuleError as exc:
        raise QueryError(exc.message) from None
    return [
        {"group_key": s.group_key, "value": s.value, "labels": s.labels}
        for s in samples(run_compiled(client, compiled))
    ]


def read_call(client: Client, op: str, payload: dict[str, Any]) -> Any:
    """The GoodLogs reads by name, with JSON-able arguments and results: what the gateway's
    direct reader calls and what the worker's internal port serves in embedded mode."""
    project = payload["project"]
    if not isinstance(project, str) or not project:
        raise QueryError("a read needs a project")
    if op == "gql":
        queries = payload["queries"]
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise QueryError("'queries' must be a list of strings")
        return run_gql_batch(client, project, queries, int(payload["now_ns"]))
    if op == "alert_values":
        return alert_values(
            client, project, payload["query"], int(payload["window_s"]), int(payload["now_ns"])
        )
    if op == "schema":
        return discovered_schema(client, project)
    if op == "usage":
        return usage(client, project)
    if op == "stored_offsets":
        topic = payload["topic"]
        if not isinstance(topic, str) or not topic:
            raise QueryError("'topic' must be a topic name")
        return stored_offsets(client, topic)
    raise QueryError(f"unknown read {op!r}")


def stored_offsets(client: Client, topic: str) -> dict[str, int]:
    """Per partition of `topic` (as text, for JSON), the highest offset whose logs are stored.

    The worker stores each partition's messages in offset order and the watermark is written by
    the insert that stores them (migration 001's view), so every message of the partition up to
    it is readable, or was set aside as a dead letter (an envelope the worker could not read)."""
    return {str(p): o for (table, p), o in store.watermarks(client, topic).items() if table == LOGS_TABLE}
