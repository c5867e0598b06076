"""The spine end to end: AstraLog over HTTP -> Kafka -> worker -> ClickHouse -> read API."""

from __future__ import annotations

import gzip
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from reads.query import project_stats
from tests import bodies
from tests.conftest import Stack
from tests.seeds import curl_examples

pytestmark = pytest.mark.integration

BROWSER_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36"
)


def drain_body(project_marker: str, n: int = 1, **overrides: Any) -> bytes:
    messages = (f"{project_marker} #{i}" for i in range(n))
    return bodies.drain_body(messages, project_id="org-xyz", service="api-gateway", **overrides)


async def post(stack: Stack, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with stack.session.post(stack.url + path, data=body, headers=headers) as resp:
        raw = await resp.read()
        return resp.status, (orjson.loads(raw) if raw else None)


async def read_logs(stack: Stack, key: str, expect: int = 200, **params: str) -> tuple[int, Any]:
    async with stack.session.get(
        stack.url + "/api/v1/logs", params=params, headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        body = orjson.loads(await resp.read())
        assert expect == resp.status, body
        return resp.status, body


async def test_seed_example_is_stored_with_every_field_and_readable(stack: Stack) -> None:
    """The AstraLog curl example, sent verbatim but for host and key, lands with every field right."""
    tenant = await stack.tenant("spine-seed")
    (example,) = curl_examples("001")
    headers = {**example.headers, "Authorization": tenant.key, "User-Agent": BROWSER_UA}

    status, body = await post(stack, example.path, example.body, headers)

    assert (status, body) == (200, {"status": "accepted"})
    assert await stack.wait_rows("spine-seed", 1) == 1
    row = dict(
        zip(
            (
                "project",
                "ts",
                "level",
                "severity_text",
                "service",
                "message",
                "attributes",
                "browser",
                "os",
                "device",
                "client_ip",
                "dialect",
            ),
            stack.query(
                "SELECT project, toUnixTimestamp64Nano(timestamp), level, severity_text, service, message, "
                "attributes, ua_browser, ua_os, ua_device, client_ip, dialect "
                "FROM logs WHERE project = {p:String}",
                p="spine-seed",
            )[0],
            strict=True,
        )
    )
    assert row == {
        "project": "spine-seed",
        "ts": int(datetime(2024, 5, 31, 15, 30, 45, tzinfo=UTC).timestamp()) * 10**9,
        "level": "info",
        "severity_text": "info",
        "service": "api-gateway",
        "message": "User logged in",
        "attributes": {"user_id": "123", "ip": "1.1.1.1", "project_id": "org-xyz"},
        "browser": "Chrome 125",
        "os": "macOS 14",
        "device": "Desktop",
        "client_ip": "127.0.0.1",
        "dialect": "astralog",
    }

    status, page = await read_logs(stack, tenant.read_key)
    assert status == 200
    (log,) = page["logs"]
    assert log["timestamp"] == "2024-05-31T15:30:45.000000000Z"
    assert (log["level"], log["service"], log["message"]) == ("info", "api-gateway", "User logged in")
    assert log["attributes"] == {"user_id": "123", "ip": "1.1.1.1", "project_id": "org-xyz"}
    assert (
        log["ua_browser"],
        log["ua_os"],
        log["ua_device"],
        log["client_ip"],
    ) == ("Chrome 125", "macOS 14", "Desktop", "127.0.0.1")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "my-secret-token"}, {"Authorization": "mr_000000000000_" + "x" * 43}],
    ids=["missing", "unknown", "well-formed-but-wrong"],
)
async def test_wrong_or_missing_key_is_401_and_nothing_is_stored(
    stack: Stack, headers: dict[str, str]
) -> None:
    marker = f"unauth-{uuid.uuid4().hex}"
    status, body = await post(stack, "/v1/drain", drain_body(marker), headers)
    assert status == 401
    assert body["status"] == "error"
    await _assert_never_stored(stack, marker)


@pytest.mark.parametrize(
    ("make_body", "needle"),
    [
        (lambda m: b'{"logs": [{"message": "' + m.encode() + b'"', "not valid JSON"),
        (lambda m: drain_body(m, 3).replace(b'"service":"api-gateway",', b"", 1), "service"),
        (lambda m: drain_body(m, timestamp="yesterday-ish"), "timestamp"),
        (lambda m: drain_body(m, level=7), "level"),
        (lambda m: orjson.dumps({"entries": [m]}), "logs"),
    ],
    ids=["invalid-json", "missing-service", "bad-timestamp", "level-not-string", "no-logs-array"],
)
async def test_bad_body_is_400_naming_the_problem_and_nothing_is_stored(
    stack: Stack, make_body: Any, needle: str
) -> None:
    tenant = await stack.tenant(f"bad-{uuid.uuid4().hex[:8]}")
    marker = f"bad-{uuid.uuid4().hex}"
    status, body = await post(stack, "/v1/drain", make_body(marker), {"Authorization": tenant.key})
    assert status == 400
    assert needle in body["error"]
    await _assert_never_stored(stack, marker)


async def test_gzip_body_is_accepted_and_oversized_body_is_413(stack: Stack) -> None:
    tenant = await stack.tenant("spine-gzip")
    status, body = await post(
        stack,
        "/v1/drain",
        gzip.compress(drain_body("zipped", 5)),
        {"Authorization": tenant.key, "Content-Encoding": "gzip"},
    )
    assert status == 200, body
    assert await stack.wait_rows("spine-gzip", 5) == 5

    bomb = gzip.compress(b" " * (stack.settings.max_decompressed_bytes + 1))
    status, body = await post(
        stack, "/v1/drain", bomb, {"Authorization": tenant.key, "Content-Encoding": "gzip"}
    )
    assert status == 413
    assert "decompressed" in body["error"]

    too_big = b" " * (stack.settings.max_body_bytes + 1)
    status, _ = await post(stack, "/v1/drain", too_big, {"Authorization": tenant.key})
    assert status == 413


async def test_worker_restart_between_batches_stores_every_log_exactly_once(stack: Stack) -> None:
    tenant = await stack.tenant("spine-restart")
    for i in range(5):
        status, _ = await post(
            stack, "/v1/drain", drain_body(f"first-{i}", 20), {"Authorization": tenant.key}
        )
        assert status == 200
    assert await stack.wait_rows("spine-restart", 100) == 100

    await stack.restart_worker()
    for i in range(5):
        status, _ = await post(
            stack, "/v1/drain", drain_body(f"second-{i}", 20), {"Authorization": tenant.key}
        )
        assert status == 200

    assert await stack.wait_rows("spine-restart", 200) == 200
    ((distinct,),) = stack.query(
        "SELECT uniqExact(message) FROM logs WHERE project = {p:String}", p="spine-restart"
    )
    assert distinct == 200


async def test_a_key_reads_only_its_own_project(stack: Stack) -> None:
    a = await stack.tenant("tenant-a")
    b = await stack.tenant("tenant-b")
    assert (await post(stack, "/v1/drain", drain_body("secret-of-b", 3), {"Authorization": b.key}))[0] == 200
    assert await stack.wait_rows("tenant-b", 3) == 3

    status, page = await read_logs(stack, a.read_key, q="secret-of-b")
    assert (status, page["logs"]) == (200, [])
    status, page = await read_logs(stack, b.read_key, q="secret-of-b")
    assert len(page["logs"]) == 3
    assert {"tenant-b"} == {log["project"] for log in page["logs"]}


async def test_read_api_filters_and_scopes(stack: Stack) -> None:
    tenant = await stack.tenant("spine-read")
    body = orjson.dumps(
        {
            "logs": [
                {
                    "project_id": "p",
                    "timestamp": "2024-05-31T10:00:00Z",
                    "level": "error",
                    "service": "billing",
                    "message": "card declined",
                },
                {
                    "project_id": "p",
                    "timestamp": "2024-05-31 11:00:00",
                    "level": "info",
                    "service": "auth",
                    "message": "login ok",
                },
                {
                    "project_id": "p",
                    "timestamp": "2024-05-31T12:00:00.250+02:00",
                    "level": "WARNING",
                    "service": "auth",
                    "message": "slow login",
                },
            ]
        }
    )
    assert (await post(stack, "/v1/drain", body, {"Authorization": tenant.key}))[0] == 200
    assert await stack.wait_rows("spine-read", 3) == 3

    _, page = await read_logs(stack, tenant.read_key)
    assert [log["message"] for log in page["logs"]] == ["login ok", "slow login", "card declined"]
    _, page = await read_logs(stack, tenant.read_key, level="warn,error")
    assert [log["message"] for log in page["logs"]] == ["slow login", "card declined"]
    _, page = await read_logs(stack, tenant.read_key, service="auth", limit="1")
    assert [log["message"] for log in page["logs"]] == ["login ok"]
    _, page = await read_logs(
        stack, tenant.read_key, **{"from": "2024-05-31T10:30:00Z", "to": "2024-05-31T11:30"}
    )
    assert [log["message"] for log in page["logs"]] == ["login ok"]
    _, page = await read_logs(stack, tenant.read_key, q="DECLINED")
    assert [log["message"] for log in page["logs"]] == ["card declined"]

    status, err = await read_logs(stack, tenant.read_key, 400, limit="nope")
    assert status == 400 and "limit" in err["error"]["message"]
    status, err = await read_logs(stack, tenant.read_key, 400, project="tenant-a")
    assert status == 400 and "project" in err["error"]["message"]
    # An ingest-only key cannot read; a read-only key cannot ingest.
    ingest_only = await stack.tenant("spine-read", frozenset({"logs:write"}))
    status, err = await read_logs(stack, ingest_only.key, 403)
    assert (status, err["error"]["code"]) == (403, "FORBIDDEN")
    status, _ = await post(stack, "/v1/drain", drain_body("x"), {"Authorization": tenant.read_key})
    assert status == 403


async def test_health_and_readiness(stack: Stack) -> None:
    async with stack.session.get(stack.url + "/health") as resp:
        assert resp.status == 200
    async with stack.session.get(stack.url + "/ready") as resp:
        assert resp.status == 200
        assert (await resp.json())["kafka"] == "ok"


async def _assert_never_stored(stack: Stack, marker: str) -> None:
    # The worker flushes every 200 ms in tests: wait several flushes before concluding.
    import asyncio

    await asyncio.sleep(1.0)
    ((count,),) = stack.query("SELECT count() FROM logs WHERE position(message, {m:String}) > 0", m=marker)
    assert count == 0


async def test_project_stats_count_with_and_without_the_lag(stack: Stack) -> None:
    """The operators' and the bench's stats: counts alone (`lag=False`) or with the lag quantiles."""
    tenant = await stack.tenant("spine-stats")
    status, _ = await post(stack, "/v1/drain", drain_body("stats", 7), {"Authorization": tenant.key})
    assert status == 200
    assert await stack.wait_rows("spine-stats", 7) == 7

    full = project_stats(stack.client, "spine-stats")
    counts = project_stats(stack.client, "spine-stats", lag=False)
    assert full["logs"] == counts["logs"] == 7
    assert full["lag_ms"]["p50"] is not None and full["lag_ms"]["max"] >= full["lag_ms"]["p50"] >= 0
    assert counts["lag_ms"] == {"p50": None, "p99": None, "max": None}
    later = project_stats(stack.client, "spine-stats", since_ns=time.time_ns() + 10**12, lag=False)
    assert later["logs"] == 0


async def test_requests_spread_over_the_partitions_and_each_request_stays_in_one(stack: Stack) -> None:
    """The gateway picks any partition for a request (`gateway.app.spread`), never splits one."""
    tenant = await stack.tenant("spine-spread")
    headers = {"Authorization": tenant.key, "Content-Type": "application/json"}
    for i in range(24):
        status, _ = await post(stack, "/v1/drain", drain_body(f"spread-{i}", n=3), headers)
        assert status == 200
    assert await stack.wait_rows("spine-spread", 72) == 72
    placed = stack.query(
        "SELECT ingest_id, groupUniqArray(kafka_partition) FROM logs "
        "WHERE project = {p:String} GROUP BY ingest_id",
        p="spine-spread",
    )
    assert len(placed) == 24 and all(len(parts) == 1 for _, parts in placed)
    used = {parts[0] for _, parts in placed}
    # 24 requests over the topic's partitions: all in one would be (1/4)^23 by chance.
    assert stack.settings.partitions > 1 and len(used) > 1
