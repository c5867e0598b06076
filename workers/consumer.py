"""The consumer loop: Kafka records in, through the chain, backpressure and rebalances handled.

Each record enters the chain as a message carrying its offset. When the chain rejects one
(the insert is busy or failing and a batch is already waiting), that record and those
behind it are held, the partitions are paused (the fetcher stops buffering), and the loop
keeps polling the chain until it takes them; then the partitions resume. Nothing sleeps:
a paused `getmany` is the wait, and it keeps the loop responsive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from millrace import metrics
from millrace.config import Settings
from millrace.kafka.topics import ENVELOPE_OVERHEAD, client_options
from workers.steps.base import GiveUp, Message, MessageRejected

if TYPE_CHECKING:
    from workers.pipeline import Worker

log = structlog.get_logger()


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=settings.max_decompressed_bytes + ENVELOPE_OVERHEAD,
        fetch_max_bytes=max(52_428_800, settings.max_decompressed_bytes * 2),
        # Let the broker gather a fetch instead of answering every new message on its own:
        # far fewer fetch round trips for the broker and the event loop, at most 100 ms later.
        fetch_min_bytes=1_048_576,
        fetch_max_wait_ms=100,
        # A store outage holds a batch for a while; do not get evicted from the group for it.
        max_poll_interval_ms=600_000,
    )


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Store and commit what the chain holds before another member takes these partitions;
        # records held back by backpressure for them are left to the new owner (uncommitted).
        lost = set(revoked)
        held = self.worker.held
        kept = [r for r in held if TopicPartition(r.topic, r.partition) not in lost]
        held.clear()
        held.extend(kept)
        await self.worker.chain.join()
        self.worker.marks.loaded = False
        metrics.forget_lag(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.worker.marks.loaded = False
        try:
            await self.worker.marks.load(self.worker.consumer)
        except Exception as exc:
            # aiokafka would swallow it; the consume loop retries (Watermarks.ensure).
            log.warning(
                "watermarks_failed", code="watermarks_failed", error=str(exc)[:500], stage="processing"
            )
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))


def _offer(worker: Worker) -> bool:
    """Submit held records in order; True once none is left."""
    held = worker.held
    while held:
        record = held[0]
        message = Message(record, {TopicPartition(record.topic, record.partition): record.offset + 1})
        try:
            worker.chain.submit(message)
        except MessageRejected:
            return False
        held.popleft()
    return True


async def consume(worker: Worker, stop: asyncio.Event, on_start: Callable[[Worker], None] | None) -> None:
    settings, consumer = worker.settings, worker.consumer
    consumer.subscribe([settings.topic], listener=Rebalance(worker))
    await consumer.start()
    log.info("worker_started", topic=settings.topic, group=settings.consumer_group)
    if on_start is not None:
        on_start(worker)
    paused: set[TopicPartition] = set()
    try:
        while not stop.is_set():
            if worker.flood.tripped:
                # Halted: keep polling (to stay in the group) with every partition paused,
                # including any a rebalance hands over.
                consumer.pause(*consumer.assignment())
            records = await consumer.getmany(timeout_ms=100, max_records=1000)
            await metrics.observe_lag(consumer)
            worker.held.extend(r for batch in records.values() for r in batch)
            if worker.held:
                # Nothing is batched before the marks of the current assignment are read: a
                # crashed worker's uncommitted batch would be stored a second time.
                await worker.marks.ensure(consumer)
            if not _offer(worker) and not paused:
                paused = set(consumer.assignment())
                consumer.pause(*paused)  # backpressure: stop fetching until the chain takes more
            await worker.chain.poll()
            if paused and _offer(worker):
                if not worker.flood.tripped:
                    consumer.resume(*(paused & consumer.assignment()))
                paused = set()
        # Graceful stop: store and commit what was taken before leaving the group. If the
        # store is out, one failed attempt is enough: the batch stays uncommitted (redelivered).
        worker.insert.stopping = True
        try:
            await worker.chain.join()
        except GiveUp:
            log.warning("batch_abandoned", code="batch_abandoned", stage="sending")
    finally:
        await consumer.stop()
