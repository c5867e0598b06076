"""enrich: an envelope's rows + its request facts and Kafka position = one input line.

The facts are the record's pipeline columns (`schemas.record.PIPELINE_COLUMNS`); the rows
pass through as the gateway encoded them: no Python runs per row here."""

from __future__ import annotations

from dataclasses import dataclass

from formats.useragent import user_agent
from schemas import rows
from schemas.deadletter import DeadLetter
from workers.steps.base import Forward, Message, Step
from workers.steps.decode import Decoded


@dataclass(frozen=True, slots=True)
class Line:
    """One message's input for the engine, and what the batch needs to know of it."""

    table: str
    pieces: tuple[bytes | memoryview, ...]
    rows: int
    partition: int
    offset: int
    key: bytes
    value: bytes  # the message as read: what a dead letter carries if the engine refuses it


def line_of(item: Decoded) -> Line:
    envelope, record = item.envelope, item.record
    agent = user_agent(envelope.user_agent)
    facts = {
        "project": envelope.project,
        "observed_timestamp": envelope.received_at_ns,
        "ua_browser": agent.browser,
        "ua_os": agent.os,
        "ua_device": agent.device,
        "client_ip": envelope.client_ip,
        "dialect": envelope.dialect,
        "ingest_id": envelope.request_id,
        "kafka_topic": record.topic,
        "kafka_partition": record.partition,
        "kafka_offset": record.offset,
    }
    return Line(
        envelope.table,
        rows.line(facts, envelope.body),
        envelope.rows,
        record.partition,
        record.offset,
        record.key or b"",
        record.value or b"",
    )


class Enrich(Forward):
    def __init__(self, next_step: Step[Line | DeadLetter | None]) -> None:
        self.next = next_step

    def submit(self, message: Message[Decoded | DeadLetter | None]) -> None:
        item = message.payload
        self.next.submit(
            message.replace(line_of(item)) if isinstance(item, Decoded) else message.replace(item)
        )
