"""decode: Kafka record -> envelope with its rows; an unreadable one becomes a dead letter."""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson
from aiokafka.structs import ConsumerRecord

from formats import PARSERS, ParseContext, ParseError
from schemas import rows
from schemas.deadletter import DeadLetter
from schemas.envelope import RAW_BODY_VERSION, VERSION, Envelope, EnvelopeError, decode
from workers.steps.base import Forward, Message, Step


@dataclass(frozen=True, slots=True)
class Decoded:
    envelope: Envelope
    record: ConsumerRecord


def decode_envelope(record: ConsumerRecord) -> Envelope:
    """The envelope, its rows ready for the engine. A version 1 envelope (the raw request
    body, written before rows travelled in envelopes) is parsed here, once, with the parser
    the gateway uses today."""
    envelope = decode(record.value)
    if envelope.version != RAW_BODY_VERSION:
        return envelope
    parser = PARSERS.get(envelope.dialect)
    if parser is None:
        raise ParseError(f"no parser for dialect {envelope.dialect!r}", code="unknown_dialect")
    ctx = ParseContext(
        received_at_ns=envelope.received_at_ns,
        path=envelope.path,
        content_type=envelope.content_type,
        query=envelope.query,
        user_agent=envelope.user_agent,
        client_ip=envelope.client_ip,
    )
    parsed = parser(bytes(envelope.body), ctx)  # bytes already: version 1 bodies are not views
    try:
        body = rows.encode(parsed.rows)
    except orjson.JSONEncodeError as exc:
        raise ParseError(f"a value cannot be stored: {exc}", code="unstorable_value") from None
    return replace(envelope, body=body, table=parsed.table, rows=len(parsed.rows), version=VERSION)


def dead_letter(record: ConsumerRecord, reason: str, code: str) -> DeadLetter:
    return DeadLetter(
        record.value or b"",
        reason,
        code,
        record.topic,
        record.partition,
        record.offset,
        request_id=(record.key or b"").decode(errors="replace"),
    )


class Decode(Forward):
    def __init__(self, next_step: Step[Decoded | DeadLetter]) -> None:
        self.next = next_step

    def submit(self, message: Message[ConsumerRecord]) -> None:
        record = message.payload
        try:
            decoded: Decoded | DeadLetter = Decoded(decode_envelope(record), record)
        except (EnvelopeError, ParseError) as exc:
            code = exc.code if isinstance(exc, ParseError) else "bad_envelope"
            decoded = dead_letter(record, str(exc), code)
        self.next.submit(message.replace(decoded))
