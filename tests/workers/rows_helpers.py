"""Envelopes and consumer records as the gateway and Kafka hand them to the worker."""

from __future__ import annotations

import time
import uuid

from aiokafka.structs import ConsumerRecord

from formats import PARSERS, ParseContext
from schemas import rows
from schemas.envelope import RAW_BODY_VERSION, VERSION, Envelope

USER_AGENT = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/125.0 Safari/537.36"


def envelope_for(
    body: bytes,
    dialect: str = "astralog",
    ctx: ParseContext | None = None,
    *,
    raw: bool = False,
    received_at_ns: int | None = None,
) -> Envelope:
    """The envelope the gateway writes for `body` (rows); `raw`: a version 1 envelope (the body).
    Received now unless told otherwise: the tables' TTL drops rows received long ago."""
    ctx = ctx or ParseContext(received_at_ns=0, path="/v1/drain", content_type="application/json")
    ctx = ParseContext(
        received_at_ns=received_at_ns or time.time_ns(),
        path=ctx.path,
        content_type=ctx.content_type,
        query=ctx.query,
        user_agent=USER_AGENT,
        client_ip="198.51.100.7",
    )
    parsed = PARSERS[dialect](body, ctx)
    return Envelope(
        request_id=uuid.uuid4().hex,
        project="rows-test",
        key_id="k",
        dialect=dialect,
        path=ctx.path,
        content_type=ctx.content_type,
        user_agent=ctx.user_agent,
        client_ip=ctx.client_ip,
        received_at_ns=ctx.received_at_ns,
        body=body if raw else rows.encode(parsed.rows),
        query=dict(ctx.query),
        table=parsed.table,
        rows=0 if raw else len(parsed.rows),
        version=RAW_BODY_VERSION if raw else VERSION,
    )


def record(topic: str, value: bytes, offset: int = 7, key: bytes | None = None) -> ConsumerRecord:
    return ConsumerRecord(topic, 3, offset, 0, 0, key, value, None, len(key or b""), len(value), [])
