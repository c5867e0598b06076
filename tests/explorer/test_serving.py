"""The explorer's files as the gateway serves them: one origin only, cacheable, small."""

from __future__ import annotations

import gzip
import re

import pytest

from gateway import explorer
from tests.conftest import Stack

# What the page may weigh, uncompressed: a budget, so growth is a decision (docs/explorer.md).
BUDGET_BYTES = 80_000


@pytest.mark.integration
async def test_the_page_is_served_at_the_base_url_with_a_same_origin_policy(stack: Stack) -> None:
    async with stack.session.get(stack.url + "/", headers={"Accept-Encoding": "identity"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        html = (await resp.read()).decode()
        headers = resp.headers
    csp = headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert "unsafe" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-cache"
    # Every asset the page names is under the one prefix, with its content hash.
    named = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert named and all(n.startswith("/explorer/") and "?v=" in n for n in named), named

    async with stack.session.get(stack.url + "/", headers={"If-None-Match": headers["ETag"]}) as resp:
        assert resp.status == 304


@pytest.mark.integration
async def test_assets_are_cacheable_by_their_hash_and_unknown_ones_are_404(stack: Stack) -> None:
    for name, asset in explorer.ASSETS.items():
        async with stack.session.get(
            f"{stack.url}/explorer/{name}?v={asset.version}", headers={"Accept-Encoding": "identity"}
        ) as resp:
            assert resp.status == 200, name
            assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert resp.headers["Content-Security-Policy"] == explorer.CSP
            assert await resp.read() == asset.body
        async with stack.session.get(
            f"{stack.url}/explorer/{name}", headers={"Accept-Encoding": "gzip, br"}
        ) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(await resp.read()) == asset.body
        async with stack.session.get(f"{stack.url}/explorer/{name}?v=old") as resp:
            assert resp.headers["Cache-Control"] == "no-cache"  # an old page's URL is revalidated
        async with stack.session.get(
            f"{stack.url}/explorer/{name}", headers={"If-None-Match": asset.etag}
        ) as resp:
            assert resp.status == 304
    for bad in ("nope.js", "..%2Fapp.py", "index.html"):
        async with stack.session.get(f"{stack.url}/explorer/{bad}") as resp:
            assert resp.status == 404, bad
            assert (await resp.json())["error"]["code"] == "NOT_FOUND"


def test_the_assets_name_no_other_host_and_stay_small() -> None:
    total = len(explorer.PAGE.body) + sum(len(a.body) for a in explorer.ASSETS.values())
    assert total < BUDGET_BYTES, total
    wire = len(explorer.PAGE.gzipped) + sum(len(a.gzipped) for a in explorer.ASSETS.values())
    assert wire < BUDGET_BYTES // 3, wire
    for name, asset in [("index.html", explorer.PAGE), *explorer.ASSETS.items()]:
        text = asset.body.decode()
        # The SVG namespace is a name, not a request.
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text)) - {
            "http://www.w3.org/2000/svg"
        }
        assert urls == set(), name
        assert "@import" not in text and "fonts.googleapis" not in text
