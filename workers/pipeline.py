"""The worker's chain, wired here and only here:

    consume -> decode -> skip stored -> enrich -> batch -> halt on flood -> insert
            -> send dead letters -> commit

The gateway parsed each request once; its envelope carries normalized rows that the
engine reads as they are (`schemas/rows.py`), so no step runs Python per row. Each step
is one small class with the protocol of `workers/steps/base.py`; offsets travel with the
messages and only the last step commits, after the rows are stored.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.client import Client

from millrace.config import Settings
from millrace.kafka.topics import envelope_producer
from workers.consumer import consume, make_consumer
from workers.flood import FloodGuard, HaltOnFlood
from workers.steps import (
    BatchLines,
    Commit,
    Decode,
    Enrich,
    Insert,
    InsertFn,
    SendDeadLetters,
    SkipStored,
    store_insert,
)
from workers.watermarks import Watermarks

log = structlog.get_logger()


@dataclass
class Worker:
    settings: Settings
    consumer: AIOKafkaConsumer
    flood: FloodGuard
    marks: Watermarks
    chain: Decode = field(init=False)
    insert: Insert = field(init=False)
    held: deque[ConsumerRecord] = field(default_factory=deque)  # records the chain rejected
    stats: dict[str, Any] = field(
        default_factory=lambda: {"rows": 0, "batches": 0, "dead_letters": 0, "skipped_stored": 0}
    )


def build(worker: Worker, client: Client, dlq: AIOKafkaProducer, insert: InsertFn) -> None:
    s, stats, consumer = worker.settings, worker.stats, worker.consumer
    worker.insert = Insert(
        SendDeadLetters(Commit(consumer, stats), dlq, s.dlq_topic, stats), client, s.topic, insert
    )
    halt = HaltOnFlood(worker.insert, worker.flood, lambda: consumer.pause(*consumer.assignment()))
    batch = BatchLines(halt, s.batch_rows, s.batch_age_ms / 1000)
    worker.chain = Decode(SkipStored(Enrich(batch), worker.marks, stats))


async def run(
    settings: Settings,
    client: Client,
    stop: asyncio.Event,
    flood: FloodGuard | None = None,
    *,
    insert: InsertFn | None = None,
    on_start: Callable[[Worker], None] | None = None,
) -> Worker:
    """Consume until `stop` is set. `insert` is the store boundary (tests inject failures
    there; by default `store_insert`'s); `on_start` sees the worker once it runs (tests watch
    its consumer)."""
    insert = insert or await store_insert(settings, client)
    consumer, dlq = make_consumer(settings), envelope_producer(settings)  # a dead letter is a whole envelope
    worker = Worker(
        settings, consumer, flood or FloodGuard.from_settings(settings), Watermarks(settings, client)
    )
    build(worker, client, dlq, insert)
    await dlq.start()
    try:
        await consume(worker, stop, on_start)
    finally:
        await dlq.stop()
        worker.chain.close()
        log.info("worker_stopped", **worker.stats)
    return worker
