"""structlog, configured once per process: JSON lines rendered by orjson, or console for humans."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError


def configure(level: str = "info", fmt: str = "json", process: str = "") -> None:
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if process:
        processors.insert(0, _static("process", process))
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory: structlog.typing.WrappedLogger = structlog.PrintLoggerFactory(sys.stderr)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(sys.stderr.buffer)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Libraries (aiokafka, aiohttp) log through the standard library: keep their warnings.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientProtocolErrors) for f in server_log.filters):
        server_log.addFilter(ClientProtocolErrors())


class ClientProtocolErrors(logging.Filter):
    """A malformed request is the client's problem, not an error of ours.

    aiohttp logs each one at ERROR with a traceback whose message quotes the raw bytes
    of the bad line (which may hold part of a header such as a key). Any client could
    flood the logs that way, so keep one warning line with only the error's class.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = (
                "bad_request code=bad_http stage=receiving error=%s",
                (type(exc).__name__,),
            )
            record.exc_info, record.exc_text = None, None
        return True


def _static(key: str, value: str) -> structlog.typing.Processor:
    def add(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        event.setdefault(key, value)
        return event

    return add
