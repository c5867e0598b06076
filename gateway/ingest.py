"""The one ingest path every dialect's endpoint runs.

authenticate -> read body (both size caps) -> parse, once (the rows are both the
dialect's synchronous answer and what is stored) -> wrap the rows in an envelope ->
produce, wait for Kafka's ack -> answer. Success is only ever sent after the ack
(acks=all, idempotent producer).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from formats import PARSERS, ParseContext, ParseError
from gateway.body import BodyError, read_body
from gateway.dialects.base import Dialect, Problem
from gateway.limits import Limits
from millrace import metrics
from millrace.config import Settings
from millrace.keys import ApiKey, KeyRing
from schemas import rows as row_codec
from schemas.envelope import Envelope, encode

log = structlog.get_logger()

REQUEST_ID = web.RequestKey("request_id", str)
# Where Kafka put the request's envelope, (partition, offset), once it acknowledged it: what
# HEC's indexer acknowledgment numbers a request by (gateway.dialects.hec).
PRODUCED_AT = web.RequestKey("produced_at", tuple[int, int])
RETRY_AFTER_UNAVAILABLE = 5
CREDENTIAL_PARAMS = frozenset({"api-token", "token"})  # query parameters that carry a key (lower case)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_request_id() -> str:
    return secrets.token_hex(12)


def client_ip(
    request: web.Request, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> str:
    """The peer address, or the nearest untrusted hop of X-Forwarded-For when the peer is a trusted proxy.

    Walking from the right stops at the first address a trusted proxy did not add,
    so a client cannot spoof its IP by sending its own X-Forwarded-For.
    """
    peer = request.remote or ""
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _text(header: str) -> str:
    """A header as valid UTF-8: aiohttp keeps undecodable bytes as surrogates, which no JSON can carry."""
    return header.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _is_trusted(address: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


class Ingestor:
    def __init__(self, settings: Settings, keys: KeyRing, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.keys = keys
        self.producer = producer
        self.limits = Limits(settings)

    async def read(self, request: web.Request) -> bytes:
        s = self.settings
        return await read_body(request, s.max_body_bytes, s.max_decompressed_bytes, s.body_timeout_s)

    def admit(self, token: str | None, scope: str) -> ApiKey | Problem:
        """The key, once it is valid, holds `scope` and its request bucket is charged; else the refusal.

        Costs a hash and a bucket update: it runs before any of the body is read.
        """
        key = self.keys.authenticate(token) if token else None
        if key is None:
            return Problem(401, "unauthorized", "missing or invalid API key")
        if scope not in key.scopes:
            return Problem(403, "forbidden", f"this key lacks the '{scope}' scope")
        return self.limits.before_body(key) or key

    async def ingest(self, request: web.Request, dialect: Dialect) -> web.Response:
        token = dialect.token(request)
        admitted = self.admit(token, dialect.scope)
        if isinstance(admitted, Problem):
            return dialect.error(admitted)
        return await self.admitted(request, dialect, admitted, token)

    async def admitted(
        self,
        request: web.Request,
        dialect: Dialect,
        key: ApiKey,
        token: str | None,
        body: bytes | None = None,
        document: Any = None,
    ) -> web.Response:
        """Run an admitted request through; `body` (and `document`, the body as JSON) are passed
        when routing already had to read (and decode) it."""
        received_at_ns = time.time_ns()
        if body is None:
            try:
                body = await self.read(request)
            except BodyError as exc:
                return dialect.error(Problem(exc.status, exc.code, exc.message))
        if dialect.max_body is not None and len(body) > dialect.max_body:
            return dialect.error(
                Problem(
                    413,
                    "body_too_large",
                    f"request body is {len(body)} bytes; the limit is {dialect.max_body}",
                )
            )
        name = dialect.name
        user_agent = _text(request.headers.get("User-Agent", ""))
        ctx = ParseContext(
            received_at_ns=received_at_ns,
            path=request.path,
            content_type=_text(request.headers.get("Content-Type", "")),
            # A key sent as a query parameter (Dynatrace's ?api-token=) must not travel on to Kafka,
            # whether or not it is the key that authenticated the request.
            query={
                k: v for k, v in request.query.items() if v != token and k.lower() not in CREDENTIAL_PARAMS
            },
            user_agent=user_agent,
            client_ip=client_ip(request, self.settings.trusted_proxies),
            document=document,
            headers={h: _text(request.headers[h]) for h in dialect.headers if h in request.headers},
        )
        parse = PARSERS.get(name)
        if parse is None:
            return dialect.error(Problem(501, "not_implemented", f"the {name} dialect is not available"))
        try:
            parsed = parse(body, ctx)
        except ParseError as exc:
            return dialect.error(dialect.refusal(exc))
        over_rate = 0
        if (limited := self.limits.after_parse(key, parsed, dialect.split)) is not None:
            if isinstance(limited, Problem):
                return dialect.error(limited)
            over_rate = len(limited.rejected) - len(parsed.rejected)
            parsed = limited  # a part admitted: the dialect answers the rest 429 item by item
        if parsed.rows:
            try:
                rows = row_codec.encode(parsed.rows)
            except orjson.JSONEncodeError as exc:  # a lone surrogate, say: nothing JSON can carry
                return dialect.error(
                    Problem(400, "invalid_body", f"the body holds a value that cannot be stored: {exc}")
                )
            envelope = Envelope(
                request_id=request[REQUEST_ID],
                project=key.project,
                key_id=key.key_id,
                dialect=name,
                path=request.path,
                content_type=ctx.content_type,
                user_agent=user_agent,
                client_ip=ctx.client_ip,
                received_at_ns=received_at_ns,
                body=rows,
                query=dict(ctx.query),
                table=parsed.table,
                rows=len(parsed.rows),
            )
            try:
                request[PRODUCED_AT] = await self._produce(envelope)
            except (KafkaError, TimeoutError) as exc:
                code = metrics.produce_failed(exc)
                log.warning(
                    "produce_failed",
                    code=code,
                    error=type(exc).__name__,
                    stage="sending",
                    request_id=envelope.request_id,
                )
                return dialect.error(
                    Problem(
                        503,
                        "unavailable",
                        "the ingest queue is unavailable; retry later",
                        retry_after=RETRY_AFTER_UNAVAILABLE,
                    )
                )
        metrics.request_parsed(name, len(body), len(parsed.rows), len(parsed.rejected) - over_rate, over_rate)
        log.debug(
            "ingested",
            dialect=name,
            project=key.project,
            rows=len(parsed.rows),
            rejected=len(parsed.rejected),
            request_id=request[REQUEST_ID],
        )
        return dialect.success(parsed, received_at_ns)

    async def _produce(self, envelope: Envelope) -> tuple[int, int]:
        # The key is the request id, which the worker names the request by; the partition is
        # any available one (`gateway.app.spread`), so one project's load spreads evenly.
        send = self.producer.send_and_wait(
            self.settings.topic, encode(envelope), key=envelope.request_id.encode()
        )
        with metrics.PRODUCE_SECONDS.time():  # failed attempts too: a timeout shows in the top bucket
            sent = await asyncio.wait_for(send, timeout=self.settings.produce_timeout_s)
        return sent.partition, sent.offset
