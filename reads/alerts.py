"""Alert rules: their shape, their validation, and the query an evaluation runs.

A rule is a GQL aggregate (`severity:error | count`, `count by service`) compared with a
threshold over a window. The rules API (gateway/alerts.py) validates a rule here before it
is stored, so a query the evaluator could not run is refused at creation with its
position; the evaluator (alerts/) compiles the same query here, with the rule's window as
its time range, and runs it through `reads.query` like any read.
"""

from __future__ import annotations

import ipaddress
import operator
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import orjson

from reads.gql import GQLError, compile_query, parse
from reads.gql.ast import Bin, Window
from reads.gql.compile import Compiled
from reads.gql.parser import parse_duration

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
}
STATES = ("ok", "pending", "firing", "resolved")
MAX_NAME = 200
MAX_CHANNELS = 5
MIN_INTERVAL_S = 1  # seconds are allowed so tests (and eager users) need not wait minutes
MAX_RULES_PER_PROJECT = 500
_ALLOW = "MILLRACE_ALERT_ALLOW_PRIVATE_TARGETS"
# What GET shows beside the fields: ignored when a rule is sent back (GET, edit, PUT).
_SHOWN_ONLY = {"id", "created_at", "updated_at", "state", "deliveries"}
_FIELDS = {"name", "query", "condition", "window", "interval", "for", "enabled", "channels"}


class RuleError(ValueError):
    """A rule the API refuses: the message says which field and why; `position` points into
    the query when the query is the problem."""

    def __init__(self, message: str, position: int | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.status = status


@dataclass(frozen=True, slots=True)
class Channel:
    url: str
    secret: str = ""

    def public(self) -> dict[str, Any]:
        return {"type": "webhook", "url": self.url, "secret_set": bool(self.secret)}


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    project: str
    name: str
    query: str
    op: str
    threshold: float
    window: str
    interval: str
    for_: str = "0s"
    enabled: bool = True
    channels: tuple[Channel, ...] = ()
    created_at: str = ""
    updated_at: str = ""

    @property
    def window_s(self) -> int:
        return parse_duration(self.window, 0)

    @property
    def interval_s(self) -> int:
        return parse_duration(self.interval, 0)

    @property
    def for_s(self) -> int:
        return 0 if self.for_ in ("", "0", "0s") else parse_duration(self.for_, 0)

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the webhook secrets."""
        return {
            "id": self.id,
            "name": self.name,
            "query": self.query,
            "condition": {"op": self.op, "threshold": _number(self.threshold)},
            "window": self.window,
            "interval": self.interval,
            "for": self.for_,
            "enabled": self.enabled,
            "channels": [c.public() for c in self.channels],
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def to_json(self) -> str:
        """The stored form (secrets included)."""
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, raw: str) -> Rule:
        data = orjson.loads(raw)
        data["channels"] = tuple(Channel(**c) for c in data.get("channels", ()))
        return cls(**data)


def readable(bodies: list[str]) -> tuple[list[Rule], list[str]]:
    """The stored bodies that read as rules, and the problems of those that do not (skipped:
    one damaged row must not take the API or the evaluator down with it)."""
    rules, problems = [], []
    for body in bodies:
        try:
            rules.append(Rule.from_json(body))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            problems.append(f"{type(exc).__name__}: {exc} in {body[:100]!r}")
    return rules, problems


def new_id() -> str:
    return f"alr_{secrets.token_hex(8)}"


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _duration(body: dict[str, Any], name: str, default: str | None) -> str:
    raw = body.get(name, default)
    if raw is None:
        raise RuleError(f"'{name}' is required: a duration such as 5m")
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = f"{raw}s"  # a bare number is seconds
    if not isinstance(raw, str):
        raise RuleError(f"'{name}' must be a duration such as 5m (number and unit s, m, h, d or w)")
    if name == "for" and raw.strip() in ("0", "0s", ""):
        return "0s"
    try:
        parse_duration(raw, 0)
    except GQLError as exc:
        raise RuleError(f"'{name}': {exc.reason}") from None
    return raw.strip().lower()


def parse_rule(
    project: str,
    body: Any,
    *,
    rule_id: str,
    now: str,
    allow_private: bool,
    internal_port: int | None = None,
    existing: Rule | None = None,
) -> Rule:
    """The rule `body` describes (over `existing` for an update: fields absent keep their
    value), or RuleError naming the first problem."""
    if not isinstance(body, dict):
        raise RuleError("the body must be a JSON object describing the rule")
    unknown = sorted(set(body) - _FIELDS - _SHOWN_ONLY)
    if unknown:
        raise RuleError(f"unknown field '{unknown[0]}'; a rule has {', '.join(sorted(_FIELDS))}")
    if existing is not None:
        merged: dict[str, Any] = {
            **existing.public(),
            "channels": [{"url": c.url, "secret": c.secret} for c in existing.channels],
        }
        merged.update(body)
        body = merged
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise RuleError(f"'name' is required: text of 1-{MAX_NAME} characters")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise RuleError("'query' is required: a GQL query that yields a number, e.g. severity:error | count")
    condition = body.get("condition")
    if not isinstance(condition, dict):
        raise RuleError('\'condition\' is required: {"op": ">", "threshold": 10}')
    op = condition.get("op")
    if op not in OPS:
        raise RuleError(f"'condition.op' must be one of {', '.join(OPS)}")
    threshold = condition.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or threshold != threshold:
        raise RuleError("'condition.threshold' must be a number")
    if abs(threshold) == float("inf"):
        raise RuleError("'condition.threshold' must be a finite number")
    window = _duration(body, "window", _query_window(query))
    interval = _duration(body, "interval", "1m")
    for_ = _duration(body, "for", "0s")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError("'enabled' must be true or false")
    # A channel sent back without its secret (as GET shows it) keeps the secret it had.
    kept = {c.url: c.secret for c in existing.channels} if existing else {}
    channels = _channels(body.get("channels", []), allow_private, internal_port, kept)
    compile_alert(query, project, parse_duration(window, 0), now_ns=0, window_given="window" in body)
    return Rule(
        id=rule_id,
        project=project,
        name=name.strip(),
        query=query,
        op=op,
        threshold=float(threshold),
        window=window,
        interval=interval,
        for_=for_,
        enabled=enabled,
        channels=channels,
        created_at=existing.created_at if existing else now,
        updated_at=now,
    )


def _query_window(text: str) -> str | None:
    """The `last <duration>` a query carries itself, if it parses and has one."""
    try:
        window = parse(text).window
    except GQLError:
        return None
    return window.last_text if window is not None and window.last_s is not None else None


def _channels(
    raw: Any, allow_private: bool, internal_port: int | None, kept: dict[str, str]
) -> tuple[Channel, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_CHANNELS:
        raise RuleError(f"'channels' must be a list of at most {MAX_CHANNELS} webhooks")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or item.get("type", "webhook") != "webhook":
            raise RuleError(
                f'channels[{i}] must be {{"type": "webhook", "url": "https://...", "secret": "..."}}'
            )
        url = item.get("url")
        secret = item["secret"] if "secret" in item else kept.get(url, "") if isinstance(url, str) else ""
        if not isinstance(url, str) or not isinstance(secret, str):
            raise RuleError(f"channels[{i}]: 'url' and 'secret' are text")
        problem = url_problem(url, allow_private, internal_port)
        if problem:
            raise RuleError(f"channels[{i}].url: {problem}")
        out.append(Channel(url, secret))
    return tuple(out)


def url_problem(url: str, allow_private: bool, internal_port: int | None = None) -> str | None:
    """Why a webhook may not go to `url` as written (None: it may). The host's addresses are
    checked again when a delivery resolves it (alerts/webhook.py): a name can point anywhere."""
    if len(url) > 2000:
        return "longer than 2000 characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "only http:// and https:// targets are allowed"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if parts.username or parts.password:
        return "credentials in the URL are not allowed; use the channel's secret to authenticate"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if internal_port is not None and port == internal_port and _local_name(host):
        return "that is the worker's internal port; webhooks never go there"
    if allow_private:
        return None
    if host == "localhost" or host.endswith((".localhost", ".internal", ".local")):
        return f"{host} is an internal host; webhooks go to public addresses ({_ALLOW})"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: its addresses are checked when a delivery resolves it
    return address_problem(address, allow_private)


def _local_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def address_problem(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool
) -> str | None:
    """Loopback, private, link-local (cloud metadata) and other non-public addresses are refused
    unless the operator allows them."""
    if allow_private or address.is_global:
        return None
    return f"{address} is not a public address ({_ALLOW} allows it)"


def compile_alert(
    text: str, project: str, window_s: int, now_ns: int, *, window_given: bool = True
) -> Compiled:
    """The rule's query with the rule's window as its time range, compiled; RuleError (with the
    query's position) for a query that does not yield a number per group."""
    try:
        query = parse(text)
        if query.source == "alert_events":
            raise GQLError("an alert watches logs or events, not alert_events", query.source_pos, 422)
        if query.window is not None:
            if query.window.last_s is None:
                raise GQLError(
                    "an alert's time range is its window: use 'last <duration>' or the rule's 'window'",
                    query.window.pos,
                    422,
                )
            if window_given and query.window.last_s != window_s:
                raise GQLError(
                    f"the query says 'last {query.window.last_text}' but the rule's window is different;"
                    " keep one of them",
                    query.window.pos,
                    422,
                )
        agg = query.aggregate
        if agg is None:
            raise GQLError(
                "an alert's query must yield a number: end it with count, count_distinct(...) or"
                " count by <field>",
                len(text),
                422,
            )
        for group in agg.group_by:
            if isinstance(group, Bin):
                raise GQLError("an alert compares one number per group; drop bin(...)", group.pos, 422)
        query = replace(query, window=Window(last_s=window_s, last_text=f"{window_s}s"))
        return compile_query(query, project, now_ns)
    except GQLError as exc:
        raise RuleError(f"'query': {exc}", exc.position, exc.status) from None


@dataclass(frozen=True, slots=True)
class Sample:
    """One group's value at an evaluation."""

    group_key: str  # "" without groups; else the groups as a JSON object, e.g. {"service":"api"}
    value: float
    labels: dict[str, Any] = field(default_factory=dict)


def samples(data: dict[str, Any]) -> list[Sample]:
    """The values of an aggregate answer (`reads.query.run_compiled`), one per group."""
    out = []
    for item in data["results"]:
        labels = {k: v for k, v in item.items() if k != "value"}
        key = orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode() if labels else ""
        out.append(Sample(key, float(item["value"]), labels))
    return out
