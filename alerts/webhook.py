"""Webhook delivery: a signed JSON POST per notifying transition, retried with backoff.

The body is built from the stored event only, so every attempt (and a redelivery by a
restarted evaluator) sends the same bytes with the same event id: receivers deduplicate
by `X-Millrace-Event-Id` (delivery is at least once). With a secret, the header
`X-Millrace-Signature: sha256=<hex HMAC-SHA256(secret, body)>` signs the body.

Targets are http(s) only; loopback, private and link-local addresses are refused unless
MILLRACE_ALERT_ALLOW_PRIVATE_TARGETS is set, and the worker's internal port always is.
Names are checked as they resolve, in the connector's resolver, so a name that points
inside is refused at connect time; redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from alerts.backend import Backend, StoreUnavailable, retry_in
from millrace import metrics
from millrace.config import Settings
from reads.alerts import address_problem, url_problem
from reads.query import format_ns

log = structlog.get_logger()

EVENT_HEADER = "X-Millrace-Event-Id"
SIGNATURE_HEADER = "X-Millrace-Signature"
TIMEOUT_S = 10
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
RETRY_FOR_S = 600.0  # a failing receiver is retried this long after the event, then the delivery fails


class RefusedTarget(OSError):
    """The webhook's host resolves to an address webhooks may not reach."""


class GuardedResolver(AbstractResolver):
    """The default resolver, refusing names that resolve to addresses webhooks may not reach."""

    def __init__(self, allow_private: bool, internal_port: int) -> None:
        self._inner = DefaultResolver()
        self.allow_private = allow_private
        self.internal_port = internal_port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for item in found:
            address = ipaddress.ip_address(item["host"])
            problem = address_problem(address, self.allow_private)
            if (
                problem is None
                and port == self.internal_port
                and (address.is_loopback or address.is_unspecified)
            ):
                problem = "that is the worker's internal port"
            if problem:
                raise RefusedTarget(f"{host} resolves to {address}: {problem}")
        return found

    async def close(self) -> None:
        await self._inner.close()


def body_of(event: dict[str, Any]) -> bytes:
    """The webhook's JSON body: what happened, to which rule and group, and when."""
    group = orjson.loads(event["group_key"]) if event["group_key"] else None
    return orjson.dumps(
        {
            "id": event["event_id"],
            "type": f"alert.{event['state']}",
            "project": event["project"],
            "rule": {"id": event["rule_id"], "name": event["rule_name"]},
            "group": group,
            "state": event["state"],
            "previous_state": event["previous_state"],
            "value": event["value"],
            "condition": {"op": event["op"], "threshold": event["threshold"]},
            "timestamp": format_ns(int(event["timestamp_ns"])),
        },
        option=orjson.OPT_SORT_KEYS,
    )


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Job:
    event: dict[str, Any]
    url: str
    secret: str
    attempts_before: int = 0  # made by an earlier process (a resumed delivery)


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        *,
        backoff_base_s: float = BACKOFF_BASE_S,
        retry_for_s: float = RETRY_FOR_S,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.backoff_base_s = backoff_base_s
        self.retry_for_s = retry_for_s
        self._resolver = GuardedResolver(settings.alert_allow_private_targets, settings.worker_query_port)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self._resolver, limit=50),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        )
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def submit(self, job: Job) -> None:
        """Deliver in the background; a job already under way in this process is not doubled."""
        key = (job.event["event_id"], job.url)
        if key in self._tasks:
            return
        task = asyncio.create_task(self._deliver(job), name=f"webhook-{job.event['event_id']}")
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _deliver(self, job: Job) -> None:
        body = body_of(job.event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Millrace-Alerts",
            EVENT_HEADER: job.event["event_id"],
        }
        if job.secret:
            headers[SIGNATURE_HEADER] = signature(job.secret, body)
        # The budget runs from the event, not from this process: a restarted evaluator resuming
        # the delivery continues it rather than starting a new one.
        deadline = int(job.event["timestamp_ns"]) / 1e9 + self.retry_for_s
        attempt = job.attempts_before
        while True:
            attempt += 1
            status, problem = await self._post(job.url, body, headers)
            ok = problem is None
            final = ok or time.time() >= deadline or (problem or "").startswith("refused")
            outcome = "delivered" if ok else "failed" if final else "retrying"
            metrics.ALERT_WEBHOOKS.labels(outcome).inc()
            await self._record(job, attempt, outcome, status, problem or "")
            if final:
                log.log(
                    20 if ok else 30,
                    "webhook_" + outcome,
                    event_id=job.event["event_id"],
                    attempts=attempt,
                    error=problem,
                )
                return
            delay = min(BACKOFF_CAP_S, self.backoff_base_s * 2 ** (attempt - 1))
            await asyncio.sleep(min(delay, max(0.0, deadline - time.time())))

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        problem = url_problem(url, self.settings.alert_allow_private_targets, self.settings.worker_query_port)
        if problem:
            return 0, f"refused: {problem}"
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return resp.status, None
                return resp.status, f"the receiver answered {resp.status}"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedTarget):
                return 0, f"refused: {exc.os_error}"
            return 0, f"{type(exc).__name__}: {exc}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    async def _record(self, job: Job, attempt: int, outcome: str, status: int, error: str) -> None:
        row = {
            "project": job.event["project"],
            "rule_id": job.event["rule_id"],
            "event_id": job.event["event_id"],
            "url": job.url,
            "attempt": attempt,
            "outcome": outcome,
            "status": status,
            "error": error,
            "attempted_at_ns": time.time_ns(),
        }
        for _ in range(5):  # the attempt happened: try a little to write it down
            try:
                await self.backend.store("put_delivery", {"project": row["project"], "attempt": row})
                return
            except StoreUnavailable as exc:
                log.warning("webhook_attempt_not_recorded", event_id=row["event_id"], error=str(exc))
                await asyncio.sleep(retry_in(exc, 1))

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self._session.close()
