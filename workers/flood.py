"""The worker's flood guard: stop instead of dead-lettering a whole stream."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from millrace.config import Settings

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
