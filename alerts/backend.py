"""How the evaluator reaches the store: the worker's internal port in embedded mode (the
worker owns the chDB engine; a second engine on its data path is not allowed), a
ClickHouse server directly otherwise. Both run the same functions: `reads.query.read_call`
for the rule's query and `millrace.alert_store.call` for rules, state, events and attempts.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import aiohttp
import orjson

from millrace import alert_store, internal, store
from millrace.config import Settings
from reads.query import read_call


class StoreUnavailable(Exception):
    """The store (or the worker in front of it) did not answer; the evaluation is retried."""


class StoreBusy(StoreUnavailable):
    """The worker refused the read for now (the project's read slots are taken): retry soon."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_in(exc: BaseException, otherwise: float) -> float:
    """Seconds before trying again after `exc`: a busy worker's Retry-After (soon over), else
    `otherwise` (an outage or a failure may not be)."""
    return exc.retry_after_s if isinstance(exc, StoreBusy) else otherwise


class Backend(Protocol):
    async def read(self, op: str, payload: dict[str, Any]) -> Any: ...

    async def store(self, op: str, payload: dict[str, Any]) -> Any: ...

    async def close(self) -> None: ...


# Calls of one project in flight at once, from one evaluator, whoever makes them. The worker runs
# a project's reads in a few slots and refuses past them (429). The evaluator already starts at
# most this many rules of a project at once; this also holds the calls made beside the rules'
# rounds (a deleted rule's last transitions, the webhook deliverer's attempt records), which wait
# here for a turn instead of meeting a refusal.
CALLS_PER_PROJECT = 2
# How long a call waits for its project's turn before it counts as refused (busy, retried after
# a second): the caller may be the evaluator's main loop (a deleted rule's last transitions),
# which must not wait on one project's queue for long.
TURN_WAIT_S = 5.0


class WorkerBackend:
    def __init__(self, settings: Settings) -> None:
        self._url = settings.worker_query_url
        self._session = internal.worker_session(settings)
        self._turns: dict[str, asyncio.Semaphore] = {}  # project -> its calls' turns, while it has callers
        self._callers: Counter[str] = Counter()

    async def read(self, op: str, payload: dict[str, Any]) -> Any:
        return await self._post(f"/internal/v1/read/{op}", payload)

    async def store(self, op: str, payload: dict[str, Any]) -> Any:
        return await self._post(f"/internal/v1/alerts/{op}", payload)

    async def _post(self, path: str, payload: dict[str, Any]) -> Any:
        project = payload.get("project")
        if not isinstance(project, str):  # the rules' reload: no project's slots
            return await self._send(path, payload)
        turns = self._turns.get(project)
        if turns is None:
            turns = self._turns[project] = asyncio.Semaphore(CALLS_PER_PROJECT)
        self._callers[project] += 1
        try:
            try:
                async with asyncio.timeout(TURN_WAIT_S):
                    await turns.acquire()
            except TimeoutError:
                raise StoreBusy(
                    f"{CALLS_PER_PROJECT} calls of project {project!r} in flight for {TURN_WAIT_S:.0f} s",
                    retry_after_s=1.0,
                ) from None
            try:
                return await self._send(path, payload)
            finally:
                turns.release()
        finally:
            self._callers[project] -= 1
            if not self._callers[project]:  # no caller left: the project's turns go too
                del self._callers[project], self._turns[project]

    async def _send(self, path: str, payload: dict[str, Any]) -> Any:
        try:
            async with self._session.post(f"{self._url}{path}", data=orjson.dumps(payload)) as resp:
                answer = orjson.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise StoreUnavailable(f"the worker's internal port is unreachable: {exc}") from exc
        if resp.status != 200:
            message = answer.get("error", {}).get("message", "") if isinstance(answer, dict) else ""
            if resp.status == 429:
                retry_after = _seconds(resp.headers.get("Retry-After"))
                raise StoreBusy(f"the worker answered 429: {message}", retry_after)
            raise StoreUnavailable(f"the worker answered {resp.status}: {message}")
        return answer["result"]

    async def close(self) -> None:
        await self._session.close()


def _seconds(retry_after: str | None) -> float:
    """A Retry-After in seconds, within 0.1-60 s; 1 s when absent or not a number."""
    try:
        return min(60.0, max(0.1, float(retry_after or "1")))
    except ValueError:
        return 1.0


class DirectBackend:
    """A ClickHouse server: the synchronous client in one thread of our own."""

    def __init__(self, settings: Settings) -> None:
        self._client = store.connect(settings, create_database=False)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts-store")

    async def read(self, op: str, payload: dict[str, Any]) -> Any:
        return await self._run(read_call, op, payload)

    async def store(self, op: str, payload: dict[str, Any]) -> Any:
        return await self._run(alert_store.call, op, payload)

    async def _run(self, fn: Any, op: str, payload: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, self._client, op, payload)
        except Exception as exc:
            raise StoreUnavailable(f"{op}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        self._pool.shutdown()
        self._client.close()


def backend_for(settings: Settings) -> Backend:
    return WorkerBackend(settings) if settings.embedded_store else DirectBackend(settings)
