"""Dialect parsers: one module per hosted API, each exposing `parse(body, ctx) -> Parsed`.

The registry is a plain dict from the dialect name carried in the envelope to its
parser; the gateway and the worker both look parsers up here.
"""

from __future__ import annotations

from collections.abc import Callable

from formats import astralog, dynatrace, goodlogs, tg2g, timberlogs
from formats.base import ParseContext, Parsed, ParseError, Rejection

Parser = Callable[[bytes, ParseContext], Parsed]

PARSERS: dict[str, Parser] = {
    "astralog": astralog.parse,
    "tg2g": tg2g.parse,
    "dynatrace": dynatrace.parse,
    "goodlogs_logs": goodlogs.parse_logs,
    "goodlogs_events": goodlogs.parse_events,
    "timberlogs": timberlogs.parse,
}

# Validate-only fast paths for the gateway: the parser's exact answer (error or counts)
# without building rows. A dialect missing here is validated by its full parser.
VALIDATORS: dict[str, Parser] = {
    "astralog": astralog.validate,
}

__all__ = ["PARSERS", "VALIDATORS", "ParseContext", "ParseError", "Parsed", "Parser", "Rejection"]
