"""send dead letters: a stored batch's dead letters go to the dead-letter topic before its
offsets are committed, so a message is never committed without being either stored or
dead-lettered. A failure to write one is an outage, not bad input: it stops the worker
(nothing committed; the next run reads the batch again)."""

from __future__ import annotations

from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from millrace import metrics
from schemas.deadletter import DeadLetter
from workers.steps.base import Message, MessageRejected, Step
from workers.steps.batch import Batch

log = structlog.get_logger()


class SendDeadLetters:
    def __init__(
        self, next_step: Step[Batch], producer: AIOKafkaProducer, topic: str, stats: dict[str, Any]
    ) -> None:
        self.next = next_step
        self.producer = producer
        self.topic = topic
        self.stats = stats
        self._pending: list[Message[Batch]] = []
        self._sent = 0  # dead letters of the first pending batch already written

    def submit(self, message: Message[Batch]) -> None:
        self._pending.append(message)

    async def poll(self) -> None:
        while self._pending:
            message = self._pending[0]
            for dead in message.payload.dead[self._sent :]:
                await self._send(dead)
                self._sent += 1
            try:
                self.next.submit(message)
            except MessageRejected:
                break  # written; offered again at the next poll
            self._pending.pop(0)
            self._sent = 0
        await self.next.poll()

    async def _send(self, dead: DeadLetter) -> None:
        await self.producer.send_and_wait(self.topic, dead.value, headers=dead.headers())
        self.stats["dead_letters"] += 1
        metrics.DEAD_LETTERS.labels(dead.code).inc()
        log.warning(
            "dead_lettered",
            code=dead.code,
            request_id=dead.request_id,
            reason=dead.reason[:200],
            partition=dead.source_partition,
            offset=dead.source_offset,
            stage="processing",
        )

    async def join(self) -> None:
        await self.poll()
        while self._pending:
            await self.next.join()
            await self.poll()
        await self.next.join()

    def close(self) -> None:
        self.next.close()
