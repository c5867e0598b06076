"""GoodLogs' alert rules API: `GET/POST /v1/alerts`, `GET/PUT/DELETE /v1/alerts/{id}`.

Rules belong to the key's project: every read and write is keyed by it, so another
project's rule id is a 404, never a leak. A rule is validated (`reads.alerts`) before it
is stored, its query compiled exactly as the evaluator will run it, so a query that
cannot run is refused here with its position. Storage goes through the read backend
(directly to a ClickHouse server, or via the worker that owns the embedded engine).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from gateway.dialects.base import bearer, json_response
from gateway.read import ReadApi, ReadUnavailable, error
from millrace.keys import SCOPE_ALERTS_READ, SCOPE_ALERTS_WRITE, ApiKey
from reads.alerts import MAX_RULES_PER_PROJECT, Rule, RuleError, new_id, parse_rule, readable
from reads.query import QueryError, format_ns
from reads.slots import ReadsBusy

log = structlog.get_logger()


class AlertsApi:
    def __init__(self, reads: ReadApi, allow_private: bool, internal_port: int) -> None:
        self.reads = reads
        self.allow_private = allow_private
        self.internal_port = internal_port

    def authorize(self, request: web.Request, scope: str) -> ApiKey | web.Response:
        token = bearer(request)
        key = self.reads.keys.authenticate(token) if token else None
        if key is None:
            return error(401, "UNAUTHORIZED", "missing or invalid API key")
        if scope not in key.scopes:
            return error(403, "FORBIDDEN", f"this key lacks the '{scope}' scope")
        limits = self.reads.limits
        if limits is not None and (limited := limits.request(key)) is not None:
            return error(429, "RATE_LIMITED", limited.message, limited.retry_after)
        return key

    async def _store(self, op: str, payload: dict[str, Any]) -> Any:
        """One alert-store operation; its failure becomes the API's answer (raised as a response)."""
        try:
            return await self.reads.backend.alerts(op, payload)
        except ReadsBusy as exc:
            raise _Answer(error(429, "RATE_LIMITED", str(exc), exc.retry_after)) from None
        except (ReadUnavailable, QueryError) as exc:
            raise _Answer(error(503, "UNAVAILABLE", f"the store cannot answer right now: {exc}")) from None

    async def _rules(self, project: str, rule_id: str | None = None) -> list[Rule]:
        payload: dict[str, Any] = {"project": project}
        if rule_id is not None:
            payload["id"] = rule_id
        rules, problems = readable(await self._store("rules", payload))
        for problem in problems:
            log.error("alert_rule_unreadable", project=project, error=problem)
        return rules

    async def _one(self, project: str, rule_id: str) -> Rule:
        found = await self._rules(project, rule_id)
        if not found:
            raise _Answer(error(404, "NOT_FOUND", f"no alert rule {rule_id!r} in this project"))
        return found[0]

    async def _body(self, request: web.Request) -> Any:
        body = await self.reads.json_body(request)
        if isinstance(body, web.Response):
            raise _Answer(body)
        if not isinstance(body, dict):
            raise _Answer(
                error(400, "VALIDATION_ERROR", "the body must be a JSON object describing the rule")
            )
        return body

    async def _save(self, rule: Rule) -> None:
        await self._store("put_rule", {"project": rule.project, "id": rule.id, "body": rule.to_json()})

    def _parse(self, project: str, body: Any, rule_id: str, existing: Rule | None = None) -> Rule:
        try:
            return parse_rule(
                project,
                body,
                rule_id=rule_id,
                now=format_ns(time.time_ns()),
                allow_private=self.allow_private,
                internal_port=self.internal_port,
                existing=existing,
            )
        except RuleError as exc:
            problem: dict[str, Any] = {"code": "VALIDATION_ERROR", "message": exc.message}
            if exc.position is not None:
                problem["position"] = exc.position
            raise _Answer(json_response(exc.status, {"error": problem})) from None

    async def index(self, request: web.Request) -> web.Response:
        key = self.authorize(request, SCOPE_ALERTS_READ)
        if isinstance(key, web.Response):
            return key
        rules = await self._rules(key.project)
        return json_response(200, {"alerts": [r.public() for r in rules]})

    async def create(self, request: web.Request) -> web.Response:
        key = self.authorize(request, SCOPE_ALERTS_WRITE)
        if isinstance(key, web.Response):
            return key
        body = await self._body(request)
        rule = self._parse(key.project, body, new_id())
        if len(await self._rules(key.project)) >= MAX_RULES_PER_PROJECT:
            return error(
                422, "VALIDATION_ERROR", f"a project has at most {MAX_RULES_PER_PROJECT} alert rules"
            )
        await self._save(rule)
        return json_response(201, rule.public())

    async def show(self, request: web.Request) -> web.Response:
        """The rule, where each of its groups stands, and its latest webhook attempts."""
        key = self.authorize(request, SCOPE_ALERTS_READ)
        if isinstance(key, web.Response):
            return key
        rule = await self._one(key.project, request.match_info["id"])
        ref = {"project": key.project, "rule_id": rule.id}
        states = await self._store("states", ref)
        deliveries = await self._store("deliveries", ref)
        return json_response(
            200,
            {
                **rule.public(),
                "state": [
                    {
                        "group": s["group_key"],
                        "state": s["state"],
                        "since": format_ns(s["since_ns"]),
                        "value": s["value"],
                    }
                    for s in states
                ],
                "deliveries": [
                    {
                        **{k: v for k, v in d.items() if k != "attempted_at_ns"},
                        "at": format_ns(d["attempted_at_ns"]),
                    }
                    for d in deliveries
                ],
            },
        )

    async def update(self, request: web.Request) -> web.Response:
        """Fields given replace the rule's; fields left out keep their value."""
        key = self.authorize(request, SCOPE_ALERTS_WRITE)
        if isinstance(key, web.Response):
            return key
        existing = await self._one(key.project, request.match_info["id"])
        body = await self._body(request)
        rule = self._parse(key.project, body, existing.id, existing)
        await self._save(rule)
        return json_response(200, rule.public())

    async def delete(self, request: web.Request) -> web.Response:
        key = self.authorize(request, SCOPE_ALERTS_WRITE)
        if isinstance(key, web.Response):
            return key
        rule = await self._one(key.project, request.match_info["id"])
        await self._store(
            "put_rule", {"project": key.project, "id": rule.id, "body": rule.to_json(), "deleted": True}
        )
        return json_response(200, {"id": rule.id, "deleted": True})


class _Answer(Exception):
    """Carries a finished refusal out of a helper to the handler's caller."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def handler(
    api: Callable[[web.Request], AlertsApi], name: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The handler `name` of the app's AlertsApi, with helper refusals turned into answers."""

    async def handle(request: web.Request) -> web.StreamResponse:
        method = getattr(api(request), name)
        try:
            response: web.StreamResponse = await method(request)
        except _Answer as answer:
            return answer.response
        return response

    return handle
