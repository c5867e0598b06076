"""Which rules this evaluator replica evaluates: Kafka partition ownership.

The alerts topic has ALERT_PARTITIONS partitions and no records. Every evaluator joins one
consumer group on it; Kafka's group coordinator gives each partition to exactly one live
member and moves it when a member leaves or stops heartbeating. A rule belongs to the
partition `crc32(rule id) % ALERT_PARTITIONS`, so each rule has one evaluator at a time,
with no lease table to expire and no clock to trust. During a hand-over two replicas may
briefly both evaluate a rule; they compute the same event ids (alerts/evaluate.py), so the
store keeps each transition once.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from millrace.config import Settings
from millrace.kafka.topics import ALERT_PARTITIONS, client_options

log = structlog.get_logger()


def partition_of(rule_id: str) -> int:
    return zlib.crc32(rule_id.encode()) % ALERT_PARTITIONS


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owners: Owners) -> None:
        self.owners = owners

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.owners.partitions = frozenset()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.owners.partitions = frozenset(tp.partition for tp in assigned)
        log.info("alert_partitions_assigned", partitions=sorted(self.owners.partitions))


class Owners:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.partitions: frozenset[int] = frozenset()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def owns(self, rule_id: str) -> bool:
        return partition_of(rule_id) in self.partitions

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=f"{self.settings.consumer_group}-alerts",
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        consumer.subscribe([self.settings.alerts_topic], listener=_Listener(self))
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._poll(), name="alert-owners")

    async def _poll(self) -> None:
        """Keep the membership alive: the group's poll deadline counts calls to getmany."""
        assert self._consumer is not None
        while True:
            try:
                await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker may be away; the assignment waits for it
                log.warning("alert_owners_poll_failed", error=str(exc))
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()  # leaves the group: the others take its partitions now
        self.partitions = frozenset()
