"""Dialect parsers: one module per hosted API, each exposing `parse(body, ctx) -> Parsed`.

The registry is a plain dict from the dialect name carried in the envelope to its
parser; the gateway looks parsers up here (and the worker, for envelopes written
before rows travelled in them).
"""

from __future__ import annotations

from collections.abc import Callable

from formats import native

NATIVE = native.choose()  # before any parser is imported: compiled, or from source (formats/native.py)

from formats import astralog, dynatrace, es_bulk, goodlogs, hec, loki, otlp, tg2g, timberlogs  # noqa: E402
from formats.base import ParseContext, Parsed, ParseError, Rejection  # noqa: E402

Parser = Callable[[bytes, ParseContext], Parsed]

PARSERS: dict[str, Parser] = {
    "astralog": astralog.parse,
    "tg2g": tg2g.parse,
    "dynatrace": dynatrace.parse,
    "goodlogs_logs": goodlogs.parse_logs,
    "goodlogs_events": goodlogs.parse_events,
    "timberlogs": timberlogs.parse,
    "loki": loki.parse,
    "es_bulk": es_bulk.parse,
    "hec_event": hec.parse_event,
    "hec_raw": hec.parse_raw,
    "otlp": otlp.parse,
}

__all__ = ["PARSERS", "ParseContext", "ParseError", "Parsed", "Parser", "Rejection"]
