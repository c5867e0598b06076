"""A shared secret for the worker's internal read port (embedded mode).

In embedded mode the worker answers the gateway's reads on a loopback port without
any API key of its own (the gateway already authorized the caller and fixed the
project). Loopback is not a boundary on a shared machine, so every internal read
carries a token that only processes able to read the state directory know. The
file is created once, mode 0600, by whichever of gateway and worker starts first.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from millrace.config import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEADER = "X-Millrace-Internal-Token"
# Tenant data: reads, and per-project landed counts (the bench's and the delivery tests' stats).
PROTECTED_PREFIXES = ("/internal/v1/",)


def worker_session(settings: Settings) -> aiohttp.ClientSession:
    """A client of the worker's internal port, carrying the token (the gateway's reads, the alert
    evaluator's reads and writes in embedded mode); requests go to `settings.worker_query_url`."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), headers={HEADER: ensure_token(settings)}
    )


def token_path(settings: Settings) -> Path:
    return settings.home / "internal-token"


def ensure_token(settings: Settings) -> str:
    """The state directory's token, creating it atomically if absent (O_EXCL: racing creators agree)."""
    path = token_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        check_private(path)
        text = path.read_text().strip()
        if text:
            return text
        # A creator is between open and write: its token will be there in a moment.
        return _wait_for(path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def check_private(path: Path) -> None:
    """Refuse a token file someone else owns or others may read: its token would not be a secret
    (or not ours), and the read port would trust whoever planted it."""
    st = path.stat()
    if st.st_uid != os.getuid():
        raise RuntimeError(f"{path} is owned by uid {st.st_uid}, not by this user; remove it and restart")
    if st.st_mode & 0o077:
        raise RuntimeError(
            f"{path} has mode {st.st_mode & 0o777:o}: group or others may use it; remove it or chmod 600 it"
        )


def _wait_for(path: Path) -> str:
    for _ in range(100):
        time.sleep(0.01)
        text = path.read_text().strip()
        if text:
            return text
    raise RuntimeError(f"{path} stayed empty; delete it and restart")


def guard(token: str) -> Middleware:
    """Refuse internal reads without the token (health and metrics stay open: no tenant data)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PROTECTED_PREFIXES):
            offered = request.headers.get(HEADER, "")
            # surrogateescape: an undecodable header byte is a wrong token (401), not a 500.
            if not hmac.compare_digest(offered.encode("utf-8", "surrogateescape"), token.encode()):
                return web.json_response(
                    {"error": {"code": "UNAUTHORIZED", "message": "internal port: missing or wrong token"}},
                    status=401,
                )
        return await handler(request)

    return check
