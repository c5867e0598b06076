"""The evaluator process (`millrace alerts`): every owned rule at its interval, through the
read core, then events, state and webhooks.

Order per transition, for restarts without duplicates: the event is written first (its id
is deterministic), then the group's state with the next sequence number, and only then
is the webhook queued. A crash before the state write re-evaluates to the same event id
(the store keeps one row); a crash after it finds the state moved on (no second event),
and the deliveries it still owed are found again from the attempts table (`unfinished`)
when the rule is next acquired. Rules are re-read every RELOAD_S, so an API change or a
new rule is picked up within about a second. A rule deleted or disabled while one of its
groups fires is retired by its owner: the group resolves (event, state, webhook to the
channels the rule had), so a receiver is never left with an incident nothing will close.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable

import structlog
import uvloop
from aiohttp import web

from alerts.backend import CALLS_PER_PROJECT, Backend, StoreUnavailable, backend_for, retry_in
from alerts.evaluate import NOTIFYING, GroupState, step
from alerts.owners import Owners
from alerts.webhook import BACKOFF_BASE_S, RETRY_FOR_S, Deliverer, Job
from millrace import metrics
from millrace.config import Settings
from reads.alerts import Rule, readable

log = structlog.get_logger()

RELOAD_S = 1.0
TICK_S = 0.25
RETRY_AFTER_FAILURE_S = 5.0
MAX_IN_FLIGHT = 8  # rules evaluated at once by one evaluator
# Rules of one project evaluated at once by one evaluator: as many as the backend lets a project
# have calls in flight (more would only queue there). The worker runs a project's reads in a few
# slots and refuses past them (429); two replicas at this bound leave the project's own readers
# a slot, where eight rules at once had some refused round after round.
MAX_IN_FLIGHT_PER_PROJECT = CALLS_PER_PROJECT


class Evaluator:
    def __init__(
        self,
        settings: Settings,
        backend: Backend | None = None,
        *,
        backoff_base_s: float = BACKOFF_BASE_S,
        retry_for_s: float = RETRY_FOR_S,
    ) -> None:
        self.settings = settings
        self.backend = backend or backend_for(settings)
        self.owners = Owners(settings)
        self.deliverer = Deliverer(
            settings, self.backend, backoff_base_s=backoff_base_s, retry_for_s=retry_for_s
        )
        self.rules: dict[str, Rule] = {}
        self._next_reload = 0.0
        self._due: dict[str, float] = {}
        self._states: dict[str, dict[str, GroupState]] = {}
        self.evaluations: Counter[str] = Counter()  # rule id -> evaluations by this replica
        self._running: dict[str, asyncio.Task[None]] = {}
        self._running_in: Counter[str] = Counter()  # project -> its rules running now
        self._retiring: dict[str, Rule] = {}  # deleted or disabled while ours, groups still up

    async def start(self) -> None:
        await self.owners.start()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pause = TICK_S
            try:
                await self.tick()
            except StoreUnavailable as exc:  # the worker restarting, the server away: wait, retry
                pause = retry_in(exc, RETRY_AFTER_FAILURE_S)
                log.warning("alerts_store_unavailable", error=str(exc), retry_in_s=pause)
            except Exception:  # a bug costs a round, never the process (a crash loop stops `run`)
                log.exception("alerts_round_failed", retry_in_s=RETRY_AFTER_FAILURE_S)
                pause = RETRY_AFTER_FAILURE_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    async def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_reload:
            rules = {r.id: r for r in _parsed(await self.backend.store("rules", {}))}
            for rule_id, old in self.rules.items():
                new = rules.get(rule_id)
                if (new is None or not new.enabled) and self._mine(old) and rule_id in self._states:
                    self._retiring[rule_id] = old
            self.rules = rules
            self._next_reload = now + RELOAD_S
        for rule_id, old in list(self._retiring.items()):
            if rule_id not in self._running:  # its last round first: one writer of its state
                await self._retire(old)  # a store outage: tried again next tick
                del self._retiring[rule_id]
        retiring = set(self._retiring)
        for rule_id in (
            set(self._states) - retiring - {r for r, rule in self.rules.items() if self._mine(rule)}
        ):
            # Lost (or deleted, disabled): forget it; whoever owns it next reads its state back.
            self._states.pop(rule_id, None)
            self._due.pop(rule_id, None)
        # The longest overdue first, so a project's rules take their turns under its bound.
        for rule in sorted(self.rules.values(), key=lambda r: self._due.get(r.id, 0.0)):
            if len(self._running) >= MAX_IN_FLIGHT:
                break
            if not self._mine(rule) or rule.id in self._running:
                continue
            if time.monotonic() < self._due.get(rule.id, 0.0):
                break  # sorted by due time: none after it is due either
            if self._running_in[rule.project] >= MAX_IN_FLIGHT_PER_PROJECT:
                continue
            # Rules run side by side (a slow query holds up only its own rule), one at a time each.
            task = asyncio.create_task(self._round(rule), name=f"alert-{rule.id}")
            self._running[rule.id] = task
            self._running_in[rule.project] += 1
            task.add_done_callback(self._finished(rule.id, rule.project))

    def _finished(self, rule_id: str, project: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(task: asyncio.Task[None]) -> None:
            self._running.pop(rule_id, None)
            self._running_in[project] -= 1
            if not self._running_in[project]:
                del self._running_in[project]

        return forget

    async def _round(self, rule: Rule) -> None:
        """One evaluation of `rule` (acquiring it first if it is newly ours), then its next due time."""
        started = time.monotonic()
        try:
            states = self._states.get(rule.id)
            if states is None:
                states = await self._acquire(rule)
            await self.evaluate(rule, states)
        except Exception as exc:  # this rule waits; the others go on
            metrics.ALERT_EVALUATIONS.labels("failed").inc()
            log.warning("alert_evaluation_failed", rule_id=rule.id, project=rule.project, error=str(exc))
            self._due[rule.id] = time.monotonic() + min(rule.interval_s, retry_in(exc, RETRY_AFTER_FAILURE_S))
            return
        finally:
            if not self.owners.owns(rule.id):
                # Lost while it ran: what it knows may go stale; the next owner reads the store.
                self._states.pop(rule.id, None)
        # From the previous due time, so evaluations keep their rhythm (not drift by their cost).
        due = self._due.get(rule.id, started) + rule.interval_s
        self._due[rule.id] = due if due > time.monotonic() else time.monotonic() + rule.interval_s

    def _mine(self, rule: Rule) -> bool:
        return rule.enabled and self.owners.owns(rule.id)

    async def _acquire(self, rule: Rule) -> dict[str, GroupState]:
        """A rule newly ours: its groups' state from the store, and the webhooks still owed."""
        ref = {"project": rule.project, "rule_id": rule.id}
        stored = await self.backend.store("states", ref)
        since = time.time_ns() - int(self.deliverer.retry_for_s * 1e9)
        owed_list = await self.backend.store("unfinished", {**ref, "since_ns": since})
        # Only now: a failure above leaves the rule unacquired, to be tried again whole.
        states = self._states[rule.id] = {s["group_key"]: GroupState(**s) for s in stored}
        for owed in owed_list:
            for channel in rule.channels:
                if channel.url not in owed["done_urls"]:
                    tried = owed["attempts"].get(channel.url, 0)
                    self.deliverer.submit(Job(owed["event"], channel.url, channel.secret, tried))
        self._due[rule.id] = time.monotonic()
        return states

    async def evaluate(self, rule: Rule, states: dict[str, GroupState]) -> None:
        """One evaluation: the rule's values now, and a transition for each group that moves."""
        now_ns = time.time_ns()
        values = await self.backend.read(
            "alert_values",
            {"project": rule.project, "query": rule.query, "window_s": rule.window_s, "now_ns": now_ns},
        )
        self.evaluations[rule.id] += 1
        metrics.ALERT_EVALUATIONS.labels("ok").inc()
        seen = set()
        for item in values:
            key = item["group_key"]
            seen.add(key)
            await self._apply(rule, states, states.get(key) or GroupState(key), float(item["value"]), now_ns)
        for key, prior in list(states.items()):
            # A group that no longer shows up counts nothing now (a count by service with no rows).
            if key not in seen and prior.state in ("pending", "firing"):
                await self._apply(rule, states, prior, 0.0, now_ns)

    async def _retire(self, rule: Rule) -> None:
        """A rule gone (deleted, disabled): its pending and firing groups move as if it stopped holding."""
        states = self._states.get(rule.id, {})
        now_ns = time.time_ns()
        for prior in list(states.values()):
            if prior.state in ("pending", "firing"):
                await self._apply(rule, states, prior, prior.value, now_ns, retired=True)
        self._states.pop(rule.id, None)
        self._due.pop(rule.id, None)

    async def _apply(
        self,
        rule: Rule,
        states: dict[str, GroupState],
        prior: GroupState,
        value: float,
        now_ns: int,
        retired: bool = False,
    ) -> None:
        nxt, event = step(rule, prior, value, now_ns, retired)
        if event is None:
            states[prior.group_key] = nxt
            return
        await self.backend.store("put_event", {"project": rule.project, "event": event})
        await self.backend.store(
            "put_state", {"project": rule.project, "rule_id": rule.id, "state": nxt.to_dict()}
        )
        states[prior.group_key] = nxt
        metrics.ALERT_TRANSITIONS.labels(nxt.state).inc()
        log.info(
            "alert_transition",
            rule_id=rule.id,
            project=rule.project,
            group=prior.group_key,
            state=nxt.state,
            previous=prior.state,
            value=value,
            event_id=event["event_id"],
        )
        if event["state"] in NOTIFYING:
            for channel in rule.channels:
                self.deliverer.submit(Job(event, channel.url, channel.secret))

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        await self.owners.stop()
        await self.deliverer.close()
        await self.backend.close()


def _parsed(bodies: list[str]) -> list[Rule]:
    rules, problems = readable(bodies)
    for problem in problems:
        log.error("alert_rule_unreadable", error=problem)
    return rules


def health_app(evaluator: Evaluator) -> web.Application:
    """`/internal/health` (the partitions it owns) and `/metrics`: for container probes and
    Prometheus, when MILLRACE_ALERTS_PORT is set. No tenant data."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "partitions": sorted(evaluator.owners.partitions)})

    app = web.Application()
    app.router.add_get("/internal/health", health)
    app.router.add_get("/metrics", metrics.handle)
    return app


async def main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    evaluator = Evaluator(settings)
    runner = web.AppRunner(health_app(evaluator), access_log=None)
    try:
        await evaluator.start()
        if settings.alerts_port:
            await runner.setup()
            await web.TCPSite(runner, settings.worker_host, settings.alerts_port).start()
        log.info("alerts_evaluator_started", port=settings.alerts_port or None)
        await evaluator.run(stop)
    finally:
        await runner.cleanup()
        await evaluator.close()


def serve(settings: Settings) -> None:
    uvloop.run(main(settings))
