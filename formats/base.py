"""The contract every dialect parser keeps.

A parser is one pure function `parse(body, ctx) -> Parsed`: bytes in, rows out.
It never does I/O and never raises anything but `ParseError`; rows are dicts whose
keys are record columns a parser may fill (`schemas.record.PARSER_LOG_COLUMNS`).
The gateway calls it once per request: the rows it returns are both the dialect's
synchronous answer (counts, per-item rejections) and what goes to Kafka, encoded by
`schemas.rows`; the worker hands them to the engine without parsing again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.record import LOGS_TABLE


class ParseError(ValueError):
    """The request as a whole cannot be used. `code` is a stable, low-cardinality reason."""

    def __init__(
        self,
        message: str,
        code: str = "invalid_body",
        details: list[dict[str, Any]] | None = None,
        position: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code  # the gateway's dialect turns it into its own status and body
        self.details = details  # per-field issues, for dialects whose error body lists them
        # Where: the index of the offending record, or the byte offset of a syntax error.
        self.position = position


@dataclass(frozen=True, slots=True)
class ParseContext:
    """Request facts a parser may use; everything here is also in the Kafka envelope."""

    received_at_ns: int
    path: str = ""
    content_type: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    user_agent: str = ""
    client_ip: str = ""
    # The body as JSON when the gateway's router already decoded it (`POST /v1/logs`), so it
    # is decoded once; parsers read it through `common.json_body`. Not carried to Kafka.
    document: Any = None
    # The request headers the dialect asks for (`Dialect.headers`), as text: Loki's X-Scope-OrgID.
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One item the dialect allows to be refused while the rest of the batch is kept."""

    index: int
    reason: str


@dataclass(slots=True)
class Parsed:
    rows: list[dict[str, Any]]
    rejected: list[Rejection] = field(default_factory=list)
    table: str = LOGS_TABLE
    # What the dialect's answer needs beyond counts and rejections (Elasticsearch's item per
    # action, in order); never stored, never sent to Kafka.
    answer: Any = None
