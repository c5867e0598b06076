"""The worker's flood guard: stop instead of dead-lettering a whole stream."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from millrace.config import Settings
from workers.steps.base import Forward, Message, Step
from workers.steps.batch import Batch

log = structlog.get_logger()

FLOOD_CODE = "DLQ_FLOOD"


class FloodGuard:
    """Trips when dead letters are both many and most of what the worker reads.

    A bad deploy that breaks a parser would otherwise dead-letter a whole stream. The
    guard counts, over a sliding window, the messages read and the dead letters among
    them; it trips when the dead letters reach `threshold` AND are at least `ratio` of
    the messages. Both conditions: a trickle of junk among healthy traffic never trips
    it, nor does a burst of a few bad requests on a quiet system. `threshold` 0
    disables it. Once tripped it stays tripped: the worker holds still until restarted.
    """

    def __init__(
        self,
        threshold: int,
        ratio: float,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.ratio = ratio
        self.window_s = window_s
        self._clock = clock
        self._seen: deque[tuple[float, int, int]] = deque()
        self.tripped: dict[str, Any] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> FloodGuard:
        return cls(settings.dlq_flood_threshold, settings.dlq_flood_ratio, settings.dlq_flood_window_s)

    def check(self, messages: int, dead: int) -> bool:
        """Count a batch about to be stored; True means: do not store it, stop."""
        if self.tripped is not None:
            return True
        if self.threshold <= 0:
            return False
        now = self._clock()
        self._seen.append((now, messages, dead))
        while self._seen and self._seen[0][0] < now - self.window_s:
            self._seen.popleft()
        total = sum(m for _, m, _ in self._seen)
        failed = sum(d for _, _, d in self._seen)
        if failed >= self.threshold and failed >= self.ratio * total:
            self.tripped = {
                "code": FLOOD_CODE,
                "dead_letters": failed,
                "messages": total,
                "window_s": self.window_s,
                "since": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            return True
        return False


class HaltOnFlood(Forward):
    """The flood guard as a step between batching and inserting. A batch that trips it is
    dropped uncommitted, as is every batch after it: the worker started after the fix reads
    them again from the last commit (Kafka keeps them meanwhile); `on_halt` stops the reading."""

    def __init__(self, next_step: Step[Batch], guard: FloodGuard, on_halt: Callable[[], None]) -> None:
        self.next = next_step
        self.guard = guard
        self.on_halt = on_halt
        self._checked: Message[Batch] | None = None  # a batch is counted once, even if re-offered

    def submit(self, message: Message[Batch]) -> None:
        if self.guard.tripped is not None:
            return  # halted: dropped uncommitted, like the batch that tripped it
        if message is not self._checked:
            self._checked = message
            batch = message.payload
            if self.guard.check(batch.messages, len(batch.dead)):
                self._halt(batch)
                return
        self.next.submit(message)

    def _halt(self, batch: Batch) -> None:
        self.on_halt()
        log.error(
            "dlq_flood",
            code=FLOOD_CODE,
            held_messages=batch.messages,
            held_dead_letters=len(batch.dead),
            **{k: v for k, v in (self.guard.tripped or {}).items() if k != "code"},
            action="consumption paused until restart; see docs/operations.md 'Dead letters'",
            stage="processing",
        )
