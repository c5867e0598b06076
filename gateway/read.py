"""The read API at the gateway's base URL: `GET /api/v1/logs` and GoodLogs' reads
(`POST /v1/gql/query`, `POST /v1/gql`, `GET /v1/gql/autocomplete`, `GET /v1/schema`, `GET /v1/info`).

With a ClickHouse server the gateway queries it directly. In embedded mode the
engine lives inside the worker (chDB: one engine per data path per process), so the
gateway forwards the typed query to the worker's loopback read port. Both paths
compile the query with `reads.query`, so they answer identically.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from gateway.body import BodyError, read_body
from gateway.dialects.base import bearer, json_response
from gateway.limits import Limits
from millrace import alert_store, internal, store
from millrace.config import Settings
from millrace.keys import SCOPE_READ, ApiKey, KeyRing
from reads.gql.autocomplete import suggest
from reads.query import MAX_BATCH, MAX_LIMIT, LogQuery, QueryError, parse_time, read_call, run_logs
from reads.slots import ProjectPool, ReadsBusy
from schemas.record import LEVELS


class ReadUnavailable(Exception):
    """The store (or the worker that owns it) cannot answer right now."""


class ReadBackend(Protocol):
    async def logs(self, query: LogQuery) -> list[dict[str, Any]]: ...

    async def call(self, op: str, payload: dict[str, Any]) -> Any:
        """One of `reads.query.read_call`'s reads."""

    async def alerts(self, op: str, payload: dict[str, Any]) -> Any:
        """One of `millrace.alert_store.call`'s operations (alert rules and their history)."""

    async def close(self) -> None: ...


class StoreReader:
    """Server mode: query ClickHouse over HTTP from a small thread pool."""

    def __init__(self, settings: Settings) -> None:
        self._client = store.connect(settings, create_database=False)
        self._pool = ProjectPool(threads=4)  # at most 2 of them per project

    async def logs(self, query: LogQuery) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._run(query.project, run_logs, query)
        return rows

    async def call(self, op: str, payload: dict[str, Any]) -> Any:
        return await self._run(str(payload.get("project")), read_call, op, payload)

    async def alerts(self, op: str, payload: dict[str, Any]) -> Any:
        return await self._run(str(payload.get("project")), alert_store.call, op, payload)

    async def _run(self, project: str, fn: Any, *args: Any) -> Any:
        try:
            return await self._pool.run(project, fn, self._client, *args)
        except (QueryError, ReadsBusy):
            raise
        except Exception as exc:
            raise ReadUnavailable(str(exc)) from exc

    async def close(self) -> None:
        self._pool.shutdown()
        self._client.close()


class WorkerReader:
    """Embedded mode: ask the worker process that owns the engine."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.worker_query_url
        self._session = internal.worker_session(settings)

    async def logs(self, query: LogQuery) -> list[dict[str, Any]]:
        payload = await self._post("/internal/v1/logs", query.to_dict())
        rows: list[dict[str, Any]] = payload["logs"]
        return rows

    async def call(self, op: str, payload: dict[str, Any]) -> Any:
        return (await self._post(f"/internal/v1/read/{op}", payload))["result"]

    async def alerts(self, op: str, payload: dict[str, Any]) -> Any:
        return (await self._post(f"/internal/v1/alerts/{op}", payload))["result"]

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            async with self._session.post(f"{self._url}{path}", data=orjson.dumps(body)) as resp:
                payload = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise ReadUnavailable(f"the worker's read port is unreachable: {exc}") from exc
        if resp.status == 400:
            raise QueryError(payload["error"]["message"])
        if resp.status == 429:  # the worker's pool: this project has too many reads in flight
            raise ReadsBusy(payload["error"]["message"])
        if resp.status != 200:
            raise ReadUnavailable(payload.get("error", {}).get("message", f"worker answered {resp.status}"))
        return payload

    async def close(self) -> None:
        await self._session.close()


DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# The read API's names for the body reader's refusals (GoodLogs' error codes).
_BODY_CODES = {
    400: "VALIDATION_ERROR",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
    415: "VALIDATION_ERROR",
}


def error(status: int, code: str, message: str, retry_after: int | None = None) -> web.Response:
    return json_response(status, {"error": {"code": code, "message": message}}, retry_after)


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
    def __init__(self, keys: KeyRing, backend: ReadBackend, limits: Limits | None = None) -> None:
        self.keys = keys
        self.backend = backend
        self.limits = limits  # the ingest path's buckets: a key's requests/s covers its reads too
        # A read body gets ingest's deadline: a trickled query must not hold a connection forever (F5).
        self.body_timeout_s = limits.settings.body_timeout_s if limits else DEFAULT_BODY_TIMEOUT_S
        self.max_body_bytes = limits.settings.max_body_bytes if limits else DEFAULT_MAX_BODY_BYTES

    def authorize(self, request: web.Request) -> ApiKey | web.Response:
        """The key with the read scope, or the GoodLogs-format refusal to send."""
        token = bearer(request)
        key = self.keys.authenticate(token) if token else None
        if key is None:
            return error(401, "UNAUTHORIZED", "missing or invalid API key")
        if SCOPE_READ not in key.scopes:
            return error(403, "FORBIDDEN", f"this key lacks the '{SCOPE_READ}' scope")
        if self.limits is not None and (limited := self.limits.request(key)) is not None:
            return error(429, "RATE_LIMITED", limited.message, limited.retry_after)
        return key

    async def logs(self, request: web.Request) -> web.Response:
        key = self.authorize(request)
        if isinstance(key, web.Response):
            return key
        try:
            # The project always comes from the key; no parameter can name another.
            query = query_from_request(key.project, request.query)
            rows = await self.backend.logs(query)
        except QueryError as exc:
            return error(400, "VALIDATION_ERROR", str(exc))
        except ReadsBusy as exc:
            return error(429, "RATE_LIMITED", str(exc), exc.retry_after)
        except ReadUnavailable as exc:
            return error(503, "UNAVAILABLE", f"the store cannot answer right now: {exc}")
        return json_response(200, {"logs": rows})

    async def gql_query(self, request: web.Request) -> web.Response:
        """`POST /v1/gql/query {"q"}` -> `{"query", "data"}`; a bad query is 400 (syntax) or 422."""
        key = self.authorize(request)
        if isinstance(key, web.Response):
            return key
        body = await self.json_body(request)
        if isinstance(body, web.Response):
            return body
        q = body.get("q") if isinstance(body, dict) else None
        if not isinstance(q, str):
            return error(400, "VALIDATION_ERROR", 'the body must be a JSON object with the query in "q"')
        outcomes = await self._gql(key.project, [q])
        if isinstance(outcomes, web.Response):
            return outcomes
        (outcome,) = outcomes
        if outcome["status"] == "error":
            problem = outcome["error"]
            return json_response(
                problem["status"],
                {
                    "error": {
                        "code": problem["code"],
                        "message": problem["message"],
                        "position": problem["position"],
                    }
                },
            )
        return json_response(200, {"query": outcome["query"], "data": outcome["data"]})

    async def gql_batch(self, request: web.Request) -> web.Response:
        """`POST /v1/gql {"queries": [...]}` (1-10) -> one `{status, ...}` per query, in order."""
        key = self.authorize(request)
        if isinstance(key, web.Response):
            return key
        body = await self.json_body(request)
        if isinstance(body, web.Response):
            return body
        queries = body.get("queries") if isinstance(body, dict) else None
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries) or not queries:
            return error(400, "VALIDATION_ERROR", 'the body must be a JSON object with "queries": [strings]')
        if len(queries) > MAX_BATCH:
            return error(
                400, "VALIDATION_ERROR", f"{len(queries)} queries; the limit is {MAX_BATCH} per request"
            )
        outcomes = await self._gql(key.project, queries)
        if isinstance(outcomes, web.Response):
            return outcomes
        answer = [
            o
            if o["status"] == "ok"
            else {"status": "error", "error": o["error"]["message"], "position": o["error"]["position"]}
            for o in outcomes
        ]
        return json_response(200, answer)

    async def _gql(self, project: str, queries: list[str]) -> list[dict[str, Any]] | web.Response:
        payload = {"project": project, "queries": queries, "now_ns": time.time_ns()}
        try:
            outcomes: list[dict[str, Any]] = await self.backend.call("gql", payload)
        except QueryError as exc:
            return error(400, "VALIDATION_ERROR", str(exc))
        except ReadsBusy as exc:
            return error(429, "RATE_LIMITED", str(exc), exc.retry_after)
        except ReadUnavailable as exc:
            return error(503, "UNAVAILABLE", f"the store cannot answer right now: {exc}")
        return outcomes

    async def autocomplete(self, request: web.Request) -> web.Response:
        """`GET /v1/gql/autocomplete?q=&cursor=N`: suggestions for the word at the cursor."""
        key = self.authorize(request)
        if isinstance(key, web.Response):
            return key
        q = request.query.get("q", "")
        try:
            cursor = int(request.query.get("cursor", str(len(q))))
        except ValueError:
            return error(400, "VALIDATION_ERROR", "'cursor' must be a whole number (a position in q)")
        schema = await self._call("schema", key.project)
        if isinstance(schema, web.Response):
            return schema
        return json_response(200, suggest(q, cursor, schema))

    async def schema(self, request: web.Request) -> web.Response:
        """`GET /v1/schema`: the discovered schema, kept by the engine as data arrives."""
        key = self.authorize(request)
        if isinstance(key, web.Response):
            return key
        schema = await self._call("schema", key.project)
        return schema if isinstance(schema, web.Response) else json_response(200, schema)

    async def info(self, request: web.Request) -> web.Response:
        """`GET /v1/info`: the project, its usage and its key count. Millrace has no orgs."""
        key = self.authorize(request)
        if isinstance(key, web.Response):
            return key
        used = await self._call("usage", key.project)
        if isinstance(used, web.Response):
            return used
        keys = sum(1 for k in self.keys.all() if k.project == key.project and not k.revoked)
        return json_response(
            200,
            {"project": {"id": key.project, "name": key.project}, "org": None, "usage": used, "keys": keys},
        )

    async def _call(self, op: str, project: str) -> Any:
        try:
            return await self.backend.call(op, {"project": project})
        except QueryError as exc:
            return error(400, "VALIDATION_ERROR", str(exc))
        except ReadsBusy as exc:
            return error(429, "RATE_LIMITED", str(exc), exc.retry_after)
        except ReadUnavailable as exc:
            return error(503, "UNAVAILABLE", f"the store cannot answer right now: {exc}")

    async def json_body(self, request: web.Request) -> Any:
        """The body as JSON (None when it is not), or the refusal: 408 past the body deadline,
        413 past the size cap, 400/415 for an encoding that does not decode."""
        try:
            raw = await read_body(request, self.max_body_bytes, self.max_body_bytes, self.body_timeout_s)
        except BodyError as exc:
            return error(exc.status, _BODY_CODES.get(exc.status, "VALIDATION_ERROR"), exc.message)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
