"""aiokafka's start-up noise, demoted: retried conditions are not errors.

At every start the worker's consumer asks for its group's coordinator before the broker
has one (the `__consumer_offsets` topic is created on that first request, and its leader
is elected a moment later). aiokafka logs each retry at ERROR (`Group Coordinator Request
failed: ... GroupCoordinatorNotAvailableError`) and then WARNING (`Marking the coordinator
dead`), though it retries until it succeeds, which it does within seconds. Those lines are
dropped during the first START_GRACE_S of a process; later they are real news (a broker
went away), still retried, and are kept at WARNING with what they mean.
"""

from __future__ import annotations

import logging
import time

import structlog

START_GRACE_S = 60.0
COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
_RETRIED = ("Group Coordinator Request failed", "Marking the coordinator dead")


class CoordinatorRetries(logging.Filter):
    def __init__(self, grace_s: float = START_GRACE_S) -> None:
        super().__init__()
        self.until = time.monotonic() + grace_s

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not record.msg.startswith(_RETRIED):
            return True
        if time.monotonic() < self.until:
            return False
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg += " (retried until the group coordinator answers; a broker is away or moving)"
        return True


def quiet_kafka_startup(grace_s: float = START_GRACE_S) -> None:
    logger = logging.getLogger(COORDINATOR_LOGGER)
    if not any(isinstance(f, CoordinatorRetries) for f in logger.filters):
        logger.addFilter(CoordinatorRetries(grace_s))


# Said again, or not news, on the console of `millrace run`: the supervisor's `process_started`
# and `processes_stopped` lines already name the broker (and its pid) once it serves or stopped.
RUNNER_QUIET_EVENTS = frozenset(
    {"kafka_starting", "kafka_started", "kafka_stopping", "kafka_stopped", "keys_loaded"}
)


def _drop_quiet(_: object, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    if method in ("debug", "info") and event.get("event") in RUNNER_QUIET_EVENTS:
        raise structlog.DropEvent
    return event


def quiet_runner_console() -> None:
    """One line per process started: drop the runner's own repetitive start-up lines."""
    processors = list(structlog.get_config()["processors"])
    if _drop_quiet not in processors:
        structlog.configure(processors=[_drop_quiet, *processors])
