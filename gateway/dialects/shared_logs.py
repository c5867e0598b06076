"""`POST /v1/logs` is claimed by four APIs; this decides whose request it is.

The rule, in order (docs/dialects.md "Which API is `POST /v1/logs`?"):
1. `Content-Type: application/x-protobuf`, or the header `MILLRACE_OTLP_KEY_HEADER` names
   (when set): OTLP (no other API takes protobuf; the operator gave that header to OTLP);
2. an `X-TG2G-Api-Key` header: TG2G;
3. an `X-API-Key` header or a `?format=` parameter: Timberlogs (only it has either);
4. a Content-Type only Timberlogs accepts (NDJSON, syslog, text, CSV, OBL): Timberlogs;
5. a JSON object body with a `resourceLogs` key: OTLP (JSON); with a `batch` key: GoodLogs;
   with `source`/`entity` beside `logs` (the TG2G shape) and no Bearer key: TG2G, so its
   401 reads right. A body that opens with `{"resourceLogs":` is OTLP without being decoded
   here, valid JSON or not; a broken one that opens with `{"batch":` is GoodLogs, so their
   clients learn of broken JSON in their own error format;
6. anything else: Timberlogs, whose content sniffing takes any format.

Rules 1-4 need headers only; rule 5 reads the body, but every API left takes the key as
Bearer with the same scope, so the key is checked (and the bucket charged) first.

A refused request (no key, a wrong one, a missing scope, an empty bucket) is never worth
more than a bounded prefix of its body: the rule runs on its first PREFIX_BYTES decoded
bytes, so a longer body is taken as invalid JSON (GoodLogs when it opens with `{"batch":`,
else Timberlogs).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from gateway.body import BodyError, read_body
from gateway.dialects.base import Dialect
from gateway.dialects.goodlogs import GOODLOGS_LOGS
from gateway.dialects.otlp import OTLP_JSON, OTLP_PROTOBUF, configured_header
from gateway.dialects.tg2g import HEADER as TG2G_HEADER
from gateway.dialects.tg2g import TG2G
from gateway.dialects.timberlogs import TIMBERLOGS
from millrace.config import Settings

_TIMBERLOGS_ONLY_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/x-syslog",
        "text/plain",
        "text/csv",
        "text/tab-separated-values",
        "application/x-obl",
    }
)
PREFIX_BYTES = 64 * 1024  # decoded bytes a refused request may cost
_BATCH_OPENING = re.compile(rb'\s*\{\s*"batch"\s*:')
_RESOURCE_LOGS_OPENING = re.compile(rb'\s*\{\s*"resourceLogs"\s*:')
PROTOBUF = "application/x-protobuf"


def by_headers(request: web.Request) -> Dialect | None:
    """The dialect when headers and query alone decide it (rules 1-4), else None."""
    if request.content_type == PROTOBUF:
        return OTLP_PROTOBUF
    if (header := configured_header(request)) and header in request.headers:
        return OTLP_JSON
    if TG2G_HEADER in request.headers:
        return TG2G
    if "X-API-Key" in request.headers or "format" in request.query:
        return TIMBERLOGS
    if request.content_type in _TIMBERLOGS_ONLY_TYPES:
        return TIMBERLOGS
    return None


def choose(request: web.Request, body: bytes) -> tuple[Dialect, Any]:
    """The dialect, and the body as JSON when rule 5 had to decode it (parsed from it, once;
    never an OTLP body that opens with its key: its parser decodes it)."""
    dialect = by_headers(request)
    if dialect is not None:
        return dialect, None
    if body.lstrip()[:1] != b"{":
        return TIMBERLOGS, None
    if _RESOURCE_LOGS_OPENING.match(body):
        # OTLP whether the JSON is valid or not (the key is there either way): its parser
        # decodes the body itself, into types cheaper than the dicts decoded here.
        return OTLP_JSON, None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return (GOODLOGS_LOGS if _BATCH_OPENING.match(body) else TIMBERLOGS), None
    if isinstance(doc, dict):
        if "resourceLogs" in doc:
            return OTLP_JSON, doc
        if "batch" in doc:
            return GOODLOGS_LOGS, doc
        has_bearer = request.headers.get("Authorization", "")[:7].lower() == "bearer "
        if "logs" in doc and ("entity" in doc or "source" in doc) and not has_bearer:
            return TG2G, doc
    return TIMBERLOGS, doc


async def choose_by_prefix(request: web.Request, settings: Settings) -> Dialect:
    """The dialect of a refused request, from at most PREFIX_BYTES of its decoded body."""
    try:
        head = await read_body(
            request, settings.max_body_bytes, PREFIX_BYTES, settings.body_timeout_s, prefix=True
        )
    except BodyError:
        return TIMBERLOGS
    return choose(request, head)[0]
