"""What the gateway needs to know about a dialect to answer like the original API."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from formats import Parsed, ParseError


@dataclass(frozen=True, slots=True)
class Problem:
    """A refusal, before it is dressed in the dialect's error format."""

    status: int
    code: str
    message: str
    retry_after: int | None = None
    details: list[dict[str, Any]] | None = None


# (parsed, rows admitted, the refusal for the rest) -> the Parsed holding only the first
# `admitted` rows, its answer refusing the others item by item (see gateway.limits).
Split = Callable[[Parsed, int, Problem], Parsed]


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str  # carried in the envelope; the parser registry key
    scope: str  # key scope the endpoint requires
    token: Callable[[web.Request], str | None]  # the API key as this dialect sends it
    success: Callable[[Parsed, int], web.Response]  # (parsed, received_at_ns) -> answer
    error: Callable[[Problem], web.Response]
    max_body: int | None = None  # a dialect's own documented cap, below the global one
    # The HTTP status of a ParseError code where it is not 400 (a dialect's size caps: 413).
    statuses: Mapping[str, int] = field(default_factory=dict, hash=False, compare=False)
    headers: tuple[str, ...] = ()  # request headers its parser reads (ParseContext.headers)
    split: Split | None = None  # set when its answer can refuse single items over the log rate

    def refusal(self, exc: ParseError) -> Problem:
        """A parser's refusal as this dialect answers it."""
        return Problem(self.statuses.get(exc.code, 400), exc.code, exc.message, details=exc.details)


def json_response(status: int, body: Any, retry_after: int | None = None) -> web.Response:
    import orjson  # local: keeps this module's import surface small for the dialect files

    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def decoded_base64(value: str) -> str | None:
    """`value` as base64 of UTF-8 text, or None when it is not."""
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):  # ValueError: non-ASCII input
        return None


def basic_key(value: str) -> str | None:
    """The key in a Basic credential (`value`, after the scheme): the password, or the user
    name when there is no password (clients with a single credential field send it there)."""
    decoded = decoded_base64(value)
    if decoded is None:
        return None
    user, _, password = decoded.partition(":")
    return password or user or None


def bearer(request: web.Request) -> str | None:
    """`Authorization: Bearer <key>` (scheme case-insensitive)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
