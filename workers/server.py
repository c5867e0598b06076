"""The worker process: owns the store connection, runs the pipeline, serves reads in embedded mode.

In embedded mode (chdb://) this process is the only one that may open the engine's
data path, so it also answers the gateway's read queries on a loopback port. The
read handle is separate from the insert handle (chDB allows several handles on one
engine), so a slow query never holds up an insert.
"""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Callable
from typing import Any

import orjson
import structlog
import uvloop
from aiohttp import web

from millrace import alert_store, internal, metrics, store
from millrace.config import Settings
from millrace.gc_tuning import tune_gc
from reads.query import LogQuery, QueryError, project_stats, read_call, run_logs
from reads.slots import ProjectPool, ReadsBusy
from workers import pipeline
from workers.flood import FloodGuard

log = structlog.get_logger()


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def read_app(settings: Settings, flood: FloodGuard | None = None) -> web.Application:
    """The worker's internal port: health and metrics always; reads only where the engine is ours."""
    app = web.Application()

    async def health(request: web.Request) -> web.Response:
        if flood is not None and flood.tripped is not None:
            # Not healthy: the flood guard stopped consumption (README "Dead letters").
            return web.json_response({"status": "halted", **flood.tripped}, status=503)
        return web.json_response({"status": "ok"})

    app.router.add_get("/internal/health", health)
    app.router.add_get("/metrics", metrics.handle)
    if not settings.embedded_store:
        return app
    # Reads need the state directory's token; health and metrics stay open (millrace/internal.py).
    app.middlewares.append(internal.guard(internal.ensure_token(settings)))
    client = store.connect(settings, create_database=False)
    # Two threads, one per project at most: one tenant's slow queries leave the other free.
    pool = ProjectPool(threads=2)

    async def answer(
        request: web.Request, project: str, key: str | None, fn: Callable[..., Any], *args: Any
    ) -> web.Response:
        """Run one read of `project` in the pool: bad input is the caller's 400, a project over its
        share of the pool 429, anything else our 500. The result goes under `key`, or is the
        whole answer when `key` is None."""
        try:
            result = await pool.run(project, fn, client, *args)
        except ReadsBusy as exc:
            return web.Response(
                status=429,
                body=orjson.dumps({"error": {"code": "RATE_LIMITED", "message": str(exc)}}),
                content_type="application/json",
                headers={"Retry-After": str(exc.retry_after)},
            )
        except (QueryError, KeyError, TypeError, ValueError) as exc:
            return _json(400, {"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
        except Exception as exc:
            log.exception(
                "read_failed",
                code="read_failed",
                stage="processing",
                request_id=request.headers.get("X-Request-Id", ""),
            )
            # The engine's text (SQL, paths, other tenants' values) stays in the worker's log.
            message = f"the read failed ({type(exc).__name__}); see the worker's log for read_failed"
            return _json(500, {"error": {"code": "INTERNAL_ERROR", "message": message}})
        return _json(200, result if key is None else {key: result})

    async def logs(request: web.Request) -> web.Response:
        try:
            query = LogQuery.from_dict(orjson.loads(await request.read()))
        except (QueryError, TypeError, orjson.JSONDecodeError) as exc:
            return _json(400, {"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
        return await answer(request, query.project, "logs", run_logs, query)

    async def read(request: web.Request) -> web.Response:
        """GoodLogs reads (gql, schema, usage): `reads.query.read_call`, for the gateway."""
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json(400, {"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
        project = payload.get("project") if isinstance(payload, dict) else None
        op = request.match_info["op"]
        return await answer(request, str(project), "result", read_call, op, payload)

    async def alerts(request: web.Request) -> web.Response:
        """Alert rules, state, events and deliveries (`millrace.alert_store.call`), for the
        gateway's rules API and the evaluator: they may not open this engine themselves."""
        try:
            payload = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json(400, {"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
        if not isinstance(payload, dict):
            return _json(400, {"error": {"code": "VALIDATION_ERROR", "message": "a JSON object, please"}})
        # The evaluator's all-projects reads share one slot of their own.
        project = str(payload.get("project") or "_alerts")
        return await answer(request, project, "result", alert_store.call, request.match_info["op"], payload)

    async def close(app: web.Application) -> None:
        pool.shutdown()
        client.close()

    async def stats(request: web.Request) -> web.Response:
        """Counts (and the lag) of one project, at the top level of the answer (the bench's sampler)."""
        project = request.query.get("project", "")
        try:
            since = int(request.query.get("since_ns", "0"))
        except ValueError:
            return _json(400, {"error": {"code": "VALIDATION_ERROR", "message": "since_ns: an integer"}})
        if not project:
            return _json(400, {"error": {"code": "VALIDATION_ERROR", "message": "stats need a project"}})
        lag = request.query.get("lag", "1") != "0"
        return await answer(request, project, None, functools.partial(project_stats, lag=lag), project, since)

    app.router.add_post("/internal/v1/logs", logs)
    app.router.add_post("/internal/v1/read/{op}", read)
    app.router.add_post("/internal/v1/alerts/{op}", alerts)
    app.router.add_get("/internal/v1/stats", stats)
    app.on_cleanup.append(close)
    return app


async def main(settings: Settings) -> None:
    tune_gc()
    client = await asyncio.to_thread(store.connect, settings)
    await asyncio.to_thread(store.migrate, client, settings.clickhouse_cluster)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    flood = FloodGuard.from_settings(settings)
    runner = web.AppRunner(read_app(settings, flood), access_log=None)
    await runner.setup()
    # MILLRACE_WORKER_HOST: loopback in embedded mode (config enforces it), 0.0.0.0 for scraping.
    await web.TCPSite(runner, settings.worker_host, settings.worker_query_port).start()
    log.info("worker_internal_port", host=settings.worker_host, port=settings.worker_query_port)
    try:
        await pipeline.run(settings, client, stop, flood)
    finally:
        await runner.cleanup()
        client.close()


def serve(settings: Settings) -> None:
    uvloop.run(main(settings))
