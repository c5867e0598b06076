"""`POST /v1/logs` is decoded once: a parser handed the router's decoding (`ctx.document`)
uses it and never decodes the body again.

The body below is not JSON at all, so a parser that decodes it again refuses the request;
one that takes the document stores the document's logs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from formats import PARSERS
from tests.formats.conftest import make_ctx

NOT_JSON = b"{ this body is never decoded: the router already did }"

# The JSON dialects of the shared path, each with a document of its own shape and the
# Content-Type its clients send (Timberlogs' explicit type once decoded the body a second time).
DOCUMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "tg2g": ("application/json", {"source": "svc", "logs": [{"message": "from the document"}]}),
    "goodlogs_logs": ("application/json", {"batch": [{"severity": "info", "message": "from the document"}]}),
    "timberlogs": (
        "application/json",
        {
            "logs": [
                {
                    "level": "info",
                    "message": "from the document",
                    "source": "svc",
                    "environment": "production",
                }
            ]
        },
    ),
    "otlp": (
        "application/json",
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "from the document"}}]}]}]},
    ),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_a_parser_takes_the_routers_decoding_instead_of_decoding_again(name: str) -> None:
    content_type, document = DOCUMENTS[name]
    ctx = replace(make_ctx(content_type=content_type), document=document)
    parsed = PARSERS[name](NOT_JSON, ctx)
    assert [row["message"] for row in parsed.rows] == ["from the document"]
