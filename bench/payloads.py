"""Request bodies for every dialect, built from one stream of realistic log events.

Each generated log is what a busy web service emits: an HTTP access line, a slow query,
a cache miss, a payment failure with an error name, a few metadata keys (one nested, so
flattening is exercised), a request id and an ISO timestamp within a second or two of
now. An AstraLog log is 250-400 bytes of JSON, which is what the issue asks for.

Bodies are deterministic for a seed and are checked with the project's own parser before
any load is sent, so "acknowledged" always means "every log of it accepted". A pool is one
file of bodies split by the dialect's separator: a newline for the single-line JSON bodies
(Kafka's ProducerPerformance reads them one record per line), the ASCII record separator for
Elasticsearch `_bulk`, whose NDJSON bodies hold newlines of their own, and a 12-byte sequence
for OTLP protobuf, whose binary bodies may hold any single byte (`bodies` checks that none
holds its separator).
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.envelope import Envelope

SERVICES = (
    "api-gateway",
    "checkout-service",
    "auth-service",
    "payments",
    "inventory",
    "search-api",
    "notification-worker",
    "billing",
)
REGIONS = ("eu-west-1", "us-east-1", "us-west-2", "ap-southeast-2")
HOSTS = tuple(f"ip-10-0-{a}-{b}" for a in (1, 2, 3) for b in (11, 42, 97))
ROUTES = ("/api/v1/orders", "/api/v1/cart", "/api/v2/users/me", "/api/v1/search", "/healthz", "/api/v1/pay")
TABLES = ("orders", "order_items", "users", "sessions", "inventory_levels")
ERRORS = ("TimeoutError", "ConnectionResetError", "CardDeclined", "ValidationError", "DeadlockDetected")
# Weighted like production traffic: mostly info, a tail of warnings and errors.
LEVELS = ("debug",) * 8 + ("info",) * 70 + ("warn",) * 14 + ("error",) * 7 + ("fatal",)


@dataclass(frozen=True, slots=True)
class Event:
    """One dialect-neutral log event; each dialect renders it in its own shape."""

    ts_ms: int
    level: str
    service: str
    message: str
    host: str
    region: str
    request_id: str
    user_id: int
    duration_ms: float
    http: dict[str, Any]
    error: str | None


def _message(rng: random.Random, level: str, route: str, status: int, ms: float) -> tuple[str, str | None]:
    if level == "error" or level == "fatal":
        err = rng.choice(ERRORS)
        what = rng.choice(
            (
                f"Payment failed for order ord_{rng.randrange(10**7)}: {err} after {ms:.0f} ms",
                f"Unhandled {err} in {route} handler; request aborted",
                f"Upstream inventory call failed: {err} (attempt {rng.randint(1, 3)} of 3)",
            )
        )
        return what, err
    if level == "warn":
        return rng.choice(
            (
                f"Slow query on {rng.choice(TABLES)} took {ms:.0f} ms (threshold 250 ms)",
                f"Retrying publish to queue events-{rng.randrange(8)}: broker busy",
                f"Rate limit at 80% for tenant t_{rng.randrange(5000)}",
            )
        ), None
    if level == "debug":
        return f"Cache miss for key session:{rng.getrandbits(64):016x}; loading from store", None
    return rng.choice(
        (
            f"{rng.choice(('GET', 'POST', 'PUT'))} {route} {status} in {ms:.1f} ms",
            f"User {rng.randrange(10**6)} logged in via {rng.choice(('password', 'google', 'sso'))}",
            f"Order ord_{rng.randrange(10**7)} confirmed: {rng.randint(1, 9)} item(s), total {ms:.2f} EUR",
        )
    ), None


def events(rng: random.Random, n: int, now_ms: int | None = None) -> list[Event]:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out = []
    for _ in range(n):
        level = rng.choice(LEVELS)
        route = rng.choice(ROUTES)
        status = 500 if level in ("error", "fatal") else rng.choice((200, 200, 200, 201, 204, 304, 404))
        ms = round(rng.lognormvariate(3.2, 0.9), 1)
        message, error = _message(rng, level, route, status, ms)
        out.append(
            Event(
                ts_ms=now_ms - rng.randrange(2000),
                level=level,
                service=rng.choice(SERVICES),
                message=message,
                host=rng.choice(HOSTS),
                region=rng.choice(REGIONS),
                request_id=f"{rng.getrandbits(64):016x}",
                user_id=rng.randrange(1, 10**6),
                duration_ms=ms,
                http={"method": rng.choice(("GET", "POST")), "status": status, "route": route},
                error=error,
            )
        )
    return out


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def _ip(e: Event) -> str:
    return f"10.{e.user_id % 250}.{e.user_id // 250 % 250}.{e.user_id % 97}"


# -- one renderer per dialect ------------------------------------------------------------------


def _astralog(evs: list[Event]) -> bytes:
    logs = []
    for e in evs:
        meta: dict[str, Any] = {
            "user_id": e.user_id,
            "request_id": e.request_id,
            "ip": _ip(e),
            "region": e.region,
            "http": e.http,
            "duration_ms": e.duration_ms,
        }
        if e.error:
            meta["error"] = e.error
        logs.append(
            {
                "project_id": "org-bench",
                "timestamp": _iso(e.ts_ms),
                "level": e.level,
                "service": e.service,
                "message": e.message,
                "metadata": meta,
            }
        )
    return orjson.dumps({"logs": logs})


def _tg2g(evs: list[Event]) -> bytes:
    # One request describes one entity (TG2G's shape), so the batch takes the first event's service.
    service = evs[0].service if evs else "bench"
    logs = [
        {
            "timestamp": _iso(e.ts_ms),
            "level": e.level,
            "message": e.message,
            "requestId": e.request_id,
            "userId": str(e.user_id),
            "region": e.region,
            "host": e.host,
            "http": e.http,
            "durationMs": e.duration_ms,
        }
        for e in evs
    ]
    entity = {"name": service, "kind": "service", "tags": ["prod", "bench"]}
    return orjson.dumps({"source": service, "entity": entity, "logs": logs})


def _goodlogs(evs: list[Event]) -> bytes:
    batch = [
        {
            "severity": e.level,
            "message": e.message,
            "timestamp": _iso(e.ts_ms),
            "properties": {
                "service": e.service,
                "env": "prod",
                "requestId": e.request_id,
                "userId": e.user_id,
                "region": e.region,
                "http": e.http,
                "duration_ms": e.duration_ms,
            },
        }
        for e in evs
    ]
    return orjson.dumps({"batch": batch})


def _timberlogs(evs: list[Event]) -> bytes:
    logs = []
    for e in evs:
        item: dict[str, Any] = {
            "level": "error" if e.level == "fatal" else e.level,  # its schema has no fatal
            "message": e.message,
            "source": e.service,
            "environment": "production",
            "timestamp": e.ts_ms,
            "requestId": e.request_id,
            "userId": str(e.user_id),
            "tags": ["bench", e.region],
            "data": {"host": e.host, "http": e.http, "duration_ms": e.duration_ms},
        }
        if e.error:
            item["errorName"] = e.error
        logs.append(item)
    return orjson.dumps({"logs": logs})


def _dynatrace(evs: list[Event]) -> bytes:
    return orjson.dumps(
        [
            {
                "content": e.message,
                "timestamp": _iso(e.ts_ms),
                "severity": e.level,
                "log.source": f"/var/log/{e.service}.log",
                "service.name": e.service,
                "host.name": e.host,
                "trace_id": f"{e.request_id}{e.request_id}",
                "user.id": str(e.user_id),
                "http.status_code": e.http["status"],
                "duration_ms": e.duration_ms,
            }
            for e in evs
        ]
    )


def _loki(evs: list[Event]) -> bytes:
    # Loki batches lines per label set: one stream per (service, level, host), as Promtail would.
    streams: dict[tuple[str, str, str], list[list[Any]]] = {}
    for e in evs:
        metadata = {"request_id": e.request_id, "user_id": str(e.user_id), "region": e.region}
        line = f"{e.message} status={e.http['status']} duration_ms={e.duration_ms}"
        streams.setdefault((e.service, e.level, e.host), []).append([str(e.ts_ms * 10**6), line, metadata])
    return orjson.dumps(
        {
            "streams": [
                {"stream": {"service_name": svc, "level": lvl, "host": host, "env": "prod"}, "values": values}
                for (svc, lvl, host), values in streams.items()
            ]
        }
    )


def _hec(evs: list[Event]) -> bytes:
    # Concatenated events on one line, as splunk-handler sends them.
    return b"".join(
        orjson.dumps(
            {
                "time": e.ts_ms / 1000,
                "host": e.host,
                "source": f"/var/log/{e.service}.log",
                "sourcetype": "_json",
                "index": "main",
                "event": {
                    "message": e.message,
                    "level": e.level,
                    "http": e.http,
                    "duration_ms": e.duration_ms,
                },
                "fields": {"service": e.service, "request_id": e.request_id, "region": e.region},
            }
        )
        for e in evs
    )


def _es_bulk(evs: list[Event]) -> bytes:
    # ECS documents after a bare `create` action (the index is the path's), as Filebeat and
    # Fluent Bit's `es` output send them.
    lines: list[bytes] = []
    for e in evs:
        doc: dict[str, Any] = {
            "@timestamp": _iso(e.ts_ms),
            "message": e.message,
            "log": {"level": e.level, "logger": e.service},
            "service": {"name": e.service, "environment": "prod"},
            "host": {"name": e.host},
            "cloud": {"region": e.region},
            "http": e.http,
            "user": {"id": str(e.user_id)},
            "transaction": {"id": e.request_id},
            "event": {"duration": int(e.duration_ms * 1_000_000)},
        }
        if e.error:
            doc["error"] = {"type": e.error}
        lines.append(b'{"create":{}}')
        lines.append(orjson.dumps(doc))
    return b"\n".join(lines) + b"\n"


def _any(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": _any(v)} for k, v in value.items()]}}
    return {"stringValue": str(value)}


_OTEL_SEVERITY = {"debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}


def _otlp(evs: list[Event]) -> bytes:
    # OTLP JSON: one resource per service, as an SDK per process would send.
    by_service: dict[str, list[dict[str, Any]]] = {}
    for e in evs:
        attributes = {
            "request_id": e.request_id,
            "user.id": e.user_id,
            "http": e.http,
            "duration_ms": e.duration_ms,
        }
        by_service.setdefault(e.service, []).append(
            {
                "timeUnixNano": str(e.ts_ms * 10**6),
                "severityNumber": _OTEL_SEVERITY[e.level],
                "severityText": e.level.upper(),
                "body": {"stringValue": e.message},
                "attributes": [{"key": k, "value": _any(v)} for k, v in attributes.items()],
            }
        )
    resource_logs = [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
            "scopeLogs": [{"scope": {"name": "bench"}, "logRecords": records}],
        }
        for svc, records in by_service.items()
    ]
    return orjson.dumps({"resourceLogs": resource_logs})


def _otlp_protobuf(evs: list[Event]) -> bytes:
    # The same request as `_otlp`, in the encoding the OTel SDKs' and the Collector's
    # `otlphttp` exporters send by default.
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = json_format.Parse(_otlp(evs), ExportLogsServiceRequest())
    data: bytes = request.SerializeToString()
    return data


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str  # the --dialect value
    parser: str  # key of formats.PARSERS, i.e. the dialect the gateway routes it to
    path: str
    content_type: str
    auth: Callable[[str], dict[str, str]]
    render: Callable[[list[Event]], bytes]
    max_batch: int | None = None  # the dialect's own documented cap on logs per request
    separator: bytes = b"\n"  # between bodies in a pool file (never inside one)


DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        Dialect(
            "astralog", "astralog", "/v1/drain", "application/json", lambda k: {"Authorization": k}, _astralog
        ),
        Dialect("tg2g", "tg2g", "/v1/logs", "application/json", lambda k: {"X-TG2G-Api-Key": k}, _tg2g),
        Dialect(
            "goodlogs",
            "goodlogs_logs",
            "/v1/logs",
            "application/json",
            lambda k: {"Authorization": f"Bearer {k}"},
            _goodlogs,
            max_batch=500,
        ),
        Dialect(
            "timberlogs",
            "timberlogs",
            "/v1/logs",
            "application/json",
            lambda k: {"Authorization": f"Bearer {k}"},
            _timberlogs,
            max_batch=100,
        ),
        Dialect(
            "dynatrace",
            "dynatrace",
            "/api/v2/logs/ingest",
            "application/json; charset=utf-8",
            lambda k: {"Authorization": f"Api-Token {k}"},
            _dynatrace,
        ),
        Dialect(
            "loki",
            "loki",
            "/loki/api/v1/push",
            "application/json",
            lambda k: {"Authorization": f"Bearer {k}"},
            _loki,
        ),
        Dialect(
            "hec",
            "hec_event",
            "/services/collector/event",
            "application/json",
            lambda k: {"Authorization": f"Splunk {k}"},
            _hec,
        ),
        Dialect(
            "otlp", "otlp", "/v1/logs", "application/json", lambda k: {"Authorization": f"Bearer {k}"}, _otlp
        ),
        Dialect(
            "otlp_protobuf",
            "otlp",
            "/v1/logs",
            "application/x-protobuf",
            lambda k: {"Authorization": f"Bearer {k}"},
            _otlp_protobuf,
            separator=b"\x1e\x1dMILLRACE\x1d\x1e",
        ),
        Dialect(
            "es_bulk",
            "es_bulk",
            "/logs-bench/_bulk",
            "application/x-ndjson",
            lambda k: {"Authorization": "ApiKey " + base64.b64encode(f"bench:{k}".encode()).decode()},
            _es_bulk,
            separator=b"\x1e",
        ),
    )
}


def batch_size(dialect: Dialect, requested: int) -> int:
    """The requested logs per request, capped at the dialect's documented maximum."""
    return min(requested, dialect.max_batch) if dialect.max_batch else requested


USER_AGENT = "millrace-bench/2 (python asyncio)"


def headers(dialect: Dialect, key: str, gzip: bool = False) -> dict[str, str]:
    out = {"Content-Type": dialect.content_type, "User-Agent": USER_AGENT}
    out.update(dialect.auth(key))
    if gzip:
        out["Content-Encoding"] = "gzip"
    return out


def bodies(dialect: Dialect, logs_per_body: int, count: int, seed: int = 1) -> list[bytes]:
    """`count` distinct bodies of `logs_per_body` logs each (none holding its dialect's separator)."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    out = [dialect.render(events(rng, logs_per_body, now_ms)) for _ in range(count)]
    assert all(dialect.separator not in b for b in out), "a body holds its pool file's separator"
    return out


def pool_bytes(dialect: Dialect, bodies: list[bytes]) -> bytes:
    """Bodies as one pool file: the load processes and the baselines split it again (read_pool)."""
    return dialect.separator.join(bodies) + dialect.separator


def read_pool(dialect: Dialect, data: bytes) -> list[bytes]:
    return [b for b in data.split(dialect.separator) if b]


def check(dialect: Dialect, body: bytes, logs_per_body: int) -> None:
    """The project's own parser accepts every log of `body`; raise ValueError if not."""
    from formats import PARSERS, ParseContext

    ctx = ParseContext(received_at_ns=time.time_ns(), path=dialect.path, content_type=dialect.content_type)
    parsed = PARSERS[dialect.parser](body, ctx)
    if parsed.rejected or len(parsed.rows) != logs_per_body:
        raise ValueError(
            f"{dialect.name} payload: {len(parsed.rows)} rows, {len(parsed.rejected)} rejected "
            f"(expected {logs_per_body} rows): {parsed.rejected[:3]}"
        )


def envelope(dialect: Dialect, body: bytes, index: int, project: str, received_at_ns: int) -> Envelope:
    """The envelope the gateway would produce for `body`: what the worker-side benches consume."""
    from formats import PARSERS, ParseContext
    from schemas import rows

    ctx = ParseContext(
        received_at_ns=received_at_ns,
        path=dialect.path,
        content_type=dialect.content_type,
        user_agent=USER_AGENT,
        client_ip="127.0.0.1",
    )
    parsed = PARSERS[dialect.parser](body, ctx)
    return Envelope(
        request_id=f"{index:024x}",
        project=project,
        key_id="bench",
        dialect=dialect.parser,
        path=dialect.path,
        content_type=dialect.content_type,
        user_agent=USER_AGENT,
        client_ip="127.0.0.1",
        received_at_ns=received_at_ns,
        body=rows.encode(parsed.rows),
        table=parsed.table,
        rows=len(parsed.rows),
    )
