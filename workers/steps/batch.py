"""batch: lines -> one batch per table, flushed at `rows` rows or when `age_s` old.

A full batch is handed on *before* the next line is appended, so a rejected hand-over
never leaves a line in two batches; while the next step rejects it (the insert is busy
or failing), the batch is held and every new line is rejected too: backpressure reaches
the consumer, which pauses. At most one batch waits here besides the one being inserted.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from schemas.deadletter import DeadLetter
from workers.steps.base import Message, MessageRejected, Step
from workers.steps.enrich import Line


@dataclass(slots=True)
class TableBatch:
    """The input lines bound for one table, and the offsets (per partition) they came from."""

    table: str
    items: list[Line] = field(default_factory=list)
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)
    rows: int = 0
    # Request ids (record keys) per partition, in offset order, for the token: offsets alone
    # repeat once the topic is deleted and re-created, and the engine would drop the new rows
    # as duplicates. Hashed once per insert, not per message.
    requests: dict[int, list[bytes]] = field(default_factory=dict)
    # Set once the engine refused the batch as input: from then on it is stored one message
    # per insert, so the messages it refuses can be told apart (workers/steps/insert.py).
    split: bool = False

    @property
    def lines(self) -> list[bytes | memoryview]:
        return [piece for line in self.items for piece in line.pieces]

    def add(self, line: Line) -> None:
        self.items.append(line)
        self.rows += line.rows
        lo, hi = self.ranges.get(line.partition, (line.offset, line.offset))
        self.ranges[line.partition] = (min(lo, line.offset), max(hi, line.offset))
        self.requests.setdefault(line.partition, []).append(line.key)

    def token(self, topic: str) -> str:
        """The insert's deduplication token: the same messages give the same token."""
        spans = ",".join(f"{p}:{lo}-{hi}" for p, (lo, hi) in sorted(self.ranges.items()))
        digest = hashlib.blake2b(digest_size=8)
        for partition, keys in sorted(self.requests.items()):
            digest.update(b"%d:" % partition)
            digest.update(b"\n".join(keys))
        return f"{self.table}|{topic}|{spans}|{digest.hexdigest()}"


@dataclass(slots=True)
class Batch:
    tables: dict[str, TableBatch] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    rows: int = 0
    messages: int = 0
    started: float = 0.0


class BatchLines:
    def __init__(
        self,
        next_step: Step[Batch],
        rows: int,
        age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.next = next_step
        self.max_rows = rows
        self.age_s = age_s
        self.clock = clock
        self.batch = Batch()
        self.committable: dict[TopicPartition, int] = {}
        self.held: Message[Batch] | None = None  # a batch the next step rejected

    def submit(self, message: Message[Line | DeadLetter | None]) -> None:
        if self.held is not None or self.batch.rows >= self.max_rows:
            self._flush()  # raises MessageRejected while the next step cannot take a batch
        batch = self.batch
        if not self.committable:
            batch.started = self.clock()
        self.committable.update(message.committable)
        batch.messages += 1
        item = message.payload
        if isinstance(item, Line):
            table = batch.tables.get(item.table)
            if table is None:
                table = batch.tables[item.table] = TableBatch(item.table)
            table.add(item)
            batch.rows += item.rows
        elif isinstance(item, DeadLetter):
            batch.dead.append(item)

    def _flush(self) -> None:
        if self.held is None and self.committable:
            self.held = Message(self.batch, self.committable)
            self.batch, self.committable = Batch(), {}
        if self.held is not None:
            self.next.submit(self.held)  # may raise MessageRejected: held until the next try
            self.held = None

    def due(self) -> bool:
        return bool(self.committable) and (
            self.batch.rows >= self.max_rows or self.clock() - self.batch.started >= self.age_s
        )

    async def poll(self) -> None:
        await self.next.poll()
        if self.held is not None or self.due():
            with contextlib.suppress(MessageRejected):
                self._flush()
            await self.next.poll()

    async def join(self) -> None:
        while self.held is not None or self.committable:
            try:
                self._flush()
            except MessageRejected:
                await self.next.poll()
                await self.next.join()
        await self.next.join()

    def close(self) -> None:
        self.next.close()
