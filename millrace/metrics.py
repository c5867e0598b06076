"""Prometheus metrics of the gateway and the worker, served as text at `/metrics`.

One registry per process. The gateway fills the request-side metrics, the worker
the pipeline-side ones; a process exposes both families (the other side's stay at
zero), so one dashboard (deploy/grafana/millrace.json) reads every replica alike.

Labels are low-cardinality by construction: dialect names (a fixed registry), HTTP
status codes, stable error codes, table names and partition numbers. Never a
project, a key, a path with ids in it, or an exception's text.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Iterable
from typing import TypeVar

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

_Response = TypeVar("_Response", bound=web.StreamResponse)

# `*_created` timestamps double the series count and no dashboard query uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# --- gateway -------------------------------------------------------------------------------

REQUESTS = Counter(
    "millrace_requests",
    "Ingest requests answered, by dialect and HTTP status",
    ["dialect", "status"],
    registry=REGISTRY,
)
LOGS_ACCEPTED = Counter(
    "millrace_logs_accepted",
    "Logs (or events) acknowledged by Kafka and answered as accepted",
    ["dialect"],
    registry=REGISTRY,
)
LOGS_REJECTED = Counter(
    "millrace_logs_rejected",
    "Logs refused: each refused item of a partial success counts once (reason invalid_item, or "
    "rate_limited for an item answered 429 over the log rate); a request refused as a whole counts "
    "once, with a reason from its status (its log count is unknown)",
    ["dialect", "reason"],
    registry=REGISTRY,
)
REQUEST_BYTES = Counter(
    "millrace_request_bytes",
    "Request body bytes (after decompression) of requests answered with success",
    ["dialect"],
    registry=REGISTRY,
)
PRODUCE_SECONDS = Histogram(
    "millrace_produce_seconds",
    "Time from handing an envelope to the producer until Kafka acknowledged it (acks=all)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
KAFKA_ERRORS = Counter(
    "millrace_kafka_errors",
    "Kafka operations that failed, by kind (produce_timeout, produce_error)",
    ["kind"],
    registry=REGISTRY,
)
for _kind in ("produce_timeout", "produce_error"):
    KAFKA_ERRORS.labels(_kind)  # exported at 0 from the start, so rate() sees the first error

# --- worker --------------------------------------------------------------------------------

CONSUMER_LAG = Gauge(
    "millrace_consumer_lag",
    "Messages of the raw topic not yet fetched by this worker (high watermark - position), per partition",
    ["partition"],
    registry=REGISTRY,
)
BATCH_ROWS = Histogram(
    "millrace_batch_rows",
    "Rows per flushed batch",
    buckets=(1, 10, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000),
    registry=REGISTRY,
)
INSERT_SECONDS = Histogram(
    "millrace_insert_seconds",
    "Duration of one successful columnar insert into ClickHouse",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
INSERT_FAILURES = Counter(
    "millrace_insert_failures",
    "Insert attempts that failed (each is retried with backoff; nothing is committed meanwhile)",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "millrace_dead_letters",
    "Messages sent to the dead-letter topic, by stable error code",
    ["code"],
    registry=REGISTRY,
)
ROWS_INSERTED = Counter(
    "millrace_rows_inserted",
    "Rows inserted into ClickHouse, by table",
    ["table"],
    registry=REGISTRY,
)
ALERT_EVALUATIONS = Counter(
    "millrace_alert_evaluations",
    "Alert rule evaluations by this evaluator, by outcome (ok, failed: the rule waits and retries)",
    ["outcome"],
    registry=REGISTRY,
)
ALERT_TRANSITIONS = Counter(
    "millrace_alert_transitions",
    "Alert group transitions written (one alert_events row each), by the state entered",
    ["state"],
    registry=REGISTRY,
)
ALERT_WEBHOOKS = Counter(
    "millrace_alert_webhooks",
    "Webhook delivery attempts, by outcome (delivered; retrying: failed, tried again; failed: given up)",
    ["outcome"],
    registry=REGISTRY,
)

# A request refused as a whole: the reason follows from its status (the dialect's error body
# carries the exact code; this keeps the label set small and the same for every dialect).
_REFUSAL_REASONS = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    413: "too_large",
    415: "unsupported_encoding",
    422: "invalid",
    429: "rate_limited",
    501: "not_implemented",
    503: "unavailable",
}


@functools.cache
def _series(metric: Counter, *labels: str) -> Counter:
    """`metric.labels(*labels)`, looked up once: `labels()` validates and locks each call (~2.5 µs,
    four times a request). The label sets are bounded (see above), so is this cache."""
    return metric.labels(*labels)


def request_answered(dialect: str, status: int) -> None:
    """Count one ingest answer; a refusal (4xx/5xx) also counts as rejected logs."""
    _series(REQUESTS, dialect, str(status)).inc()
    if status >= 400:
        _series(LOGS_REJECTED, dialect, _REFUSAL_REASONS.get(status, "error")).inc()


def counted(dialect: str, response: _Response) -> _Response:
    """Count an ingest answer and hand it back (keeps the handlers' hook to one line)."""
    request_answered(dialect, response.status)
    return response


def request_parsed(dialect: str, body_bytes: int, accepted: int, rejected: int, over_rate: int = 0) -> None:
    """A request that was answered with success: its bytes, its accepted items, the items refused
    for themselves and those refused over the log rate (retryable: Elasticsearch's 429 items)."""
    _series(REQUEST_BYTES, dialect).inc(body_bytes)
    if accepted:
        _series(LOGS_ACCEPTED, dialect).inc(accepted)
    if rejected:
        _series(LOGS_REJECTED, dialect, "invalid_item").inc(rejected)
    if over_rate:
        _series(LOGS_REJECTED, dialect, "rate_limited").inc(over_rate)


def produce_failed(exc: BaseException) -> str:
    """Count a failed produce; returns its kind, which is also the log line's error code."""
    kind = "produce_timeout" if isinstance(exc, TimeoutError) else "produce_error"
    KAFKA_ERRORS.labels(kind).inc()
    return kind


def inserted(table: str, rows: int, seconds: float) -> None:
    INSERT_SECONDS.observe(seconds)
    ROWS_INSERTED.labels(table).inc(rows)


# The last lag update per consumer: the run loop polls every 100 ms, the gauge needs ~1 s.
_LAG_UPDATED: weakref.WeakKeyDictionary[AIOKafkaConsumer, float] = weakref.WeakKeyDictionary()
LAG_INTERVAL_S = 1.0


async def observe_lag(consumer: AIOKafkaConsumer, force: bool = False) -> None:
    """Set the lag gauge for the partitions this consumer holds (at most once a second)."""
    now = time.monotonic()
    if not force and now - _LAG_UPDATED.get(consumer, 0.0) < LAG_INTERVAL_S:
        return
    _LAG_UPDATED[consumer] = now
    for tp in consumer.assignment():
        try:
            highwater = consumer.highwater(tp)
            # position() waits while a fresh assignment has no position yet: never block the loop on it.
            position = await _position_now(consumer, tp)
        except Exception:  # the partition was revoked under us: the next update is correct again
            continue
        if highwater is not None and position is not None:
            CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwater - position))


async def _position_now(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    try:
        position: int = await asyncio.wait_for(consumer.position(tp), timeout=0.05)
    except TimeoutError:
        return None
    return position


def forget_lag(partitions: Iterable[TopicPartition]) -> None:
    """Drop the gauge of partitions this process no longer holds (another replica reports them)."""
    for tp in partitions:
        try:
            CONSUMER_LAG.remove(str(tp.partition))
        except KeyError:
            continue


def exposition() -> bytes:
    return generate_latest(REGISTRY)


async def handle(request: web.Request) -> web.Response:
    """`GET /metrics`: the Prometheus text format (0.0.4), or OpenMetrics when the scraper asks for it."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(REGISTRY), headers={"Content-Type": content_type})
