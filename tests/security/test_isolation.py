"""Security: scopes on every endpoint, one tenant per key on the read path whatever the query
string holds, user input reaching ClickHouse only as bound parameters, X-Forwarded-For
believed only from trusted proxies, keys hashed at rest and never written to logs."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from millrace import internal, keys
from millrace.kafka.topics import client_options
from reads.query import LogQuery, compile_logs
from tests.bodies import drain_body
from tests.conftest import Gateway, Stack
from tests.test_limits import WIRES, post

pytestmark = pytest.mark.integration


async def new_key(stack: Stack, project: str, *scopes: str) -> str:
    _, token = await keys.create(stack.settings, project, frozenset(scopes))
    await stack.wait_for_key(token)
    return token


async def read(stack: Stack, token: str, params: dict[str, str] | list[tuple[str, str]]) -> tuple[int, Any]:
    async with stack.session.get(
        stack.url + "/api/v1/logs", params=params, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        raw = await resp.read()
        return resp.status, orjson.loads(raw)


def count(stack: Stack, table: str, project: str) -> int:
    return int(stack.query(f"SELECT count() FROM {table} WHERE project = {{p:String}}", p=project)[0][0])


EVENT = orjson.dumps({"batch": [{"event": "page_view", "distinctId": "u1", "properties": {"path": "/"}}]})


# -- scopes ----------------------------------------------------------------------------------------


async def test_every_endpoint_enforces_its_scope_and_nothing_refused_is_stored(stack: Stack) -> None:
    project = f"scopes-{uuid.uuid4().hex[:6]}"
    public = await new_key(stack, project, keys.SCOPE_EVENTS)  # GoodLogs' "public" key
    ingest = await new_key(stack, project, keys.SCOPE_LOGS)
    reader = await new_key(stack, project, keys.SCOPE_READ)

    for name, wire in sorted(WIRES.items()):
        for token in (public, reader):
            status, body, _ = await post(
                stack, stack.url, wire.path, wire.body("refused", 1), wire.headers(token)
            )
            assert status == 403, (name, body)
        status, _, _ = await post(
            stack, stack.url, wire.path, wire.body(f"ok-{name}", 1), wire.headers(ingest)
        )
        assert status == wire.ok, name

    events = {"Authorization": "", "Content-Type": "application/json"}
    for token in (ingest, reader):
        status, body, _ = await post(
            stack, stack.url, "/v1/events", EVENT, {**events, "Authorization": f"Bearer {token}"}
        )
        assert (status, body["error"]["code"]) == (403, "FORBIDDEN")
    status, body, _ = await post(
        stack, stack.url, "/v1/events", EVENT, {**events, "Authorization": f"Bearer {public}"}
    )
    assert (status, body) == (202, {"accepted": 1, "rejected": 0})

    for token in (public, ingest):
        status, body = await read(stack, token, {})
        assert (status, body["error"]["code"]) == (403, "FORBIDDEN")
    status, _ = await read(stack, reader, {})
    assert status == 200

    assert await stack.wait_rows(project, len(WIRES)) == len(WIRES)
    assert await stack.wait_rows(project, 1, table="events") == 1
    messages = [m for (m,) in stack.query("SELECT message FROM logs WHERE project = {p:String}", p=project)]
    assert sorted(messages) == sorted(f"ok-{name} #0" for name in WIRES)


async def test_a_revoked_key_is_refused_everywhere(stack: Stack) -> None:
    project = f"revoked-{uuid.uuid4().hex[:6]}"
    record, token = await keys.create(stack.settings, project, frozenset(keys.ALL_SCOPES))
    await stack.wait_for_key(token)
    await keys.revoke(stack.settings, record.key_id)
    deadline = time.monotonic() + 10
    while stack.gateway_keys.authenticate(token) is not None:  # the revocation reaches the gateway
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not see the revocation")
        await asyncio.sleep(0.05)

    wire = WIRES["astralog"]
    assert (await post(stack, stack.url, wire.path, wire.body("gone", 1), wire.headers(token)))[0] == 401
    assert (await read(stack, token, {}))[0] == 401
    await asyncio.sleep(1.0)  # several worker flushes
    assert count(stack, "logs", project) == 0


# -- the read path under hostile parameters --------------------------------------------------------

HOSTILE = [
    "' OR 1=1 --",
    "x' OR project != '' --",
    "') OR ('1'='1",
    "\\' OR 1=1 #",
    "{project:String}",
    "{p:String}') OR 1=1 --",
    "1; DROP TABLE logs; --",
    "%' UNION ALL SELECT * FROM system.tables --",
    "\n' OR 1 --",
    '"; SELECT 1; --',
    "\\",
    "\x00' OR 1=1",
    "é😀'`\"",
]


async def test_hostile_query_parameters_never_cross_tenants_or_reach_sql(stack: Stack) -> None:
    mine, theirs = f"hostile-a-{uuid.uuid4().hex[:6]}", f"hostile-b-{uuid.uuid4().hex[:6]}"
    writer = await new_key(stack, mine, keys.SCOPE_LOGS)
    reader = await new_key(stack, mine, keys.SCOPE_READ)
    victim = await new_key(stack, theirs, keys.SCOPE_LOGS)
    drain = WIRES["astralog"]

    # My project stores every hostile string as a message and as a service name.
    logs = [
        {
            "project_id": theirs,
            "timestamp": "2024-05-31T15:30:45Z",
            "level": "info",
            "service": h,
            "message": h,
        }
        for h in HOSTILE
    ]
    assert (await post(stack, stack.url, drain.path, orjson.dumps({"logs": logs}), drain.headers(writer)))[
        0
    ] == 200
    secret = orjson.dumps(
        {
            "logs": [
                {
                    "project_id": mine,
                    "timestamp": "2024-05-31T15:30:45Z",
                    "level": "error",
                    "service": "vault",
                    "message": "SECRET of b",
                }
            ]
            * 3
        }
    )
    assert (await post(stack, stack.url, drain.path, secret, drain.headers(victim)))[0] == 200
    assert await stack.wait_rows(mine, len(HOSTILE)) == len(HOSTILE)
    assert await stack.wait_rows(theirs, 3) == 3

    seen: set[str] = set()
    for name in ("q", "service", "level", "from", "to", "limit"):
        for value in HOSTILE:
            status, body = await read(stack, reader, {name: value})
            assert status in (200, 400), (name, value, body)
            if status == 200:
                assert {row["project"] for row in body["logs"]} <= {mine}, (name, value)
                seen.update(row["message"] for row in body["logs"])
            else:
                assert body["error"]["code"] == "VALIDATION_ERROR"
    assert "SECRET of b" not in seen

    # Bound, not spliced: each hostile string finds exactly the one log that holds it.
    for value in HOSTILE:
        for name in ("q", "service"):
            status, body = await read(stack, reader, {name: value})
            matches = [row["message"] for row in body["logs"]]
            if name == "service" or value not in ("\\",):  # '\\' is also a substring of two others
                assert matches == [value], (name, value, matches)
            else:
                assert value in matches

    # The project can be named neither directly nor twice over.
    for params in ([("project", theirs)], [("service", "vault"), ("service", "vault")]):
        status, body = await read(stack, reader, params)
        assert status == 400 or body["logs"] == [], (params, body)
    for bad in ({"limit": "1 OR 1=1"}, {"limit": "-1"}, {"limit": "1000000"}, {"level": "info,error'--"}):
        assert (await read(stack, reader, bad))[0] == 400
    # Nothing was dropped or changed by any of it.
    assert count(stack, "logs", theirs) == 3
    assert count(stack, "logs", mine) == len(HOSTILE)


@pytest.mark.parametrize("value", HOSTILE)
def test_compiled_sql_never_contains_user_input(value: str) -> None:
    query = LogQuery(project=value, levels=("info",), service=value, text=value, limit=10)
    sql, params = compile_logs(query)
    assert value not in sql
    assert value in params.values()  # it travels as a bound parameter instead


# -- client IP and X-Forwarded-For ---------------------------------------------------------------


async def _stored_ip(stack: Stack, url: str, gateway: Gateway | None, xff: str | None) -> str:
    project = f"xff-{uuid.uuid4().hex[:8]}"
    _, token = await keys.create(stack.settings, project, frozenset({keys.SCOPE_LOGS}))
    await (gateway or stack).wait_for_key(token)
    wire = WIRES["astralog"]
    headers = wire.headers(token) | ({"X-Forwarded-For": xff} if xff is not None else {})
    assert (await post(stack, url, wire.path, wire.body("ip", 1), headers))[0] == 200
    assert await stack.wait_rows(project, 1) == 1
    return str(stack.query("SELECT client_ip FROM logs WHERE project = {p:String}", p=project)[0][0])


async def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    stack: Stack, gateway_factory: Callable[..., Awaitable[Gateway]]
) -> None:
    # No trusted proxies (the default): the header is the client's word, and not taken.
    assert await _stored_ip(stack, stack.url, None, "203.0.113.9") == "127.0.0.1"
    # Proxies trusted, but not the peer that connected: still not taken.
    elsewhere = await gateway_factory(trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    assert await _stored_ip(stack, elsewhere.url, elsewhere, "203.0.113.9") == "127.0.0.1"


async def test_behind_a_trusted_proxy_the_nearest_untrusted_hop_is_the_client(
    stack: Stack, gateway_factory: Callable[..., Awaitable[Gateway]]
) -> None:
    proxied = await gateway_factory(
        trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))
    )
    assert await _stored_ip(stack, proxied.url, proxied, "203.0.113.9") == "203.0.113.9"
    # A client's own (spoofed) entry sits left of what our proxies appended: skipped.
    assert (
        await _stored_ip(stack, proxied.url, proxied, "198.51.100.66, 203.0.113.9, 10.1.2.3") == "203.0.113.9"
    )
    assert await _stored_ip(stack, proxied.url, proxied, "not-an-ip, 2001:db8::7") == "2001:db8::7"
    assert await _stored_ip(stack, proxied.url, proxied, None) == "127.0.0.1"


# -- secrets -------------------------------------------------------------------------------------


async def test_no_key_or_secret_reaches_the_logs(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    """Every log line of a 401, a 403, a success, a 429 and a read, structlog and stdlib alike
    (aiokafka's debug lines print whole envelopes, so a key in an envelope shows up here too)."""
    project = f"secrets-{uuid.uuid4().hex[:6]}"
    _, token = await keys.create(
        stack.settings,
        project,
        frozenset(keys.ALL_SCOPES),
        limits={keys.LIMIT_REQUESTS_PER_S: 0.01, keys.LIMIT_BURST_S: 200},  # two requests
    )
    reader = await new_key(stack, project, keys.SCOPE_READ)
    await stack.wait_for_key(token)
    wrong = "mr_" + token[3:15] + "_" + "W" * 43  # a real key id with a wrong secret
    drain, dynatrace = WIRES["astralog"], WIRES["dynatrace"]

    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as entries:
        answers = [
            await post(stack, stack.url, drain.path, drain.body("s", 1), drain.headers(wrong)),
            await post(stack, stack.url, drain.path, drain.body("s", 1), drain.headers(reader)),
            # Dynatrace may carry the key in the query string: the path logged must not.
            await post(stack, stack.url, f"{dynatrace.path}?api-token={token}", dynatrace.body("s", 1), {}),
            await post(stack, stack.url, drain.path, drain.body("s", 1), drain.headers(token)),
            await post(stack, stack.url, drain.path, drain.body("s", 1), drain.headers(token)),
        ]
        status, _ = await read(stack, reader, {"q": token})
    assert [a[0] for a in answers] == [401, 403, 204, 200, 429]
    assert status == 200

    request_ids = {a[2]["X-Request-Id"] for a in answers}
    logged_ids = {e.get("request_id") for e in entries}
    assert request_ids <= logged_ids, "the request lines were not captured, so this test would prove nothing"
    captured = [orjson.dumps(e, default=repr).decode() for e in entries]
    captured += [r.getMessage() + repr(r.args) for r in caplog.records]
    # mr_<key id>_<secret>: the secret is urlsafe base64 and may hold "_" itself, so it is
    # everything after the second "_" (rsplit once left a few letters that matched by chance).
    for secret in (token, reader, wrong, token.split("_", 2)[2], reader.split("_", 2)[2]):
        assert not [line for line in captured if secret in line]


async def test_keys_are_stored_only_as_hashes(stack: Stack) -> None:
    record, token = await keys.create(
        stack.settings, f"hashed-{uuid.uuid4().hex[:6]}", frozenset(keys.ALL_SCOPES)
    )
    tp = TopicPartition(stack.settings.keys_topic, 0)
    consumer = AIOKafkaConsumer(**client_options(stack.settings), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        values: list[bytes] = []
        while await consumer.position(tp) < end:
            for batch in (await consumer.getmany(tp, timeout_ms=500)).values():
                values.extend(r.value for r in batch if r.value is not None)
    finally:
        await consumer.stop()
    ours = [orjson.loads(v) for v in values if record.key_id.encode() in v]
    assert ours and all(v["key_hash"] == record.key_hash for v in ours)
    secret = token.split("_", 2)[2].encode()
    assert not [v for v in values if secret in v or token.encode() in v]


# -- the worker's internal read port ---------------------------------------------------------------


async def test_the_workers_read_port_refuses_reads_without_the_state_directorys_token(stack: Stack) -> None:
    """Loopback is not a boundary: a local process without the token file reads nothing."""
    base = stack.settings.worker_query_url
    query = {"project": "anyone", "limit": 10}
    async with stack.session.post(f"{base}/internal/v1/logs", data=orjson.dumps(query)) as resp:
        assert resp.status == 401
        assert orjson.loads(await resp.read())["error"]["code"] == "UNAUTHORIZED"
    async with stack.session.post(
        f"{base}/internal/v1/logs", data=orjson.dumps(query), headers={internal.HEADER: "guess"}
    ) as resp:
        assert resp.status == 401
    async with stack.session.post(
        f"{base}/internal/v1/read/usage", data=orjson.dumps({"project": "anyone"})
    ) as resp:
        assert resp.status == 401
    async with stack.session.get(f"{base}/internal/v1/stats?project=anyone") as resp:
        assert resp.status == 401  # per-project counts are tenant data too
    token = internal.ensure_token(stack.settings)
    assert internal.token_path(stack.settings).stat().st_mode & 0o777 == 0o600
    async with stack.session.post(
        f"{base}/internal/v1/logs", data=orjson.dumps(query), headers={internal.HEADER: token}
    ) as resp:
        assert resp.status == 200
        assert orjson.loads(await resp.read()) == {"logs": []}
    async with stack.session.get(f"{base}/internal/health") as resp:
        assert resp.status == 200  # health and metrics carry no tenant data


async def test_the_workers_stats_answer_counts_and_refuse_bad_input(stack: Stack) -> None:
    """What the bench's sampler reads: counts at the top level; bad input is a 400, not a 500."""
    tenant = await stack.tenant("stats-port")
    body = drain_body(["stats port one", "stats port two", "stats port three"])
    status, _, _ = await post(stack, stack.url, "/v1/drain", body, {"Authorization": tenant.key})
    assert status == 200
    assert await stack.wait_rows("stats-port", 3) == 3
    base = f"{stack.settings.worker_query_url}/internal/v1/stats"
    auth = {internal.HEADER: internal.ensure_token(stack.settings)}
    async with stack.session.get(f"{base}?project=stats-port&lag=0", headers=auth) as resp:
        assert resp.status == 200
        body = orjson.loads(await resp.read())
        assert body["logs"] == 3 and body["events"] == 0 and body["lag_ms"]["p99"] is None
    async with stack.session.get(f"{base}?project=stats-port", headers=auth) as resp:
        assert resp.status == 200
        assert orjson.loads(await resp.read())["lag_ms"]["p99"] >= 0
    for query in ("", "?project=", "?project=stats-port&since_ns=soon"):
        async with stack.session.get(f"{base}{query}", headers=auth) as resp:
            assert resp.status == 400, query
            assert orjson.loads(await resp.read())["error"]["code"] == "VALIDATION_ERROR"


def test_a_malformed_request_is_logged_as_one_line_without_its_bytes() -> None:
    """aiohttp quotes the bad header line in its exception: our filter keeps only the error class."""
    from aiohttp.http_exceptions import LineTooLong

    from millrace.log import ClientProtocolErrors

    secret = "mr_0123456789ab_" + "s" * 40
    try:
        raise LineTooLong(f"Authorization: {secret}", "16384")
    except LineTooLong:
        import sys

        record = logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("1.2.3.4",),
            sys.exc_info(),
        )
    assert ClientProtocolErrors().filter(record)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    text = record.getMessage()
    assert "LineTooLong" in text and secret not in text


async def test_a_store_failure_reaches_clients_without_the_engines_text(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read the engine fails answers 503, its message free of the exception's text."""
    token = await new_key(stack, f"storefail-{uuid.uuid4().hex[:6]}", keys.SCOPE_READ)

    def failing(*args: Any) -> Any:
        raise RuntimeError("DB::Exception: secret-path /var/lib/other-tenant")

    monkeypatch.setattr("workers.server.run_logs", failing)
    status, body = await read(stack, token, {})
    assert status == 503, body
    assert "secret-path" not in str(body) and "other-tenant" not in str(body)
