"""The read core: typed queries compiled to parameterized ClickHouse SQL.

Every read path (the gateway's `GET /api/v1/logs`, the worker's internal read port
in embedded mode) goes through here. User input only ever reaches ClickHouse as a
bound parameter; identifiers come from fixed tables in this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.record import LEVELS

MAX_LIMIT = 1000

# Columns returned by the logs search, in order. Timestamps are selected as integer
# nanoseconds and rendered here, so output does not depend on the driver's timezone.
_LOG_OUTPUT = (
    "project",
    "timestamp",
    "observed_timestamp",
    "level",
    "severity_text",
    "message",
    "service",
    "environment",
    "host",
    "dataset",
    "trace_id",
    "span_id",
    "request_id",
    "session_id",
    "user_id",
    "flow_id",
    "tags",
    "entity_name",
    "entity_kind",
    "entity_tags",
    "error_name",
    "error_stack",
    "attributes",
    "ua_browser",
    "ua_os",
    "ua_device",
    "client_ip",
    "dialect",
    "ingest_id",
)
_TIME_COLUMNS = frozenset({"timestamp", "observed_timestamp"})


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


def parse_time(name: str, value: str) -> int:
    """ISO 8601 (zone optional, UTC assumed) to ns; the error names the parameter."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise QueryError(f"'{name}' must be an ISO 8601 time, e.g. 2024-05-31T15:30:45Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (int(dt.replace(microsecond=0).timestamp()) * 1_000_000 + dt.microsecond) * 1000


def compile_logs(query: LogQuery) -> tuple[str, dict[str, Any]]:
    query.validate()
    where = ["project = {project:String}"]
    params: dict[str, Any] = {"project": query.project, "limit": query.limit}
    if query.since_ns is not None:
        where.append("timestamp >= fromUnixTimestamp64Nano({since:Int64}, 'UTC')")
        params["since"] = query.since_ns
    if query.until_ns is not None:
        where.append("timestamp < fromUnixTimestamp64Nano({until:Int64}, 'UTC')")
        params["until"] = query.until_ns
    if query.levels:
        where.append("level IN {levels:Array(String)}")
        params["levels"] = list(query.levels)
    if query.service:
        where.append("service = {service:String}")
        params["service"] = query.service
    if query.text:
        where.append("positionCaseInsensitiveUTF8(message, {text:String}) > 0")
        params["text"] = query.text
    # Aliases must not shadow columns: ClickHouse resolves WHERE names against aliases first.
    columns = ", ".join(
        f"toUnixTimestamp64Nano({c}) AS {c}_ns" if c in _TIME_COLUMNS else c for c in _LOG_OUTPUT
    )
    sql = (
        f"SELECT {columns} FROM logs WHERE {' AND '.join(where)} "
        "ORDER BY timestamp DESC LIMIT {limit:UInt32}"
    )
    return sql, params


def format_ns(ns: int) -> str:
    """RFC 3339 with nanoseconds, UTC: lossless and sortable as text."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"


def run_logs(client: Client, query: LogQuery) -> list[dict[str, Any]]:
    sql, params = compile_logs(query)
    result = client.query(sql, parameters=params)
    rows = []
    for values in result.result_rows:
        row = dict(zip(_LOG_OUTPUT, values, strict=True))
        for c in _TIME_COLUMNS:
            row[c] = format_ns(int(row[c]))
        rows.append(row)
    return rows


def project_stats(client: Client, project: str, since_ns: int = 0) -> dict[str, Any]:
    """Rows stored for a project (received since `since_ns`) and the pipeline lag
    (receive -> inserted) quantiles in ms: what operators and the benchmark watch."""
    params = {"project": project, "since": since_ns}
    where = (
        "project = {project:String} AND observed_timestamp >= fromUnixTimestamp64Nano({since:Int64}, 'UTC')"
    )
    ((logs, p50, p99, max_lag, distinct_ingest),) = client.query(
        "SELECT count(), "
        "quantile(0.5)(dateDiff('millisecond', observed_timestamp, inserted_at)), "
        "quantile(0.99)(dateDiff('millisecond', observed_timestamp, inserted_at)), "
        "max(dateDiff('millisecond', observed_timestamp, inserted_at)), "
        f"uniqExact(ingest_id) FROM logs WHERE {where}",
        parameters=params,
    ).result_rows
    ((events,),) = client.query(f"SELECT count() FROM events WHERE {where}", parameters=params).result_rows
    return {
        "logs": int(logs),
        "events": int(events),
        "requests": int(distinct_ingest),
        "lag_ms": {"p50": _num(p50), "p99": _num(p99), "max": _num(max_lag)},
    }


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else round(number, 1)  # NaN when there are no rows
