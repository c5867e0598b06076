"""skip stored: drop what a crashed worker stored but did not commit, and what has no rows.

The skipped message still carries its offset on to the commit."""

from __future__ import annotations

from typing import Any

from schemas.deadletter import DeadLetter
from workers.steps.base import Forward, Message, Step
from workers.steps.decode import Decoded
from workers.watermarks import Watermarks


class SkipStored(Forward):
    def __init__(
        self, next_step: Step[Decoded | DeadLetter | None], marks: Watermarks, stats: dict[str, Any]
    ) -> None:
        self.next = next_step
        self.marks = marks
        self.stats = stats

    def submit(self, message: Message[Decoded | DeadLetter]) -> None:
        item = message.payload
        if isinstance(item, Decoded):
            envelope, record = item.envelope, item.record
            if not envelope.rows:
                self.next.submit(message.replace(None))
                return
            if self.marks.stored(envelope.table, record.partition, record.offset):
                self.stats["skipped_stored"] += 1
                self.next.submit(message.replace(None))
                return
        self.next.submit(message)
