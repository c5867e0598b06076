"""Alerts (issue 20): the rules API, the evaluator's transitions, webhooks, restarts, replicas.

Everything real: the session's Kafka broker and chDB engine, the gateway over HTTP, the
evaluator reading and writing through the worker's internal port exactly as
`millrace alerts` does, and an aiohttp receiver on loopback for the webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest
from aiohttp import web

from alerts.backend import CALLS_PER_PROJECT, Backend, StoreBusy, StoreUnavailable, WorkerBackend
from alerts.evaluate import GroupState, event_id, step
from alerts.evaluator import MAX_IN_FLIGHT_PER_PROJECT, Evaluator
from alerts.webhook import signature
from millrace import alert_store, keys, metrics
from millrace.config import Settings
from ops.cli import parser as cli_parser
from reads.alerts import Rule, RuleError, parse_rule, url_problem
from reads.gql.autocomplete import suggest
from tests.conftest import Gateway, Stack, Tenant, free_port

# -- the rule and its state machine, without processes ------------------------------------


def rule(**changes: Any) -> Rule:
    base = Rule("alr_1", "p", "errors", "severity:error | count", ">", 10.0, "1m", "1s")
    return replace(base, **changes)


def test_a_rule_goes_ok_firing_resolved_with_one_event_per_move() -> None:
    r = rule()
    state, event = step(r, GroupState(""), 3, 1)
    assert (state.state, event) == ("ok", None)
    state, event = step(r, state, 11, 2)
    assert event is not None and (state.state, state.seq, event["previous_state"]) == ("firing", 1, "ok")
    assert event["event_id"] == event_id("p", "alr_1", "", 0)
    state, again = step(r, state, 50, 3)
    assert (state.state, again) == ("firing", None)  # still firing: no second event
    state, event = step(r, state, 0, 4)
    assert event is not None and (state.state, state.seq) == ("resolved", 2)


def test_a_for_duration_holds_the_rule_pending_first() -> None:
    r = rule(for_="2s")
    state, event = step(r, GroupState(""), 11, 0)
    assert event is not None and state.state == "pending"
    state, event = step(r, state, 11, 1_000_000_000)
    assert (state.state, event) == ("pending", None)
    state, event = step(r, state, 11, 2_000_000_000)
    assert event is not None and state.state == "firing"
    state, event = step(r, GroupState("", "pending", 0, 4), 1, 5)
    assert event is not None and (state.state, event["previous_state"]) == ("ok", "pending")


def test_a_retired_rule_resolves_what_fires_and_quiets_what_is_pending() -> None:
    r = rule()
    firing = GroupState("", "firing", 0, 1, 50.0)
    state, event = step(r, firing, 50.0, 7, retired=True)  # still over the threshold: retired anyway
    assert event is not None and (state.state, event["previous_state"], event["value"]) == (
        "resolved",
        "firing",
        50.0,
    )
    state, event = step(r, GroupState("", "pending", 0, 1, 50.0), 50.0, 7, retired=True)
    assert event is not None and state.state == "ok"
    assert step(r, GroupState("", "ok"), 50.0, 7, retired=True)[1] is None


@pytest.mark.parametrize(
    ("query", "position", "status"),
    [
        ("severity:error | count by", 25, 400),  # syntax: the query's own position
        ("severity:error", 14, 422),  # no number: points past the end
        ("count by bin(timestamp, 1m)", 9, 422),
        ("from:alert_events | count", 5, 422),
    ],
)
def test_a_query_that_yields_no_number_is_refused_with_its_position(
    query: str, position: int, status: int
) -> None:
    body = {"name": "x", "query": query, "condition": {"op": ">", "threshold": 1}, "window": "1m"}
    with pytest.raises(RuleError) as err:
        parse_rule("p", body, rule_id="alr_x", now="", allow_private=False)
    assert (err.value.position, err.value.status) == (position, status)


def test_an_update_keeps_fields_and_secrets_it_does_not_mention() -> None:
    body = {
        "name": "x",
        "query": "count by service",
        "condition": {"op": ">", "threshold": 1},
        "window": "5m",
        "channels": [{"url": "https://h.example.com/a", "secret": "s1"}],
    }
    first = parse_rule("p", body, rule_id="alr_x", now="t0", allow_private=False)
    shown = {**first.public(), "state": [], "deliveries": []}  # what GET returns: no secrets
    again = parse_rule(
        "p", {**shown, "interval": "30s"}, rule_id="alr_x", now="t1", allow_private=False, existing=first
    )
    assert (again.channels, again.interval, again.window, again.created_at) == (
        first.channels,
        "30s",
        "5m",
        "t0",
    )
    cleared = parse_rule(
        "p",
        {"channels": [{"url": "https://h.example.com/a", "secret": ""}]},
        rule_id="alr_x",
        now="t2",
        allow_private=False,
        existing=first,
    )
    assert cleared.channels[0].secret == ""


class Busy:
    """A store whose rule reads take a while and are refused (429) once each, as the worker's
    read pool refuses a project past its slots; it counts the reads in flight per project."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = [r.to_json() for r in rules]
        self.in_flight: Counter[str] = Counter()
        self.most_at_once = 0
        self.refused: dict[str, float] = {}  # rule query -> when it was refused
        self.read_at: dict[str, list[float]] = {}
        self.rules_at: list[float] = []  # the reloads of the rules, the first refused

    async def read(self, op: str, payload: dict[str, Any]) -> Any:
        project, query = payload["project"], payload["query"]
        self.in_flight[project] += 1
        self.most_at_once = max(self.most_at_once, self.in_flight[project])
        try:
            await asyncio.sleep(0.05)
            if query not in self.refused:
                self.refused[query] = time.monotonic()
                raise StoreBusy("the worker answered 429: busy", retry_after_s=0.3)
            self.read_at.setdefault(query, []).append(time.monotonic())
            return []
        finally:
            self.in_flight[project] -= 1

    async def store(self, op: str, payload: dict[str, Any]) -> Any:
        if op == "rules":
            if not self.rules_at:
                self.rules_at.append(time.monotonic())
                raise StoreBusy("the worker answered 429: busy", retry_after_s=0.3)
            self.rules_at.append(time.monotonic())
            return self.rules
        return []

    async def close(self) -> None:
        pass


async def test_an_evaluator_runs_two_rules_of_a_project_at_once_and_retries_busy_after_retry_after() -> None:
    rules = [
        parse_rule(
            "shop",
            {**errors_rule("https://hooks.example.com/x"), "query": f"payment{i} | count", "interval": "10s"},
            rule_id=f"alr_{i}",
            now="t0",
            allow_private=False,
        )
        for i in range(6)
    ]
    store = Busy(rules)
    evaluator = Evaluator(Settings.from_env({}), store)
    evaluator.owners.partitions = frozenset(range(64))  # every rule is this replica's
    stop = asyncio.Event()
    running = asyncio.create_task(evaluator.run(stop))
    await wait_for(lambda: len(store.read_at) == len(rules), 10, "every rule read after its refusal")
    stop.set()
    await running
    assert store.most_at_once == MAX_IN_FLIGHT_PER_PROJECT
    assert 0.3 <= store.rules_at[1] - store.rules_at[0] < 2.0  # the reload refused: its Retry-After
    for rule in rules:
        # Tried again once the Retry-After (0.3 s) was over, not after the 5 s of other failures.
        waited = store.read_at[rule.query][0] - store.refused[rule.query]
        assert 0.3 <= waited < 2.0, (rule.id, waited)


@contextlib.asynccontextmanager
async def worker_port_answering(
    handler: Callable[[web.Request], Awaitable[web.Response]], home: Any
) -> AsyncIterator[WorkerBackend]:
    """A WorkerBackend whose worker's internal port is `handler`, answering every op."""
    app = web.Application()
    app.router.add_post("/internal/v1/{kind}/{op}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    backend = WorkerBackend(
        Settings.from_env({"MILLRACE_HOME": str(home), "MILLRACE_WORKER_QUERY_PORT": str(port)})
    )
    try:
        yield backend
    finally:
        await backend.close()
        await runner.cleanup()


async def test_the_worker_backend_gives_a_project_two_calls_at_once_whoever_makes_them(tmp_path: Any) -> None:
    """Reads, state writes and delivery records of one project share its turns (the worker's
    read slots refuse past a few); another project and the rules' reload do not wait for them."""
    in_flight: Counter[str] = Counter()
    most: Counter[str] = Counter()
    calls: list[str] = []
    total = {"shop": 10, "blog": 2, "": 3}
    # Each call is held until as many calls of its project as may be in flight are (or no more
    # are coming), then a little longer: a call past the bound would arrive meanwhile.
    bound = {"shop": CALLS_PER_PROJECT, "blog": 2, "": 3}

    async def internal_port(request: web.Request) -> web.Response:
        payload = orjson.loads(await request.read())
        project = payload.get("project", "")
        calls.append(project)
        in_flight[project] += 1
        most[project] = max(most[project], in_flight[project])
        try:
            await wait_for(
                lambda: in_flight[project] >= bound[project] or calls.count(project) == total[project],
                5,
                f"{bound[project]} calls of {project!r} in flight",
            )
            await asyncio.sleep(0.05)
        finally:
            in_flight[project] -= 1
        return web.json_response({"result": []})

    async with worker_port_answering(internal_port, tmp_path) as backend:
        await asyncio.gather(
            *(backend.read("alert_values", {"project": "shop", "query": "x"}) for _ in range(4)),
            *(backend.store("put_delivery", {"project": "shop", "attempt": {}}) for _ in range(6)),
            *(backend.store("put_state", {"project": "blog", "rule_id": "r", "state": {}}) for _ in range(2)),
            *(backend.store("rules", {}) for _ in range(3)),
        )
        assert not backend._turns  # no caller left: nothing kept per project
    assert Counter(calls) == total  # every call made once, none given up on
    assert most == {"shop": CALLS_PER_PROJECT, "blog": 2, "": 3}


async def test_a_call_that_waits_too_long_for_its_projects_turn_counts_as_busy(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluator's main loop makes calls too (a deleted rule's last transitions): one that
    cannot get a turn within TURN_WAIT_S fails as busy, to be retried, instead of waiting on."""
    import alerts.backend

    monkeypatch.setattr(alerts.backend, "TURN_WAIT_S", 0.2)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({"result": []})

    async with worker_port_answering(slow, tmp_path) as backend:
        outcomes = await asyncio.gather(
            *(backend.store("put_state", {"project": "shop"}) for _ in range(CALLS_PER_PROJECT + 1)),
            return_exceptions=True,
        )
    busy = [o for o in outcomes if isinstance(o, StoreBusy)]
    assert outcomes.count([]) == CALLS_PER_PROJECT and len(busy) == 1, outcomes
    assert busy[0].retry_after_s == 1.0


@pytest.mark.parametrize(
    ("url", "allowed", "refused"),
    [
        ("ftp://example.com/x", True, "only http"),
        ("http://127.0.0.1:9000/x", False, "not a public address"),
        ("http://169.254.169.254/latest/meta-data", False, "not a public address"),
        ("http://10.1.2.3/x", False, "not a public address"),
        ("http://localhost:9000/x", False, "internal host"),
        ("http://127.0.0.1:8091/x", True, "internal port"),  # never, even when allowed
    ],
)
def test_webhook_targets_are_public_http_unless_allowed(url: str, allowed: bool, refused: str) -> None:
    problem = url_problem(url, allowed, internal_port=8091)
    assert problem is not None and refused in problem
    assert url_problem("https://hooks.example.com/x", False, 8091) is None
    assert url_problem("http://127.0.0.1:9000/x", True, 8091) is None


# -- processes ---------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    status: int = 200
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def bodies(self, state: str | None = None) -> list[dict[str, Any]]:
        found = [orjson.loads(b) for _, b in self.calls]
        return [b for b in found if state is None or b["state"] == state]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    got = Receiver(f"http://127.0.0.1:{port}/hook")

    async def hook(request: web.Request) -> web.Response:
        got.calls.append((dict(request.headers), await request.read()))
        return web.Response(status=got.status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield got
    await runner.cleanup()


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Awaitable[Gateway]]) -> Gateway:
    """A gateway whose operator allows loopback webhooks (the test's receiver)."""
    return await gateway_factory(alert_allow_private_targets=True)


def settings_for(stack: Stack) -> Settings:
    return replace(stack.settings, alert_allow_private_targets=True)


class Evaluators:
    """Starts evaluators like `millrace alerts` does, stops them when asked or at the test's end."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.running: dict[int, tuple[Evaluator, asyncio.Event, asyncio.Task[None]]] = {}

    async def start(self, backend: Backend | None = None, **options: Any) -> Evaluator:
        settings = settings_for(self.stack)
        evaluator = Evaluator(settings, backend or WorkerBackend(settings), **options)
        await evaluator.start()
        stop = asyncio.Event()
        self.running[id(evaluator)] = (evaluator, stop, asyncio.create_task(evaluator.run(stop)))
        return evaluator

    async def stop(self, evaluator: Evaluator) -> None:
        _, stop, task = self.running.pop(id(evaluator))
        stop.set()
        await task
        await evaluator.close()  # leaves the group: another replica takes its partitions

    async def stop_all(self) -> None:
        for evaluator, _, _ in list(self.running.values()):
            await self.stop(evaluator)


class Watched:
    """A backend that counts the rule reads one replica has in flight, and the refused ones."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.in_flight = self.most_at_once = self.busy = 0

    async def read(self, op: str, payload: dict[str, Any]) -> Any:
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            return await self.inner.read(op, payload)
        except StoreBusy:
            self.busy += 1
            raise
        finally:
            self.in_flight -= 1

    async def store(self, op: str, payload: dict[str, Any]) -> Any:
        return await self.inner.store(op, payload)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
async def evaluators(stack: Stack) -> AsyncIterator[Evaluators]:
    started = Evaluators(stack)
    yield started
    await started.stop_all()


async def api(
    stack: Stack, method: str, path: str, key: str | None, body: Any = None, base: str | None = None
) -> tuple[int, Any]:
    """One request to the stack's gateway (or the one at `base`), its status and JSON answer."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = orjson.dumps(body) if body is not None else None
    async with stack.session.request(method, (base or stack.url) + path, data=data, headers=headers) as resp:
        return resp.status, orjson.loads(await resp.read())


async def tenant(stack: Stack, name: str, gw: Gateway | None = None) -> Tenant:
    t = await stack.tenant(f"{name}-{uuid.uuid4().hex[:8]}")
    if gw is not None:
        await gw.wait_for_key(t.key)
        await gw.wait_for_key(t.read_key)
    return t


async def send_errors(stack: Stack, t: Tenant, n: int, seconds_ago: float) -> None:
    """`n` GoodLogs errors stamped `seconds_ago`: they leave a 1-minute window that much sooner."""
    when = (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()
    batch = [{"severity": "error", "message": f"Payment failed {i}", "timestamp": when} for i in range(n)]
    status, body = await api(stack, "POST", "/v1/logs", t.key, {"batch": batch})
    assert (status, body) == (202, {"accepted": n, "rejected": 0})


async def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def errors_rule(url: str, secret: str = "s3cret", **extra: Any) -> dict[str, Any]:
    return {
        "name": "payment errors",
        "query": "severity:error | count",
        "condition": {"op": ">", "threshold": 10},
        "window": "1m",
        "interval": "1s",
        "channels": [{"type": "webhook", "url": url, "secret": secret}],
        **extra,
    }


async def create_rule(stack: Stack, gw: Gateway, t: Tenant, rule: dict[str, Any]) -> dict[str, Any]:
    """A rule created through `gw`'s API (the gateway that allows loopback webhooks)."""
    status, created = await api(stack, "POST", "/v1/alerts", t.key, rule, base=gw.url)
    assert status == 201, created
    return cast(dict[str, Any], created)


async def gql(stack: Stack, t: Tenant, q: str) -> Any:
    status, body = await api(stack, "POST", "/v1/gql/query", t.read_key, {"q": q})
    assert status == 200, body
    return body["data"]


@pytest.mark.integration
async def test_the_rules_api_creates_lists_updates_and_deletes_within_the_project(stack: Stack) -> None:
    a, b = await tenant(stack, "rules-a"), await tenant(stack, "rules-b")
    rule_body = errors_rule("https://hooks.example.com/x")
    status, created = await api(stack, "POST", "/v1/alerts", a.key, rule_body)
    assert status == 201, created
    assert created["channels"] == [
        {"type": "webhook", "url": "https://hooks.example.com/x", "secret_set": True}
    ]
    assert (created["condition"], created["window"], created["interval"], created["enabled"]) == (
        {"op": ">", "threshold": 10},
        "1m",
        "1s",
        True,
    )
    rule_id = created["id"]
    status, listed = await api(stack, "GET", "/v1/alerts", a.key)
    assert (status, [r["id"] for r in listed["alerts"]]) == (200, [rule_id])
    assert "s3cret" not in orjson.dumps(listed).decode()  # secrets are never shown

    status, updated = await api(
        stack, "PUT", f"/v1/alerts/{rule_id}", a.key, {"condition": {"op": ">=", "threshold": 5}}
    )
    assert (status, updated["condition"], updated["name"]) == (
        200,
        {"op": ">=", "threshold": 5},
        "payment errors",
    )
    status, shown = await api(stack, "GET", f"/v1/alerts/{rule_id}", a.key)
    assert (status, shown["condition"], shown["state"], shown["deliveries"]) == (
        200,
        {"op": ">=", "threshold": 5},
        [],
        [],
    )

    # Another project's key: the rule does not exist for it, in any verb.
    assert (await api(stack, "GET", "/v1/alerts", b.key)) == (200, {"alerts": []})
    for method in ("GET", "PUT", "DELETE"):
        status, body = await api(
            stack, method, f"/v1/alerts/{rule_id}", b.key, {} if method == "PUT" else None
        )
        assert (status, body["error"]["code"]) == (404, "NOT_FOUND"), method

    # Scopes: data:read alone may do nothing here; alerts:read may look, not write.
    status, body = await api(stack, "GET", "/v1/alerts", a.read_key)
    assert (status, body["error"]["code"]) == (403, "FORBIDDEN")
    _, reader = await keys.create(stack.settings, a.project, frozenset({keys.SCOPE_ALERTS_READ}))
    await stack.wait_for_key(reader)
    assert (await api(stack, "GET", "/v1/alerts", reader))[0] == 200
    status, body = await api(stack, "POST", "/v1/alerts", reader, rule_body)
    assert (status, body["error"]["code"]) == (403, "FORBIDDEN")
    assert (await api(stack, "GET", "/v1/alerts", None))[0] == 401

    status, body = await api(stack, "DELETE", f"/v1/alerts/{rule_id}", a.key)
    assert (status, body) == (200, {"id": rule_id, "deleted": True})
    assert (await api(stack, "GET", "/v1/alerts", a.key)) == (200, {"alerts": []})
    assert (await api(stack, "GET", f"/v1/alerts/{rule_id}", a.key))[0] == 404


@pytest.mark.integration
async def test_bad_rules_are_refused_in_the_goodlogs_format(stack: Stack) -> None:
    a = await tenant(stack, "rules-bad")
    status, body = await api(
        stack,
        "POST",
        "/v1/alerts",
        a.key,
        {**errors_rule("https://h.example.com"), "query": "severity:error | count by"},
    )
    assert (status, body["error"]["code"], body["error"]["position"]) == (400, "VALIDATION_ERROR", 25)
    status, body = await api(
        stack,
        "POST",
        "/v1/alerts",
        a.key,
        {**errors_rule("https://h.example.com"), "query": "severity:error"},
    )
    assert (status, body["error"]["position"]) == (422, 14)
    cases = [
        ({**errors_rule("https://h.example.com"), "condition": {"op": "~", "threshold": 1}}, "condition.op"),
        ({**errors_rule("https://h.example.com"), "window": "5 minutes"}, "window"),
        ({**errors_rule("https://h.example.com"), "colour": "red"}, "unknown field"),
        (errors_rule("http://127.0.0.1:9/x"), "not a public address"),  # this gateway allows no loopback
        (errors_rule("file:///etc/passwd"), "only http"),
        ([1, 2], "JSON object"),
    ]
    for rule_body, needle in cases:
        status, body = await api(stack, "POST", "/v1/alerts", a.key, rule_body)
        assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR"), body
        assert needle in body["error"]["message"]
    async with stack.session.post(
        stack.url + "/v1/alerts", data=b"{not json", headers={"Authorization": f"Bearer {a.key}"}
    ) as resp:
        assert (resp.status, (await resp.json())["error"]["code"]) == (400, "VALIDATION_ERROR")
    assert (await api(stack, "GET", "/v1/alerts", a.key)) == (200, {"alerts": []})


def metric(family: str, label: str) -> float:
    """An alert counter of this process's registry (the test's evaluators run in it)."""
    name = f"millrace_alert_{family}_total"
    key = "state" if family == "transitions" else "outcome"
    return metrics.REGISTRY.get_sample_value(name, {key: label}) or 0.0


def verify(receiver: Receiver, secret: str) -> None:
    for headers, body in receiver.calls:
        assert (
            headers["X-Millrace-Signature"]
            == "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        )
        assert headers["X-Millrace-Event-Id"] == orjson.loads(body)["id"]


@pytest.mark.integration
async def test_errors_fire_a_signed_webhook_then_resolve_and_other_projects_see_nothing(
    stack: Stack, gateway: Gateway, receiver: Receiver, evaluators: Evaluators
) -> None:
    a, b = await tenant(stack, "fire-a", gateway), await tenant(stack, "fire-b", gateway)
    created = await create_rule(stack, gateway, a, errors_rule(receiver.url))
    counters = {
        (family, label): metric(family, label)
        for family, label in (
            ("transitions", "firing"),
            ("transitions", "resolved"),
            ("webhooks", "delivered"),
        )
    }
    await evaluators.start()
    # 11 errors stamped 45 s ago: over the threshold now, out of the 1-minute window ~15 s later.
    await send_errors(stack, a, 11, seconds_ago=45)
    assert await stack.wait_rows(a.project, 11) == 11
    landed = time.monotonic()
    await wait_for(lambda: receiver.bodies("firing"), 20, "the firing webhook")
    firing_after_s = time.monotonic() - landed
    (fired,) = receiver.bodies("firing")
    assert (fired["type"], fired["value"], fired["condition"], fired["rule"]) == (
        "alert.firing",
        11,
        {"op": ">", "threshold": 10},
        {"id": created["id"], "name": "payment errors"},
    )
    assert firing_after_s < 2 * 1 + 3  # two 1 s intervals, plus the read and the POST
    verify(receiver, "s3cret")

    await wait_for(lambda: receiver.bodies("resolved"), 40, "the resolved webhook")
    (resolved,) = receiver.bodies("resolved")
    assert (resolved["previous_state"], resolved["value"]) == ("firing", 0)
    assert resolved["id"] != fired["id"]
    verify(receiver, "s3cret")

    timeline = await gql(stack, a, "from:alert_events | last 7d")
    assert [(e["state"], e["previous_state"], e["value"], e["threshold"]) for e in timeline["results"]] == [
        ("resolved", "firing", 0, 10),
        ("firing", "ok", 11, 10),
    ]
    assert [e["event_id"] for e in timeline["results"]] == [resolved["id"], fired["id"]]
    counted = await gql(stack, a, "from:alert_events | count by rule")
    assert counted["results"] == [{"rule": created["id"], "value": 2}]
    # The evaluator's metrics saw the same: one move each way, both webhooks delivered first time.
    assert {k: metric(*k) - n for k, n in counters.items()} == {
        ("transitions", "firing"): 1,
        ("transitions", "resolved"): 1,
        ("webhooks", "delivered"): 2,
    }
    assert metric("evaluations", "ok") >= 2
    firing_only = await gql(stack, a, "from:alert_events state:firing | last 1h")
    assert [e["event_id"] for e in firing_only["results"]] == [fired["id"]]

    status, shown = await api(stack, "GET", f"/v1/alerts/{created['id']}", a.key, base=gateway.url)
    assert status == 200
    assert shown["state"][0]["state"] == "resolved"
    assert sorted((d["event_id"], d["outcome"], d["status"]) for d in shown["deliveries"]) == sorted(
        [(fired["id"], "delivered", 200), (resolved["id"], "delivered", 200)]
    )

    # The second project: no rules, no events, not even by id.
    assert (await api(stack, "GET", "/v1/alerts", b.key, base=gateway.url)) == (200, {"alerts": []})
    assert (await api(stack, "GET", f"/v1/alerts/{created['id']}", b.key, base=gateway.url))[0] == 404
    assert (await gql(stack, b, "from:alert_events | last 7d"))["results"] == []
    assert (await gql(stack, b, "from:alert_events | count"))["results"] == [{"value": 0}]
    await api(stack, "DELETE", f"/v1/alerts/{created['id']}", a.key, base=gateway.url)


@pytest.mark.integration
async def test_a_firing_rule_disabled_or_deleted_sends_resolved_and_a_reenabled_one_fires_again(
    stack: Stack, gateway: Gateway, receiver: Receiver, evaluators: Evaluators
) -> None:
    t = await tenant(stack, "retire", gateway)
    created = await create_rule(stack, gateway, t, errors_rule(receiver.url))
    path = f"/v1/alerts/{created['id']}"
    await evaluators.start()
    await send_errors(stack, t, 11, seconds_ago=5)  # in the 1-minute window for the whole test
    assert await stack.wait_rows(t.project, 11) == 11
    await wait_for(lambda: receiver.bodies("firing"), 20, "the firing webhook")

    assert (await api(stack, "PUT", path, t.key, {"enabled": False}, base=gateway.url))[0] == 200
    await wait_for(lambda: receiver.bodies("resolved"), 10, "the resolved webhook of the disabled rule")
    (resolved,) = receiver.bodies("resolved")
    assert (resolved["previous_state"], resolved["value"], resolved["rule"]["id"]) == (
        "firing",
        11,
        created["id"],
    )
    verify(receiver, "s3cret")

    assert (await api(stack, "PUT", path, t.key, {"enabled": True}, base=gateway.url))[0] == 200
    await wait_for(lambda: len(receiver.bodies("firing")) == 2, 10, "the re-enabled rule firing again")
    assert (await api(stack, "DELETE", path, t.key, base=gateway.url))[0] == 200
    await wait_for(
        lambda: len(receiver.bodies("resolved")) == 2, 10, "the resolved webhook of the deleted rule"
    )

    timeline = await gql(stack, t, "from:alert_events | last 7d")
    assert [(e["state"], e["previous_state"]) for e in timeline["results"]] == [
        ("resolved", "firing"),
        ("firing", "resolved"),
        ("resolved", "firing"),
        ("firing", "ok"),
    ]
    assert len({b["id"] for b in receiver.bodies()}) == 4  # each transition sent once


class FailOnce:
    """The real backend, except that one named store operation fails once (a crash between writes)."""

    def __init__(self, inner: Backend, op: str) -> None:
        self.inner, self.op, self.failed = inner, op, False

    async def read(self, op: str, payload: dict[str, Any]) -> Any:
        return await self.inner.read(op, payload)

    async def store(self, op: str, payload: dict[str, Any]) -> Any:
        if op == self.op and not self.failed:
            self.failed = True
            raise StoreUnavailable("injected: the process died here")
        return await self.inner.store(op, payload)

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.integration
async def test_a_restart_mid_firing_repeats_no_transition(
    stack: Stack, gateway: Gateway, receiver: Receiver, evaluators: Evaluators
) -> None:
    a = await tenant(stack, "restart", gateway)
    created = await create_rule(stack, gateway, a, errors_rule(receiver.url))
    # The first evaluator "dies" after writing the firing event but before writing the state:
    # it is evaluated again and must find the same event id.
    first = await evaluators.start(FailOnce(WorkerBackend(settings_for(stack)), "put_state"))
    await send_errors(stack, a, 12, seconds_ago=0)
    await wait_for(lambda: receiver.bodies("firing"), 30, "the firing webhook")
    await wait_for(lambda: first.evaluations[created["id"]] >= 3, 10, "more evaluations")
    await evaluators.stop(first)  # leaves the group: the next one owns every partition
    first_calls = len(receiver.calls)

    second = await evaluators.start()
    await wait_for(
        lambda: second.evaluations[created["id"]] >= 3, 20, "the restarted evaluator's evaluations"
    )
    events = await gql(stack, a, "from:alert_events | last 1h")
    assert [(e["state"], e["previous_state"]) for e in events["results"]] == [("firing", "ok")]
    assert len(receiver.bodies("firing")) == first_calls == 1
    stored = stack.query(
        "SELECT count() FROM alert_events WHERE project = {p:String}", p=a.project
    )  # without FINAL: the retried insert may be a second row, one event once merged/FINAL
    assert stored[0][0] in (1, 2)
    await api(stack, "DELETE", f"/v1/alerts/{created['id']}", a.key, base=gateway.url)


@pytest.mark.integration
async def test_a_failing_receiver_is_retried_then_failed_and_ingest_goes_on(
    stack: Stack, gateway: Gateway, receiver: Receiver, evaluators: Evaluators
) -> None:
    receiver.status = 500
    a = await tenant(stack, "failing", gateway)
    created = await create_rule(stack, gateway, a, errors_rule(receiver.url))
    await evaluators.start(backoff_base_s=0.2, retry_for_s=2.0)
    await send_errors(stack, a, 11, seconds_ago=0)

    async def failed() -> list[dict[str, Any]]:
        _, shown = await api(stack, "GET", f"/v1/alerts/{created['id']}", a.key, base=gateway.url)
        return [d for d in shown["deliveries"] if d["outcome"] == "failed"]

    (final,) = await wait_for(failed, 30, "the recorded failure")
    _, shown = await api(stack, "GET", f"/v1/alerts/{created['id']}", a.key, base=gateway.url)
    attempts = [d for d in shown["deliveries"] if d["event_id"] == final["event_id"]]
    assert len(attempts) >= 3 and len(receiver.calls) == len(attempts)
    assert {d["outcome"] for d in attempts} == {"retrying", "failed"}
    assert {(d["status"], d["error"]) for d in attempts} == {(500, "the receiver answered 500")}
    assert max(d["attempt"] for d in attempts) == final["attempt"] == len(attempts)
    # Ingest never waited on the receiver.
    await send_errors(stack, a, 5, seconds_ago=0)
    assert await stack.wait_rows(a.project, 16) == 16
    await api(stack, "DELETE", f"/v1/alerts/{created['id']}", a.key, base=gateway.url)


@pytest.mark.integration
async def test_a_delivery_owed_by_a_stopped_evaluator_is_resumed_by_the_next(
    stack: Stack, gateway: Gateway, receiver: Receiver, evaluators: Evaluators
) -> None:
    """At least once: the next owner of the rule resends what was neither delivered nor failed,
    with the same event id and signature, and its attempts go on counting."""
    receiver.status = 503
    a = await tenant(stack, "resume", gateway)
    created = await create_rule(stack, gateway, a, errors_rule(receiver.url))
    first = await evaluators.start(backoff_base_s=0.3, retry_for_s=120)
    await send_errors(stack, a, 11, seconds_ago=0)
    await wait_for(lambda: len(receiver.calls) >= 2, 30, "two failed attempts")
    await evaluators.stop(first)  # its retries die with it; the attempts table remembers them
    tried = len(receiver.calls)
    receiver.status = 200
    await evaluators.start(backoff_base_s=0.3, retry_for_s=120)
    await wait_for(lambda: len(receiver.calls) > tried, 30, "the resumed delivery")
    assert {orjson.loads(b)["id"] for _, b in receiver.calls} == {orjson.loads(receiver.calls[0][1])["id"]}
    assert len({b for _, b in receiver.calls}) == 1  # the very same body every time
    verify(receiver, "s3cret")

    async def delivered() -> list[dict[str, Any]]:
        _, shown = await api(stack, "GET", f"/v1/alerts/{created['id']}", a.key, base=gateway.url)
        return [d for d in shown["deliveries"] if d["outcome"] == "delivered"]

    (done,) = await wait_for(delivered, 10, "the delivered attempt")
    assert done["attempt"] == tried + 1
    await api(stack, "DELETE", f"/v1/alerts/{created['id']}", a.key, base=gateway.url)


@pytest.mark.integration
async def test_two_replicas_evaluate_each_rule_once(
    stack: Stack, gateway: Gateway, evaluators: Evaluators
) -> None:
    a = await tenant(stack, "replicas", gateway)
    ids = []
    for i in range(8):
        body = {**errors_rule("https://hooks.example.com/x"), "name": f"rule {i}"}
        status, created = await api(stack, "POST", "/v1/alerts", a.key, body, base=gateway.url)
        assert status == 201
        ids.append(created["id"])
    # A damaged row is skipped by the API and the evaluators alike, never a crash.
    alert_store.put_rule(stack.client, a.project, "alr_damaged", "{not a rule")
    assert (await api(stack, "GET", "/v1/alerts", a.key, base=gateway.url))[0] == 200
    settings = settings_for(stack)
    watched = [Watched(WorkerBackend(settings)), Watched(WorkerBackend(settings))]
    one, two = await evaluators.start(watched[0]), await evaluators.start(watched[1])
    await wait_for(
        lambda: (
            one.owners.partitions
            and two.owners.partitions
            and len(one.owners.partitions | two.owners.partitions) == 8
        ),
        30,
        "both replicas to own partitions",
    )
    assert not one.owners.partitions & two.owners.partitions
    one.evaluations.clear()
    two.evaluations.clear()
    await asyncio.sleep(4)
    mine = {i for i in ids if one.evaluations[i]}
    theirs = {i for i in ids if two.evaluations[i]}
    assert (mine | theirs, mine & theirs) == (set(ids), set())
    # Each replica holds at most its share of the project's read slots, so none is refused.
    assert max(w.most_at_once for w in watched) <= MAX_IN_FLIGHT_PER_PROJECT
    assert [w.busy for w in watched] == [0, 0]
    for rule_id in ids:
        await api(stack, "DELETE", f"/v1/alerts/{rule_id}", a.key, base=gateway.url)


def test_alert_scopes_are_scopes_keys_create_accepts() -> None:
    record, _ = keys.new_key("shop", keys.parse_scopes("alerts:read,alerts:write"))
    assert record.scopes == {"alerts:read", "alerts:write"}
    assert cli_parser().parse_args(["keys", "create", "--project", "p", "--scopes", "alerts:read"]).scopes


def test_autocomplete_knows_the_alert_timeline() -> None:
    empty = {"log_properties": [], "event_properties": [], "event_names": []}
    assert [s["text"] for s in suggest("from:al", 7, empty)["suggestions"]] == ["alert_events"]
    assert [s["text"] for s in suggest("from:alert_events st", 20, empty)["suggestions"]] == ["state:"]
    assert [s["text"] for s in suggest("from:alert_events state:f", 25, empty)["suggestions"]] == ["firing"]


def test_the_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"id":"evt_1"}'
    assert signature("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
