"""Serving the gateway: uvloop, our own body decompression, graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

from typing import Any

import structlog
import uvloop
from aiohttp import web

from formats import native
from gateway.app import create_app
from millrace.config import Settings
from millrace.gc_tuning import tune_gc

log = structlog.get_logger()

# Protocol options for every way the gateway is served (tests included); see `server_options`.
SERVER_OPTIONS: dict[str, Any] = {
    # Bodies are decompressed by gateway.body, which enforces both size caps.
    "auto_decompress": False,
    # Header limits: the request line (URL and query), one header line, the number of headers.
    # Beyond them aiohttp answers 400 and closes, so headers cost at most ~100 x 16 KiB.
    "max_line_size": 8190,
    "max_field_size": 16 * 1024,
    "max_headers": 100,
    # After an early answer (401, 413, 408) aiohttp reads and drops the rest of the body for at
    # most this long, so the client sees the answer rather than a reset; then it closes.
    "lingering_time": 5,
    # No aiohttp access log: it would print whole paths, query strings with keys in them
    # (Dynatrace's ?api-token=). One structured line per request comes from our middleware.
    "access_log": None,
}


def server_options(settings: Settings) -> dict[str, Any]:
    """SERVER_OPTIONS plus the timeouts that come from settings.

    aiohttp arms its keep-alive timer when a connection opens and after each response,
    and closes the connection if no complete request head arrived by then: the one
    timer cuts off idle connections and clients that never finish their headers.
    Slow bodies are cut off by `gateway.body` (MILLRACE_BODY_TIMEOUT_S).
    """
    return {**SERVER_OPTIONS, "keepalive_timeout": settings.idle_timeout_s}


# Seconds in-flight requests get to finish once SIGTERM arrived (then the producer flushes).
SHUTDOWN_GRACE_S = 20


def serve(settings: Settings) -> None:
    tune_gc()
    # Whether the parsers run compiled (formats/native.py): from source they cost ~20% more CPU.
    log.info(
        "gateway_starting",
        host=settings.host,
        port=settings.port,
        bootstrap=settings.bootstrap,
        parsers_compiled=native.compiled(),
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        reuse_port=True,  # several gateway processes may share the port
        shutdown_timeout=SHUTDOWN_GRACE_S,
        print=None,
        loop=uvloop.new_event_loop(),
        handle_signals=True,
        **server_options(settings),
    )
