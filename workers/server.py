"""The worker process: owns the store connection, runs the pipeline, serves reads in embedded mode.

In embedded mode (chdb://) this process is the only one that may open the engine's
data path, so it also answers the gateway's read queries on a loopback port. The
read handle is separate from the insert handle (chDB allows several handles on one
engine), so a slow query never holds up an insert.
"""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

import orjson
import structlog
import uvloop
from aiohttp import web

from millrace import store
from millrace.config import Settings
from millrace.query import LogQuery, QueryError, project_stats, run_logs
from workers import pipeline

log = structlog.get_logger()


def read_app(settings: Settings) -> web.Application:
    """The worker's loopback port: health always, reads only where the engine is ours (embedded)."""
    app = web.Application()

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/internal/health", health)
    if not settings.embedded_store:
        return app
    client = store.connect(settings, create_database=False)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="read")

    async def logs(request: web.Request) -> web.Response:
        try:
            query = LogQuery.from_dict(orjson.loads(await request.read()))
            rows = await asyncio.get_running_loop().run_in_executor(pool, run_logs, client, query)
        except (QueryError, TypeError, orjson.JSONDecodeError) as exc:
            body = {"error": {"code": "VALIDATION_ERROR", "message": str(exc)}}
            return web.Response(status=400, body=orjson.dumps(body), content_type="application/json")
        except Exception as exc:
            log.exception("read_failed", stage="processing")
            body = {"error": {"code": "INTERNAL_ERROR", "message": str(exc)[:500]}}
            return web.Response(status=500, body=orjson.dumps(body), content_type="application/json")
        return web.Response(body=orjson.dumps({"logs": rows}), content_type="application/json")

    async def close(app: web.Application) -> None:
        pool.shutdown(wait=False)
        client.close()

    async def stats(request: web.Request) -> web.Response:
        project = request.query.get("project", "")
        try:
            since = int(request.query.get("since_ns", "0"))
        except ValueError:
            return web.json_response(
                {"error": {"code": "VALIDATION_ERROR", "message": "since_ns"}}, status=400
            )
        result = await asyncio.get_running_loop().run_in_executor(pool, project_stats, client, project, since)
        return web.Response(body=orjson.dumps(result), content_type="application/json")

    app.router.add_post("/internal/v1/logs", logs)
    app.router.add_get("/internal/v1/stats", stats)
    app.on_cleanup.append(close)
    return app


async def main(settings: Settings) -> None:
    client = await asyncio.to_thread(store.connect, settings)
    await asyncio.to_thread(store.migrate, client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(read_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.worker_query_port).start()
    log.info("worker_internal_port", url=settings.worker_query_url)
    try:
        await pipeline.run(settings, client, stop)
    finally:
        await runner.cleanup()
        client.close()


def serve(settings: Settings) -> None:
    uvloop.run(main(settings))
