"""Alert storage in ClickHouse (migration 005): rules, evaluator state, events, deliveries.

Every operation takes and returns JSON-able values, so the same `call` serves three
callers: the gateway's rules API and the evaluator directly against a ClickHouse server,
and, in embedded mode, the worker's internal port on their behalf (chDB allows one
engine per data path per process, and the worker owns it). Times travel as integer
nanoseconds. Replaced rows carry a `version` (nanoseconds at the write) and are read
with FINAL, so the latest write wins on every replica.
"""

from __future__ import annotations

import time
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.record import ALERT_EVENT_COLUMN_NAMES, ALERT_EVENT_COLUMNS, ALERT_EVENTS_TABLE

MAX_DELIVERIES_SHOWN = 50

_STATE_COLUMNS = ["project", "rule_id", "group_key", "state", "since", "seq", "value", "version"]
_EVENT_COLUMNS = list(ALERT_EVENT_COLUMN_NAMES)
_DELIVERY_COLUMNS = [
    "project",
    "rule_id",
    "event_id",
    "url",
    "attempt",
    "outcome",
    "status",
    "error",
    "attempted_at",
]
_TYPES = {
    "alert_rules": ["LowCardinality(String)", "String", "UInt64", "UInt8", "String", "DateTime64(9, 'UTC')"],
    "alert_state": [
        "LowCardinality(String)",
        "String",
        "String",
        "LowCardinality(String)",
        "DateTime64(9, 'UTC')",
        "UInt64",
        "Float64",
        "UInt64",
    ],
    ALERT_EVENTS_TABLE: [type_ for _, type_ in ALERT_EVENT_COLUMNS],
    "alert_deliveries": [
        "LowCardinality(String)",
        "String",
        "String",
        "String",
        "UInt32",
        "LowCardinality(String)",
        "UInt16",
        "String",
        "DateTime64(9, 'UTC')",
    ],
}


class AlertStoreError(ValueError):
    """A malformed operation (the caller's bug, answered 400 by the worker's port)."""


def _insert(client: Client, table: str, columns: list[str], row: list[Any]) -> None:
    client.insert(table, [row], column_names=columns, column_type_names=_TYPES[table])


def put_rule(client: Client, project: str, rule_id: str, body: str, deleted: bool = False) -> None:
    now = time.time_ns()
    _insert(
        client,
        "alert_rules",
        ["project", "id", "version", "deleted", "body", "updated_at"],
        [project, rule_id, now, int(deleted), body, now],
    )


def rules(client: Client, project: str | None, rule_id: str | None = None) -> list[str]:
    """Stored bodies of the live rules of `project` (every project when None), oldest first."""
    where, params = ["deleted = 0"], {}
    if project is not None:
        where.append("project = {project:String}")
        params["project"] = project
    if rule_id is not None:
        where.append("id = {id:String}")
        params["id"] = rule_id
    result = client.query(
        f"SELECT body FROM alert_rules FINAL WHERE {' AND '.join(where)} ORDER BY project, id",
        parameters=params,
    )
    return [str(body) for (body,) in result.result_rows]


def states(client: Client, project: str, rule_id: str) -> list[dict[str, Any]]:
    result = client.query(
        "SELECT group_key, state, toUnixTimestamp64Nano(since), seq, value FROM alert_state FINAL "
        "WHERE project = {project:String} AND rule_id = {rule:String} ORDER BY group_key",
        parameters={"project": project, "rule": rule_id},
    )
    return [
        {"group_key": g, "state": str(s), "since_ns": int(since), "seq": int(seq), "value": float(v)}
        for g, s, since, seq, v in result.result_rows
    ]


def put_state(client: Client, project: str, rule_id: str, state: dict[str, Any]) -> None:
    row = [
        project,
        rule_id,
        state["group_key"],
        state["state"],
        int(state["since_ns"]),
        int(state["seq"]),
        float(state["value"]),
        time.time_ns(),
    ]
    _insert(client, "alert_state", _STATE_COLUMNS, row)


def put_event(client: Client, event: dict[str, Any]) -> None:
    _insert(
        client,
        ALERT_EVENTS_TABLE,
        _EVENT_COLUMNS,
        [
            event["project"],
            int(event["timestamp_ns"]),
            event["event_id"],
            event["rule_id"],
            event["rule_name"],
            event["group_key"],
            event["state"],
            event["previous_state"],
            float(event["value"]),
            event["op"],
            float(event["threshold"]),
            int(event["seq"]),
        ],
    )


def put_delivery(client: Client, attempt: dict[str, Any]) -> None:
    _insert(
        client,
        "alert_deliveries",
        _DELIVERY_COLUMNS,
        [
            attempt["project"],
            attempt["rule_id"],
            attempt["event_id"],
            attempt["url"],
            int(attempt["attempt"]),
            attempt["outcome"],
            int(attempt["status"]),
            attempt["error"][:1000],
            int(attempt["attempted_at_ns"]),
        ],
    )


def deliveries(
    client: Client, project: str, rule_id: str, limit: int = MAX_DELIVERIES_SHOWN
) -> list[dict[str, Any]]:
    """The rule's latest webhook attempts, newest first."""
    result = client.query(
        "SELECT event_id, url, attempt, outcome, status, error, toUnixTimestamp64Nano(attempted_at) "
        "FROM alert_deliveries WHERE project = {project:String} AND rule_id = {rule:String} "
        "ORDER BY attempted_at DESC LIMIT {limit:UInt32}",
        parameters={"project": project, "rule": rule_id, "limit": limit},
    )
    return [
        {
            "event_id": e,
            "url": u,
            "attempt": int(a),
            "outcome": str(o),
            "status": int(s) or None,
            "error": err,
            "attempted_at_ns": int(at),
        }
        for e, u, a, o, s, err, at in result.result_rows
    ]


def unfinished(client: Client, project: str, rule_id: str, since_ns: int) -> list[dict[str, Any]]:
    """Notifying events since `since_ns` with no final attempt ('delivered' or 'failed') to
    some URL yet: what a (re)started evaluator still owes. Rows: the event, the URLs done and
    the attempts made per URL."""
    result = client.query(
        "SELECT e.event_id, toUnixTimestamp64Nano(e.timestamp), e.rule_name, e.group_key, e.state, "
        "e.previous_state, e.value, e.op, e.threshold, e.seq, "
        "groupArrayIf(d.url, d.outcome IN ('delivered', 'failed')), "
        "groupArrayIf((d.url, d.attempt), d.url != '') "
        "FROM (SELECT * FROM alert_events FINAL WHERE project = {project:String} AND rule_id = {rule:String} "
        "AND state IN ('firing', 'resolved') "
        "AND timestamp >= fromUnixTimestamp64Nano({since:Int64}, 'UTC')) AS e "
        "LEFT JOIN (SELECT event_id, url, outcome, attempt FROM alert_deliveries "
        "WHERE project = {project:String} AND rule_id = {rule:String}) AS d ON d.event_id = e.event_id "
        "GROUP BY e.event_id, e.timestamp, e.rule_name, e.group_key, e.state, e.previous_state, e.value, "
        "e.op, e.threshold, e.seq ORDER BY e.timestamp",
        parameters={"project": project, "rule": rule_id, "since": since_ns},
        settings={"join_use_nulls": 0},
    )
    out = []
    for (
        event_id,
        ts,
        name,
        group,
        state,
        previous,
        value,
        op,
        threshold,
        seq,
        done,
        tried,
    ) in result.result_rows:
        attempts: dict[str, int] = {}
        for url, attempt in tried:
            attempts[str(url)] = max(attempts.get(str(url), 0), int(attempt))
        out.append(
            {
                "event": {
                    "project": project,
                    "event_id": event_id,
                    "timestamp_ns": int(ts),
                    "rule_id": rule_id,
                    "rule_name": name,
                    "group_key": group,
                    "state": str(state),
                    "previous_state": str(previous),
                    "value": float(value),
                    "op": str(op),
                    "threshold": float(threshold),
                    "seq": int(seq),
                },
                "done_urls": sorted({str(u) for u in done if u}),
                "attempts": attempts,  # per URL, the attempts made so far: numbering goes on
            }
        )
    return out


def call(client: Client, op: str, payload: dict[str, Any]) -> Any:
    """The operations by name, with JSON-able arguments and results (the worker's
    `/internal/v1/alerts/{op}` and the direct callers share this)."""
    try:
        if op == "rules":
            return rules(client, payload.get("project"), payload.get("id"))
        if op == "put_rule":
            put_rule(client, payload["project"], payload["id"], payload["body"], bool(payload.get("deleted")))
            return None
        if op == "states":
            return states(client, payload["project"], payload["rule_id"])
        if op == "put_state":
            put_state(client, payload["project"], payload["rule_id"], payload["state"])
            return None
        if op == "put_event":
            put_event(client, payload["event"])
            return None
        if op == "put_delivery":
            put_delivery(client, payload["attempt"])
            return None
        if op == "deliveries":
            return deliveries(client, payload["project"], payload["rule_id"])
        if op == "unfinished":
            return unfinished(client, payload["project"], payload["rule_id"], int(payload["since_ns"]))
    except (KeyError, TypeError) as exc:
        raise AlertStoreError(f"alerts {op}: bad payload ({type(exc).__name__}: {exc})") from None
    raise AlertStoreError(f"unknown alerts operation {op!r}")
