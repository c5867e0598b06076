"""Serving the gateway: uvloop, our own body decompression, graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import structlog
import uvloop
from aiohttp import web

from gateway.app import create_app
from millrace.config import Settings

log = structlog.get_logger()

# Protocol options for every way the gateway is served (tests included).
SERVER_OPTIONS = {
    # Bodies are decompressed by gateway.body, which enforces both size caps.
    "auto_decompress": False,
    "max_field_size": 16 * 1024,
    "max_headers": 100,
}

# Seconds in-flight requests get to finish once SIGTERM arrived (then the producer flushes).
SHUTDOWN_GRACE_S = 20


def serve(settings: Settings) -> None:
    log.info("gateway_starting", host=settings.host, port=settings.port, bootstrap=settings.bootstrap)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        reuse_port=True,  # several gateway processes may share the port
        shutdown_timeout=SHUTDOWN_GRACE_S,
        access_log=None,  # one structured line per request comes from our middleware instead
        print=None,
        loop=uvloop.new_event_loop(),
        handle_signals=True,
        **SERVER_OPTIONS,  # type: ignore[arg-type]
    )
