"""The read API at the gateway's base URL: `GET /api/v1/logs`.

With a ClickHouse server the gateway queries it directly. In embedded mode the
engine lives inside the worker (chDB: one engine per data path per process), so the
gateway forwards the typed query to the worker's loopback read port. Both paths
compile the query with `millrace.query`, so they answer identically.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from gateway.dialects.base import bearer, json_response
from millrace import store
from millrace.config import Settings
from millrace.keys import SCOPE_READ, KeyRing
from millrace.query import MAX_LIMIT, LogQuery, QueryError, parse_time, run_logs
from schemas.record import LEVELS


class ReadUnavailable(Exception):
    """The store (or the worker that owns it) cannot answer right now."""


class ReadBackend(Protocol):
    async def logs(self, query: LogQuery) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class StoreReader:
    """Server mode: query ClickHouse over HTTP from a small thread pool."""

    def __init__(self, settings: Settings) -> None:
        self._client = store.connect(settings, create_database=False)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="read")

    async def logs(self, query: LogQuery) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, run_logs, self._client, query)
        except QueryError:
            raise
        except Exception as exc:
            raise ReadUnavailable(str(exc)) from exc

    async def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()


class WorkerReader:
    """Embedded mode: ask the worker process that owns the engine."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.worker_query_url
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def logs(self, query: LogQuery) -> list[dict[str, Any]]:
        try:
            async with self._session.post(
                f"{self._url}/internal/v1/logs", data=orjson.dumps(query.to_dict())
            ) as resp:
                payload = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise ReadUnavailable(f"the worker's read port is unreachable: {exc}") from exc
        if resp.status == 400:
            raise QueryError(payload["error"]["message"])
        if resp.status != 200:
            raise ReadUnavailable(payload.get("error", {}).get("message", f"worker answered {resp.status}"))
        rows: list[dict[str, Any]] = payload["logs"]
        return rows

    async def close(self) -> None:
        await self._session.close()


def error(status: int, code: str, message: str) -> web.Response:
    return json_response(status, {"error": {"code": code, "message": message}})


def query_from_request(project: str, params: Any) -> LogQuery:
    """Translate query-string parameters into a LogQuery, naming the bad parameter on error."""
    known = {"from", "to", "level", "service", "q", "limit"}
    extra = sorted(set(params) - known)
    if extra:
        raise QueryError(f"unknown parameter '{extra[0]}'; known: {', '.join(sorted(known))}")
    try:
        limit = int(params.get("limit", "100"))
    except ValueError:
        raise QueryError(f"'limit' must be a whole number between 1 and {MAX_LIMIT}") from None
    levels = tuple(lvl.strip().lower() for lvl in params.get("level", "").split(",") if lvl.strip())
    for lvl in levels:
        if lvl not in LEVELS:
            raise QueryError(f"unknown level {lvl!r}; use one of {', '.join(LEVELS)}")
    query = LogQuery(
        project=project,
        since_ns=parse_time("from", params["from"]) if "from" in params else None,
        until_ns=parse_time("to", params["to"]) if "to" in params else None,
        levels=levels,
        service=params.get("service") or None,
        text=params.get("q") or None,
        limit=limit,
    )
    query.validate()
    return query


class ReadApi:
    def __init__(self, keys: KeyRing, backend: ReadBackend) -> None:
        self.keys = keys
        self.backend = backend

    async def logs(self, request: web.Request) -> web.Response:
        token = bearer(request)
        key = self.keys.authenticate(token) if token else None
        if key is None:
            return error(401, "UNAUTHORIZED", "missing or invalid API key")
        if SCOPE_READ not in key.scopes:
            return error(403, "FORBIDDEN", f"this key lacks the '{SCOPE_READ}' scope")
        try:
            # The project always comes from the key; no parameter can name another.
            query = query_from_request(key.project, request.query)
            rows = await self.backend.logs(query)
        except QueryError as exc:
            return error(400, "VALIDATION_ERROR", str(exc))
        except ReadUnavailable as exc:
            return error(503, "UNAVAILABLE", f"the store cannot answer right now: {exc}")
        return json_response(200, {"logs": rows})
