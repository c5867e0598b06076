"""The dead-letter format: one definition for the worker that writes and the tools that read.

A dead letter is the raw-topic message value exactly as the worker read it (so a replay can
send the same bytes again), with the reason it could not be stored and where it came from in
Kafka headers. The header names are spelled here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

REASON_LIMIT = 1000  # characters of the reason kept in the header: a parser message, not a dump


@dataclass(frozen=True, slots=True)
class DeadLetter:
    value: bytes
    reason: str
    code: str  # stable, low-cardinality: a ParseError or EnvelopeError code
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    # The message key: the id the client got back in X-Request-Id. Logged by the worker; the
    # envelope in `value` carries it too, so it is not repeated in a header.
    request_id: str = ""

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("reason", self.reason[:REASON_LIMIT].encode()),
            ("code", self.code.encode()),
            ("source_topic", self.source_topic.encode()),
            ("source_partition", str(self.source_partition).encode()),
            ("source_offset", str(self.source_offset).encode()),
        ]

    @classmethod
    def from_headers(cls, value: bytes, headers: Iterable[tuple[str, bytes]]) -> DeadLetter:
        """Read a dead-letter record back; a missing or garbled header reads as empty/None."""
        found = {k: v.decode(errors="replace") for k, v in headers}
        return cls(
            value=value,
            reason=found.get("reason", ""),
            code=found.get("code", ""),
            source_topic=found.get("source_topic", ""),
            source_partition=_int_or_none(found.get("source_partition")),
            source_offset=_int_or_none(found.get("source_offset")),
        )


def _int_or_none(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
