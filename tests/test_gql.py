"""GQL: the parser and compiler on their own, then the GoodLogs read endpoints end to end
(GoodLogs ingest -> Kafka -> worker -> ClickHouse -> gateway -> worker's read port)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from millrace import keys, store
from reads.gql import GQLError, compile_query, compile_text, parse
from reads.gql.autocomplete import suggest
from reads.query import LogQuery, compile_logs
from schemas.record import LOG_DEFAULTS
from tests.conftest import Stack, Tenant
from tests.seeds import curl_examples, json_documents, seed_text

NOW = 1_800_000_000 * 10**9
HOUR = 3600 * 10**9


def seed_gql() -> list[str]:
    """Every GQL query the GoodLogs seed shows: in curl bodies, URLs, the analytics batch and prose."""
    found: list[str] = []
    for ex in curl_examples("003"):
        path, _, query = ex.path.partition("?")
        if path == "/v1/gql/query":
            found.append(orjson.loads(ex.body)["q"])
        elif path == "/v1/gql":
            found += orjson.loads(ex.body)["queries"]
        elif path.endswith("/gql") and query:
            found += parse_qs(urlsplit(ex.path).query)["q"]
    for doc in json_documents("003"):
        if isinstance(doc, dict) and "queries" in doc:
            found += doc["queries"]
        if isinstance(doc, dict) and "gql" in doc:
            found.append(doc["gql"])
    found += re.findall(r"use GQL: (.+)$", seed_text("003"), flags=re.M)
    return found


SEED_GQL = seed_gql()


def test_the_seed_shows_the_queries_this_suite_expects() -> None:
    assert len(SEED_GQL) == 11
    assert "count | where severity = 'error' | last 1h" in SEED_GQL
    assert "severity:error | count by message | top 10" in SEED_GQL
    assert "from:alert_events | last 7d" in SEED_GQL


@pytest.mark.parametrize("q", SEED_GQL)
def test_every_seed_query_parses_and_compiles_to_parameterized_sql(q: str) -> None:
    query, compiled = compile_text(q, "p1", NOW)
    assert compiled.params["p0"] == "p1"
    assert compiled.sql.count("project = {p0:String}") == 1
    assert compiled.mode == query.mode


def test_alert_events_is_a_source_with_its_own_fields() -> None:
    """The alert timeline reads like logs (issue 20); a field it does not have is a 422 at the field."""
    query = parse("from:alert_events | last 7d")
    assert (query.source, query.window and query.window.last_s) == ("alert_events", 7 * 86400)
    assert "FROM alert_events FINAL" in compile_query(query, "p", NOW).sql
    with pytest.raises(GQLError) as err:
        compile_text("from:alert_events orderId:1", "p", NOW)
    assert (err.value.status, err.value.position) == (422, 18)


def test_the_seed_response_example_is_what_the_query_echoes() -> None:
    (response,) = [d for d in json_documents("003") if isinstance(d, dict) and "data" in d]
    parsed = parse("severity:error | count by message | top 10").to_dict()
    for name in ("source", "mode", "filters"):
        assert response["query"][name] == parsed[name]
    assert response["query"]["pipeline"][0] == parsed["pipeline"][0]
    assert parsed["pipeline"][1] == {"type": "top", "n": 10}


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("severity:error", [{"field": "severity", "op": "eq", "value": "error"}]),
        ("-severity:debug", [{"op": "not", "filter": {"field": "severity", "op": "eq", "value": "debug"}}]),
        ("NOT env:prod", [{"op": "not", "filter": {"field": "env", "op": "eq", "value": "prod"}}]),
        ("amount > 20", [{"field": "amount", "op": "gt", "value": 20}]),
        ("amount:>=29.5", [{"field": "amount", "op": "gte", "value": 29.5}]),
        ("x != 'a b'", [{"field": "x", "op": "ne", "value": "a b"}]),
        ("referrer:https://google.com", [{"field": "referrer", "op": "eq", "value": "https://google.com"}]),
        ('"card declined"', [{"field": "_text", "op": "contains", "value": "card declined"}]),
        ("severity:(error OR warn)", [{"field": "severity", "op": "in", "value": ["error", "warn"]}]),
        ("orderId:*", [{"field": "orderId", "op": "exists", "value": None}]),
        (
            "a:1 OR b:2 c:3",
            [
                {
                    "op": "or",
                    "filters": [
                        {"field": "a", "op": "eq", "value": 1},
                        {
                            "op": "and",
                            "filters": [
                                {"field": "b", "op": "eq", "value": 2},
                                {"field": "c", "op": "eq", "value": 3},
                            ],
                        },
                    ],
                }
            ],
        ),
    ],
)
def test_filters_parse_to_the_documented_shape(q: str, expected: list[dict[str, Any]]) -> None:
    assert expected == parse(q).to_dict()["filters"]


@pytest.mark.parametrize(
    ("q", "last_s"), [("last:1h", 3600), ("last 24h", 86400), ("x | last:30d", 30 * 86400), ("last 15m", 900)]
)
def test_time_windows_become_a_bound_lower_bound(q: str, last_s: int) -> None:
    _, compiled = compile_text(q, "p", NOW)
    assert "timestamp >= fromUnixTimestamp64Nano({p1:Int64}, 'UTC')" in compiled.sql
    assert compiled.params["p1"] == NOW - last_s * 10**9


def test_explicit_ranges_bind_both_ends() -> None:
    for q in (
        "since:2024-05-31T00:00:00Z until:2024-06-01",
        "between 2024-05-31T00:00:00Z and 2024-06-01T00:00:00Z",
    ):
        _, compiled = compile_text(q, "p", NOW)
        assert compiled.params["p1"] == 1_717_113_600 * 10**9
        assert compiled.params["p2"] == 1_717_200_000 * 10**9
        assert "timestamp < fromUnixTimestamp64Nano({p2:Int64}, 'UTC')" in compiled.sql


@pytest.mark.parametrize(
    ("q", "position", "needle", "status"),
    [
        ("severity:", 9, "expected a value after 'severity:'", 400),
        ("message:'unterminated", 8, "unterminated string", 400),
        ("count by", 8, "expected a field name after 'by'", 400),
        ("a:1 | | count", 6, "empty stage", 400),
        ("(a:1 b:2", 8, "expected ')'", 400),
        ("a:1 count by x", 4, "starts a pipeline stage", 400),
        ("last:1x", 5, "not a duration", 400),
        ("top ten", 4, "whole number", 400),
        ("NOT (last:1h)", 5, "outside parentheses", 400),
        ("last:1h last:2h", 8, "already set", 400),
        ("count | count by a", 8, "one aggregate", 400),
        ("from:nope", 5, "unknown source", 422),
        ("severity:loud", 9, "unknown severity", 422),
        ("x:1 | top 5", 6, "top N", 422),
        ("count by a | sort b", 18, "cannot sort by 'b'", 422),
        ("timestamp > yesterday", 12, "not a time", 422),
    ],
)
def test_errors_point_at_the_problem(q: str, position: int, needle: str, status: int) -> None:
    with pytest.raises(GQLError) as err:
        compile_text(q, "p", NOW)
    assert needle in str(err.value)
    assert (position, status) == (err.value.position, err.value.status)
    assert f"(at position {position})" in str(err.value)


def test_deep_nesting_is_a_parse_error_not_a_crash() -> None:
    for q in ("(" * 5000 + "a" + ")" * 5000, "NOT " * 3000 + "a", "-" * 3000 + "a"):
        with pytest.raises(GQLError) as err:
            parse(q)
        assert err.value.status == 400


_GQL_ALPHABET = st.sampled_from(
    [
        *"abc019 :=<>!-()|,'\"*$._",
        "count",
        "by",
        "top",
        "last",
        "from",
        "OR",
        "NOT",
        "1h",
        "where",
        "bin(",
        "timestamp",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_GQL_ALPHABET, max_size=30).map("".join))
def test_any_text_compiles_or_raises_gql_error(text: str) -> None:
    """Nothing a user types makes the parser or compiler fail with anything but GQLError."""
    try:
        compile_text(text, "p", NOW)
    except GQLError as exc:
        assert 0 <= exc.position <= len(text)
        assert exc.status in (400, 422)


@pytest.mark.parametrize(
    "evil",
    [
        "'; DROP TABLE logs; --",
        "x') OR 1=1 --",
        "{p0:String}",
        "a\\' OR project != '",
        "]['",
    ],
)
def test_user_input_only_ever_travels_as_a_parameter(evil: str) -> None:
    quoted = '"' + evil.replace("\\", "\\\\").replace('"', '\\"') + '"'
    q = f"{quoted}:{quoted} message:{quoted} {quoted} | count by {quoted} | sort {quoted}"
    _, compiled = compile_text(q, "victim", NOW)
    placeholders = re.findall(r"\{(p\d+):[A-Za-z0-9()]+\}", compiled.sql)
    assert set(placeholders) == set(compiled.params)
    stripped = re.sub(r"\{p\d+:[A-Za-z0-9()]+\}", "", compiled.sql)
    assert evil not in stripped
    assert "'" not in stripped.replace("'UTC'", "").replace("!= ''", "")
    assert list(compiled.params.values()).count(evil) >= 4


def test_properties_and_columns_resolve_as_documented() -> None:
    _, c = compile_text("orderId:ord_1 service:billing $browser:'Chrome 125' amount>20 tags:a", "p", NOW)
    assert "attributes[{p1:String}] = {p2:String}" in c.sql
    assert (c.params["p1"], c.params["p2"]) == ("orderId", "ord_1")
    assert "service = {p3:String}" in c.sql
    assert "ua_browser = {p4:String}" in c.sql
    assert "toFloat64OrNull(attributes[{p5:String}]) > {p6:Float64}" in c.sql
    assert "has(tags, {p7:String})" in c.sql
    _, e = compile_text("from:events plan:pro event_name:signup | count_distinct($distinct_id)", "p", NOW)
    assert "properties[{p1:String}] = {p2:String}" in e.sql
    assert "event = {p3:String}" in e.sql
    assert "uniqExactIf(distinct_id, distinct_id != '')" in e.sql


def test_severity_compares_by_rank_and_accepts_aliases() -> None:
    _, c = compile_text("severity >= warn", "p", NOW)
    assert c.params["p1"] == ["warn", "error", "fatal"]
    _, c = compile_text("severity:warning", "p", NOW)
    assert c.params["p1"] == "warn"


def test_the_logs_endpoint_compiles_through_gql() -> None:
    sql, params = compile_logs(
        LogQuery(project="p", levels=("warn", "error"), service="api", text="x", limit=5)
    )
    assert "level IN {p1:Array(String)}" in sql
    assert "service = {p2:String}" in sql
    assert "positionCaseInsensitiveUTF8(message, {p3:String}) > 0" in sql
    assert sql.endswith("ORDER BY timestamp DESC LIMIT {p4:UInt32}")
    assert params == {"p0": "p", "p1": ["warn", "error"], "p2": "api", "p3": "x", "p4": 5}


def test_autocomplete_answers_the_seed_example() -> None:
    schema = {"log_levels": [{"name": "error", "volume": 12345}, {"name": "warn", "volume": 5678}]}
    answer = suggest("severity:", 9, schema)
    assert answer["suggestions"] == [
        {"text": "error", "description": "12,345 logs", "kind": "value"},
        {"text": "warn", "description": "5,678 logs", "kind": "value"},
    ]
    assert answer["valid"] is True
    assert answer["parsed"]["source"] == "logs"
    assert answer["parsed"]["filters"] == []


def test_autocomplete_suggests_properties_stages_and_reports_errors() -> None:
    schema = {
        "log_properties": [{"key": "orderId", "type": "string", "examples": ["ord_123"], "volume": 1500}]
    }
    assert {"text": "orderId:", "description": "string, 1,500 logs", "kind": "property"} in suggest(
        "ord", 3, schema
    )["suggestions"]
    assert [s["text"] for s in suggest("x | co", 6, {})["suggestions"]] == [
        "count",
        "count by ",
        "count_distinct(",
    ]
    assert suggest("orderId:o", 9, schema)["suggestions"][0]["text"] == "ord_123"
    broken = suggest("(a:1 b:2 ", 9, {})
    assert broken["valid"] is False
    assert broken["error"]["position"] == 9


# -- end to end ------------------------------------------------------------------------

UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36"
)


async def call(
    stack: Stack, method: str, path: str, key: str | None, body: Any = None, **params: str
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = orjson.dumps(body) if body is not None else None
    async with stack.session.request(
        method, stack.url + path, data=data, params=params, headers=headers
    ) as resp:
        return resp.status, orjson.loads(await resp.read())


async def gql(stack: Stack, tenant: Tenant, q: str) -> Any:
    status, body = await call(stack, "POST", "/v1/gql/query", tenant.read_key, {"q": q})
    assert status == 200, body
    return body


async def seeded(stack: Stack, name: str) -> Tenant:
    """A fresh project holding the seed's two logs and two events, sent as the seed sends them."""
    tenant = await stack.tenant(f"{name}-{uuid.uuid4().hex[:8]}")
    for ex in curl_examples("003"):
        if ex.path in ("/v1/logs", "/v1/events"):
            headers = {**ex.headers, "Authorization": f"Bearer {tenant.key}", "User-Agent": UA}
            async with stack.session.post(stack.url + ex.path, data=ex.body, headers=headers) as resp:
                assert resp.status == 202, await resp.read()
    assert await stack.wait_rows(tenant.project, 2) == 2
    assert await stack.wait_rows(tenant.project, 2, table="events") == 2
    return tenant


@pytest.fixture(scope="module")
async def tenants(stack: Stack) -> tuple[Tenant, Tenant]:
    a, b = await asyncio.gather(seeded(stack, "gql-a"), seeded(stack, "gql-b"))
    # B also has a log of its own that A must never see.
    headers = {"Authorization": f"Bearer {b.key}", "Content-Type": "application/json"}
    only_b = {"batch": [{"severity": "error", "message": "B secret", "properties": {"bOnly": "yes"}}]}
    async with stack.session.post(stack.url + "/v1/logs", data=orjson.dumps(only_b), headers=headers) as resp:
        assert resp.status == 202
    assert await stack.wait_rows(b.project, 3) == 3
    return a, b


@pytest.mark.integration
async def test_search_returns_matching_rows_newest_first(
    stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    body = await gql(stack, a, "severity:error last:24h")
    assert body["query"]["filters"] == [{"field": "severity", "op": "eq", "value": "error"}]
    data = body["data"]
    assert (data["mode"], data["table"], data["count"]) == ("search", "logs", 1)
    (row,) = data["results"]
    assert (row["project"], row["message"], row["level"]) == (
        a.project,
        "Payment failed: card_declined",
        "error",
    )
    assert row["attributes"]["orderId"] == "ord_123"

    both = (await gql(stack, a, "last:1h"))["data"]["results"]
    assert [r["timestamp"] for r in both] == sorted((r["timestamp"] for r in both), reverse=True)
    assert len(both) == 2
    for q, messages in [
        ("orderId:ord_123", ["Payment failed: card_declined"]),
        ("amount > 20", ["Payment failed: card_declined"]),
        ("-severity:error", ["User signed up"]),
        ("NOT service:billing method:google", ["User signed up"]),
        ("declined", ["Payment failed: card_declined"]),
        ("$browser:'Chrome 125' userId:u_456", ["User signed up"]),
        ("severity:(error OR info) | sort message asc | limit 1", ["Payment failed: card_declined"]),
        ("amount:>=30", []),
    ]:
        found = [r["message"] for r in (await gql(stack, a, q))["data"]["results"]]
        assert messages == found, q


@pytest.mark.integration
async def test_aggregates_answer_like_the_seed(stack: Stack, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    body = await gql(stack, a, "severity:error | count by message | top 10")
    assert body["data"] == {
        "mode": "aggregate",
        "table": "logs",
        "results": [{"message": "Payment failed: card_declined", "value": 1}],
        "total_groups": 1,
    }
    body = await gql(stack, a, "count | where severity = 'error' | last 1h")
    assert body["data"]["results"] == [{"value": 1}]
    body = await gql(stack, a, "count by severity | sort severity asc")
    assert body["data"]["results"] == [{"severity": "error", "value": 1}, {"severity": "info", "value": 1}]
    assert body["data"]["total_groups"] == 2
    body = await gql(stack, a, "count by severity | limit 1")
    assert (len(body["data"]["results"]), body["data"]["total_groups"]) == (1, 2)
    body = await gql(stack, a, "count by severity | where count > 5")
    assert (body["data"]["results"], body["data"]["total_groups"]) == ([], 0)


@pytest.mark.integration
async def test_batch_runs_the_seed_queries_with_partial_failures(
    stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    (batch,) = [e for e in curl_examples("003") if e.path == "/v1/gql"]
    queries = orjson.loads(batch.body)["queries"]
    analytics = next(d for d in json_documents("003") if isinstance(d, dict) and "queries" in d)["queries"]
    status, body = await call(
        stack, "POST", "/v1/gql", a.read_key, {"queries": [*queries, "severity:", *analytics]}
    )
    assert status == 200
    assert [o["status"] for o in body] == ["ok", "ok", "ok", "error", "ok", "ok", "ok"]
    values = [o["data"]["results"] for o in body if o["status"] == "ok"]
    assert values[0] == [{"value": 1}]  # distinct users: only the signup had a distinctId
    assert values[1] == [{"value": 2}]
    assert values[2] == [{"event_name": "page_view", "value": 1}, {"event_name": "signup", "value": 1}]
    assert values[3:] == [
        [{"value": 1}],
        [{"value": 2}],
        [{"event": "page_view", "value": 1}, {"event": "signup", "value": 1}],
    ]
    assert body[3] == {"status": "error", "error": body[3]["error"], "position": 9}
    assert "expected a value after 'severity:'" in body[3]["error"]

    status, body = await call(stack, "POST", "/v1/gql", a.read_key, {"queries": ["count"] * 11})
    assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")


@pytest.mark.integration
async def test_query_errors_use_the_goodlogs_format_and_point_at_the_problem(
    stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    status, body = await call(stack, "POST", "/v1/gql/query", a.read_key, {"q": "severity:error | count by"})
    assert status == 400
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["position"] == 25
    assert "at position 25" in body["error"]["message"]
    status, body = await call(stack, "POST", "/v1/gql/query", a.read_key, {"q": "from:nowhere | last 7d"})
    assert (status, body["error"]["position"]) == (422, 5)
    status, body = await call(stack, "POST", "/v1/gql/query", a.read_key, {"query": "x"})
    assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR")
    status, body = await call(stack, "POST", "/v1/gql/query", None, {"q": "count"})
    assert (status, body["error"]["code"]) == (401, "UNAUTHORIZED")
    _, write_only = await keys.create(stack.settings, a.project, frozenset({keys.SCOPE_LOGS}))
    await stack.wait_for_key(write_only)
    for method, path in [("POST", "/v1/gql/query"), ("GET", "/v1/schema"), ("GET", "/v1/info")]:
        status, body = await call(
            stack, method, path, write_only, {"q": "count"} if method == "POST" else None
        )
        assert (status, body["error"]["code"]) == (403, "FORBIDDEN"), path


@pytest.mark.integration
async def test_a_read_key_never_sees_another_project(stack: Stack, tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    for q in ["count", "from:events | count", "B secret", "bOnly:yes", "project:" + b.project]:
        results = (await gql(stack, a, q))["data"]["results"]
        assert all(r.get("project", a.project) == a.project for r in results), q
        if q in ("count", "from:events | count"):
            assert results == [{"value": 2}], q
        else:
            assert results == [], q
    assert (await gql(stack, b, "count"))["data"]["results"] == [{"value": 3}]
    evil = "\"x') OR project != ('\""  # one quoted string: SQL-looking text stays a value
    assert (await gql(stack, a, f"{evil}:{evil} OR {evil} | count"))["data"]["results"] == [{"value": 0}]
    status, schema = await call(stack, "GET", "/v1/schema", a.read_key)
    assert status == 200
    assert "bOnly" not in {p["key"] for p in schema["log_properties"]}
    status, info = await call(stack, "GET", "/v1/info", b.read_key)
    assert info["usage"]["logs"] == 3


@pytest.mark.integration
async def test_schema_info_and_autocomplete_come_from_the_discovered_schema(
    stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    status, schema = await call(stack, "GET", "/v1/schema", a.read_key)
    assert status == 200
    logs = {p["key"]: p for p in schema["log_properties"]}
    assert logs["orderId"] == {"key": "orderId", "type": "string", "examples": ["ord_123"], "volume": 1}
    assert logs["amount"] == {"key": "amount", "type": "number", "examples": [29], "volume": 1}
    assert logs["$browser"]["volume"] == 2
    events = {p["key"]: p for p in schema["event_properties"]}
    assert events["plan"] == {"key": "plan", "type": "string", "examples": ["pro"], "volume": 1}
    assert events["amount"]["examples"] == [29.99]
    assert sorted((e["name"], e["volume"]) for e in schema["event_names"]) == [
        ("page_view", 1),
        ("signup", 1),
    ]

    status, info = await call(stack, "GET", "/v1/info", a.read_key)
    assert status == 200
    assert info["project"] == {"id": a.project, "name": a.project}
    assert (info["usage"]["logs"], info["usage"]["events"]) == (2, 2)
    # Two keys from the fixture, plus any another test here created for the project.
    assert info["keys"] == sum(1 for k in stack.gateway_keys.all() if k.project == a.project) >= 2
    assert info["usage"]["bytes"] > 100

    status, answer = await call(stack, "GET", "/v1/gql/autocomplete", a.read_key, q="severity:", cursor="9")
    assert status == 200
    assert sorted(s["text"] for s in answer["suggestions"]) == ["error", "info"]
    assert answer["suggestions"][0]["description"] == "1 logs"
    assert (answer["valid"], answer["parsed"]["filters"]) == (True, [])
    status, answer = await call(
        stack, "GET", "/v1/gql/autocomplete", a.read_key, q="from:events | count by ev"
    )
    assert [s["text"] for s in answer["suggestions"]][:1] == ["event"]
    status, answer = await call(
        stack, "GET", "/v1/gql/autocomplete", a.read_key, q="from:events pl", cursor="14"
    )
    assert answer["suggestions"] == [{"text": "plan:", "description": "string, 1 events", "kind": "property"}]


@pytest.mark.integration
async def test_time_windows_and_ranges_select_by_event_time(stack: Stack) -> None:
    """Rows written straight to the engine at known times: last/since/until keep exactly their window."""
    tenant = await stack.tenant(f"gql-time-{uuid.uuid4().hex[:8]}")
    now = time.time_ns()
    ages_h = [0.1, 2, 30, 24 * 40]
    columns: dict[str, list[Any]] = {name: [] for name in LOG_DEFAULTS}
    for age in ages_h:
        row = {**LOG_DEFAULTS, "project": tenant.project, "message": f"age {age}"}
        # Received now (retention counts from receipt), happened `age` hours ago.
        row["timestamp"], row["observed_timestamp"] = now - int(age * HOUR), now
        for name, value in row.items():
            columns[name].append(value)
    store.insert_columns(stack.client, "logs", columns, dedup_token=f"gql-time-{uuid.uuid4()}")

    async def messages(q: str) -> list[str]:
        return [r["message"] for r in (await gql(stack, tenant, q))["data"]["results"]]

    assert await messages("last:1h") == ["age 0.1"]
    assert await messages("last 24h") == ["age 0.1", "age 2"]
    assert await messages("last:30d") == ["age 0.1", "age 2", "age 30"]
    assert await messages("") == ["age 0.1", "age 2", "age 30", "age 960"]
    mid = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now - 10 * HOUR) // 10**9))
    assert await messages(f"until:{mid}") == ["age 30", "age 960"]
    assert await messages(f"since:{mid} | sort timestamp asc") == ["age 2", "age 0.1"]


# -- time buckets: `count by bin(timestamp, <width>)` ----------------------------------------


def test_a_bin_groups_by_time_buckets_oldest_first() -> None:
    query, compiled = compile_text(
        "severity >= warn | count by bin(timestamp, 5m), level | last 1h", "p", NOW
    )
    assert query.to_dict()["pipeline"] == [
        {"type": "aggregate", "func": "count", "group_by": ["bin(timestamp, 5m)", "level"]}
    ]
    assert "intDiv(toUnixTimestamp64Milli(timestamp), {p3:Int64}) * {p3:Int64} AS g0" in compiled.sql
    assert compiled.params["p3"] == 300_000
    assert "ORDER BY g0 ASC, value DESC, g1 ASC" in compiled.sql
    assert (compiled.columns, compiled.bins) == (("timestamp", "level"), (0,))
    # An explicit order wins; `sort timestamp` names the bucket.
    _, compiled = compile_text("count by bin(timestamp, 1h) | sort timestamp desc", "p", NOW)
    assert "ORDER BY g0 DESC, value DESC" in compiled.sql
    _, compiled = compile_text("from:events | count by BIN(observed_timestamp, 1d)", "p", NOW)
    assert "toUnixTimestamp64Milli(observed_timestamp)" in compiled.sql
    assert compiled.params["p1"] == 86_400_000


@pytest.mark.parametrize(
    ("q", "position", "needle", "status"),
    [
        ("count by bin(level, 1m)", 13, "buckets a time field", 422),
        ("count by bin(timestamp)", 22, "expected ',' then a bucket width", 400),
        ("count by bin(timestamp, 1x)", 24, "not a duration", 400),
        ("count by bin(timestamp, 0s)", 24, "out of range", 400),
        ("count by bin(timestamp, 1m", 26, "')' to close bin(", 400),
        ("count by bin(timestamp, 1m), bin(timestamp, 1h)", 29, "one bin(...)", 400),
        ("count by timestamp", 9, "bin(timestamp, 1m)", 422),
    ],
)
def test_bin_errors_point_at_the_problem(q: str, position: int, needle: str, status: int) -> None:
    with pytest.raises(GQLError) as err:
        compile_text(q, "p", NOW)
    assert needle in str(err.value)
    assert (position, status) == (err.value.position, err.value.status)


def test_autocomplete_offers_a_bin_after_by() -> None:
    assert suggest("count by ", 9, {})["suggestions"][0]["text"] == "bin(timestamp, 1m)"
    assert suggest("count by level, b", 17, {})["suggestions"][0]["text"] == "bin(timestamp, 1m)"
    assert "bin(timestamp, 1m)" not in [s["text"] for s in suggest("x | sort ", 9, {})["suggestions"]]


@pytest.mark.integration
async def test_bins_count_rows_per_time_bucket_and_level(stack: Stack) -> None:
    """Rows written straight to the engine at known times land in the buckets their times say."""
    tenant = await stack.tenant(f"gql-bin-{uuid.uuid4().hex[:8]}")
    minute = 60 * 10**9
    base = (time.time_ns() // HOUR - 1) * HOUR  # the start of the last whole hour: bucket edges are known
    rows = [(0, "info"), (10**9, "info"), (59 * 10**9, "error"), (minute, "info"), (5 * minute + 1, "warn")]
    columns: dict[str, list[Any]] = {name: [] for name in LOG_DEFAULTS}
    for offset, level in rows:
        row = {**LOG_DEFAULTS, "project": tenant.project, "level": level, "message": f"at {offset}"}
        row["timestamp"], row["observed_timestamp"] = base + offset, time.time_ns()
        for name, value in row.items():
            columns[name].append(value)
    store.insert_columns(stack.client, "logs", columns, dedup_token=f"gql-bin-{uuid.uuid4()}")

    def at(offset_ns: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((base + offset_ns) // 10**9)) + ".000000000Z"

    body = await gql(stack, tenant, "count by bin(timestamp, 1m), level | last 7d")
    assert body["data"]["results"] == [
        {"timestamp": at(0), "level": "info", "value": 2},
        {"timestamp": at(0), "level": "error", "value": 1},
        {"timestamp": at(minute), "level": "info", "value": 1},
        {"timestamp": at(5 * minute), "level": "warn", "value": 1},
    ]
    assert body["data"]["total_groups"] == 4
    body = await gql(stack, tenant, "-severity:warn | count by bin(timestamp, 5m) | last 7d")
    assert body["data"]["results"] == [{"timestamp": at(0), "value": 4}]
    body = await gql(stack, tenant, "count by bin(timestamp, 1m) | top 1 | last 7d")
    assert body["data"]["results"] == [{"timestamp": at(0), "value": 3}]
