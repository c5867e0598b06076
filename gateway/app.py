"""The gateway application: routes, middlewares and the long-lived resources they share."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer

from gateway import alerts, explorer
from gateway.body import BodyError
from gateway.dialects import es_bulk as es_bulk_route
from gateway.dialects import hec as hec_route
from gateway.dialects import shared_logs as shared_logs_route
from gateway.dialects.astralog import ASTRALOG
from gateway.dialects.base import Dialect, Problem, bearer
from gateway.dialects.dynatrace import DYNATRACE
from gateway.dialects.es_bulk import ES_BULK
from gateway.dialects.goodlogs import GOODLOGS_EVENTS
from gateway.dialects.hec import HEC_EVENT, HEC_RAW
from gateway.dialects.loki import LOKI
from gateway.dialects.otlp import KEY_HEADER as OTLP_KEY_HEADER
from gateway.dialects.timberlogs import TIMBERLOGS
from gateway.ingest import REQUEST_ID, Handler, Ingestor, new_request_id
from gateway.read import ReadApi, ReadBackend, StoreReader, WorkerReader
from millrace import metrics
from millrace.config import Settings
from millrace.kafka.topics import envelope_producer
from millrace.keys import SCOPE_LOGS, KeyStore

log = structlog.get_logger()

SETTINGS = web.AppKey("settings", Settings)
PRODUCER = web.AppKey("producer", AIOKafkaProducer)
KEYS = web.AppKey("keys", KeyStore)
INGESTOR = web.AppKey("ingestor", Ingestor)
READ_API = web.AppKey("read_api", ReadApi)
ALERTS_API = web.AppKey("alerts_api", alerts.AlertsApi)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    except Exception:
        # A bug must cost one request, never the process; the id ties the answer to the log line.
        log.exception(
            "unhandled_error",
            code="internal_error",
            stage="receiving",
            path=request.path,
            request_id=request_id,
        )
        response = web.json_response(
            {"error": {"code": "INTERNAL_ERROR", "message": f"internal error (request {request_id})"}},
            status=500,
        )
    response.headers["X-Request-Id"] = request_id
    log.debug(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        ms=round((time.perf_counter() - started) * 1000, 2),
        request_id=request_id,
    )
    return response


def spread(key: bytes | None, partitions: list[int], available: list[int]) -> int:
    """Any partition whose leader is known (else any): envelopes carry a random request id as
    their key, so hashing it (aiokafka's default, murmur2 in Python: ~7 µs a request) only
    picked a random partition the dear way. Nothing reads an envelope's partition from its key."""
    return random.choice(available or partitions)


# One cleanup context per resource, started in this order and stopped in the reverse one:
# reads and ingest stop taking work, then the keys follower, then the producer flushes.
async def _producer(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    producer = envelope_producer(
        settings,
        linger_ms=settings.linger_ms,
        max_batch_size=settings.kafka_batch_bytes,
        compression_type=None if settings.kafka_compression == "none" else settings.kafka_compression,
        request_timeout_ms=int(settings.produce_timeout_s * 1000),
        partitioner=spread,
    )
    await producer.start()
    app[PRODUCER] = producer
    yield
    # Runs after the server stopped accepting and in-flight handlers finished:
    # flush what is still lingering in the producer, then let go of Kafka.
    await producer.flush()
    await producer.stop()
    log.info("gateway_stopped")


async def _keys(app: web.Application) -> AsyncIterator[None]:
    keys = KeyStore(app[SETTINGS])
    await keys.start()
    app[KEYS] = keys
    yield
    await keys.stop()


async def _handlers(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[INGESTOR] = Ingestor(settings, app[KEYS].ring, app[PRODUCER])
    reader: ReadBackend = WorkerReader(settings) if settings.embedded_store else StoreReader(settings)
    app[READ_API] = ReadApi(app[KEYS].ring, reader, app[INGESTOR].limits)
    app[ALERTS_API] = alerts.AlertsApi(
        app[READ_API], settings.alert_allow_private_targets, settings.worker_query_port
    )
    yield
    await reader.close()


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Ready when Kafka answers a metadata request now, not merely when it once did."""
    if not request.app[KEYS].following:  # a gateway that stopped following would honour revoked keys
        return web.json_response({"status": "unavailable", "keys": "not following"}, status=503)
    producer = request.app[PRODUCER]
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=2)
    except Exception as exc:
        return web.json_response(
            {"status": "unavailable", "kafka": f"unreachable: {type(exc).__name__}"}, status=503
        )
    return web.json_response({"status": "ready", "kafka": "ok", "keys": len(request.app[KEYS].ring)})


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_context],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[OTLP_KEY_HEADER] = settings.otlp_key_header
    app.cleanup_ctx.extend([_producer, _keys, _handlers])

    def ingest(dialect: Dialect) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return metrics.counted(dialect.name, await request.app[INGESTOR].ingest(request, dialect))

        return handle

    async def shared_logs(request: web.Request) -> web.StreamResponse:
        ingestor = request.app[INGESTOR]
        if (dialect := shared_logs_route.by_headers(request)) is not None:
            return metrics.counted(dialect.name, await ingestor.ingest(request, dialect))
        # Rule 5 needs the body, but every dialect left takes the key as Bearer with the same
        # scope: the key is checked and the bucket charged before the body is read (F1).
        token = bearer(request)
        admitted = ingestor.admit(token, SCOPE_LOGS)
        if isinstance(admitted, Problem):
            dialect = await shared_logs_route.choose_by_prefix(request, ingestor.settings)
            return metrics.counted(dialect.name, dialect.error(admitted))
        try:
            body = await ingestor.read(request)
        except BodyError as exc:
            return metrics.counted(
                TIMBERLOGS.name, TIMBERLOGS.error(Problem(exc.status, exc.code, exc.message))
            )
        chosen, document = shared_logs_route.choose(request, body)
        answer = await ingestor.admitted(request, chosen, admitted, token, body, document)
        return metrics.counted(chosen.name, answer)

    def hec(dialect: Dialect) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            early = hec_route.precheck(request)  # HEC tells a missing token from a malformed header
            if early is not None:
                return metrics.counted(dialect.name, early)
            # A channel asks for indexer acknowledgment: the success carries the ackId.
            chosen = hec_route.acking(dialect, request) if hec_route.channel(request) else dialect
            return metrics.counted(dialect.name, await request.app[INGESTOR].ingest(request, chosen))

        return handle

    async def hec_acks(request: web.Request) -> web.Response:
        return await hec_route.acks(request, request.app[INGESTOR], request.app[READ_API].backend)

    async def es_bulk(request: web.Request) -> web.StreamResponse:
        filters = es_bulk_route.request_filters(request)
        if isinstance(filters, Problem):
            # The key first, as Elasticsearch answers: a client without one learns that (401).
            admitted = request.app[INGESTOR].admit(ES_BULK.token(request), SCOPE_LOGS)
            refusal = admitted if isinstance(admitted, Problem) else filters
            return metrics.counted(ES_BULK.name, ES_BULK.error(refusal))
        answer = await request.app[INGESTOR].ingest(request, es_bulk_route.answering(filters))
        return metrics.counted(ES_BULK.name, answer)

    async def es_probe(request: web.Request) -> web.Response:
        admitted = request.app[INGESTOR].admit(ES_BULK.token(request), SCOPE_LOGS)
        if isinstance(admitted, Problem):
            return ES_BULK.error(admitted)
        filters = es_bulk_route.request_filters(request)
        if isinstance(filters, Problem):
            return ES_BULK.error(filters)
        return es_bulk_route.probe(request, filters)

    async def root(request: web.Request) -> web.Response:
        return await (es_probe if "Authorization" in request.headers else explorer.page)(request)

    async def read_logs(request: web.Request) -> web.Response:
        return await request.app[READ_API].logs(request)

    def read(name: str) -> Handler:
        # Looked up per request: READ_API exists only once the cleanup context has started.
        async def handle(request: web.Request) -> web.StreamResponse:
            method: Handler = getattr(request.app[READ_API], name)
            return await method(request)

        return handle

    app.router.add_post("/v1/drain", ingest(ASTRALOG))
    app.router.add_post("/v1/logs", shared_logs)
    app.router.add_post("/v1/events", ingest(GOODLOGS_EVENTS))
    app.router.add_post("/api/v2/logs/ingest", ingest(DYNATRACE))
    app.router.add_post("/loki/api/v1/push", ingest(LOKI))
    for path in ("/_bulk", "/{index}/_bulk"):
        app.router.add_post(path, es_bulk)
        app.router.add_put(path, es_bulk)
    for path in ("/services/collector", "/services/collector/event", "/services/collector/event/1.0"):
        app.router.add_post(path, hec(HEC_EVENT))
    for path in ("/services/collector/raw", "/services/collector/raw/1.0"):
        app.router.add_post(path, hec(HEC_RAW))
    for path in ("/services/collector/ack", "/services/collector/ack/1.0"):
        app.router.add_post(path, hec_acks)
    for path in ("/services/collector/health", "/services/collector/health/1.0"):
        app.router.add_get(path, hec_route.health)
    for path in ("/_license", "/_cluster/health"):
        app.router.add_get(path, es_probe)  # GET also answers HEAD
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics.handle)
    app.router.add_get("/api/v1/logs", read_logs)
    app.router.add_post("/v1/gql/query", read("gql_query"))
    app.router.add_post("/v1/gql", read("gql_batch"))
    app.router.add_get("/v1/gql/autocomplete", read("autocomplete"))
    app.router.add_get("/v1/schema", read("schema"))
    app.router.add_get("/v1/info", read("info"))

    def alerts_api(request: web.Request) -> alerts.AlertsApi:
        return request.app[ALERTS_API]

    app.router.add_get("/v1/alerts", alerts.handler(alerts_api, "index"))
    app.router.add_post("/v1/alerts", alerts.handler(alerts_api, "create"))
    app.router.add_get("/v1/alerts/{id}", alerts.handler(alerts_api, "show"))
    app.router.add_put("/v1/alerts/{id}", alerts.handler(alerts_api, "update"))
    app.router.add_delete("/v1/alerts/{id}", alerts.handler(alerts_api, "delete"))
    # GET / is the explorer's page for a browser and Elasticsearch's cluster info for a client
    # with a key (Elasticsearch clients always send theirs), so the explorer's routes are
    # added here, the root through `root`.
    app.router.add_get("/", root)
    app.router.add_get(explorer.PREFIX + "{name}", explorer.asset)
    return app
