"""commit: the last step. Offsets are committed only after their batch is stored and its
dead letters are written; a commit that fails because the partitions moved on is logged
(the rows are stored, and the new owner skips them by the watermarks)."""

from __future__ import annotations

from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError

from millrace import metrics
from workers.steps.base import Message
from workers.steps.batch import Batch

log = structlog.get_logger()


class Commit:
    def __init__(self, consumer: AIOKafkaConsumer, stats: dict[str, Any]) -> None:
        self.consumer = consumer
        self.stats = stats
        self._pending: list[Message[Batch]] = []

    def submit(self, message: Message[Batch]) -> None:
        self._pending.append(message)

    async def poll(self) -> None:
        while self._pending:
            message = self._pending.pop(0)
            batch = message.payload
            try:
                await self.consumer.commit(message.committable)
            except (CommitFailedError, IllegalStateError) as exc:
                log.warning("commit_failed", code="commit_failed", error=type(exc).__name__, stage="sending")
            self.stats["rows"] += batch.rows
            self.stats["batches"] += 1
            metrics.BATCH_ROWS.observe(batch.rows)
            log.info(
                "batch_stored",
                rows=batch.rows,
                dead_letters=len(batch.dead),
                partitions=len(message.committable),
                stage="sending",
            )

    async def join(self) -> None:
        await self.poll()

    def close(self) -> None:
        pass
