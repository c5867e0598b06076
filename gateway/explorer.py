"""The log explorer: a static page at `/` and its assets under `/explorer/`.

The page is plain HTML, CSS and JavaScript (no build step) that talks only to the public
read API with a read key the user types in; the gateway serves files and nothing else here,
so no route below reads a key, a cookie or the store. Assets are read once at import and
named by a hash of their content (`/explorer/app.js?v=<hash>`), so a browser may cache them
for a year and a new release is fetched at once; the page itself is revalidated each time.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

PREFIX = "/explorer/"
STATIC = Path(__file__).with_name("static")
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".html": "text/html",
}
# Only this origin, for everything: no inline script or style, no frames, no other host.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    gzipped: bytes  # compressed once at start: about a third of the bytes on the wire

    @classmethod
    def of(cls, path: Path) -> Asset:
        return cls.made(path.read_bytes(), _TYPES[path.suffix])

    @classmethod
    def made(cls, body: bytes, content_type: str) -> Asset:
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        return cls(body, content_type, etag, gzip.compress(body, compresslevel=9, mtime=0))

    @property
    def version(self) -> str:
        return self.etag.strip('"')


def load_assets() -> tuple[Asset, dict[str, Asset]]:
    """The page (with each asset's URL carrying its hash) and the assets by file name."""
    assets = {p.name: Asset.of(p) for p in sorted(STATIC.iterdir()) if p.suffix in _TYPES and p.is_file()}
    page = assets.pop("index.html")
    html = page.body.decode()
    for name, asset in assets.items():
        html = html.replace(f'"{PREFIX}{name}"', f'"{PREFIX}{name}?v={asset.version}"')
    return Asset.made(html.encode(), page.content_type), assets


PAGE, ASSETS = load_assets()


def _answer(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    headers = {
        **_SECURITY_HEADERS,
        "Cache-Control": cache_control,
        "ETag": asset.etag,
        "Vary": "Accept-Encoding",
    }
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, content_type=asset.content_type, charset="utf-8", headers=headers)


async def page(request: web.Request) -> web.Response:
    # Revalidated on every load (a 304 when unchanged), so it always names the current assets.
    return _answer(request, PAGE, "no-cache")


async def asset(request: web.Request) -> web.Response:
    found = ASSETS.get(request.match_info["name"])
    if found is None:
        return web.json_response(
            {"error": {"code": "NOT_FOUND", "message": "no such explorer asset"}},
            status=404,
            headers=_SECURITY_HEADERS,
        )
    # A URL with the current hash never changes; any other (an old page, a typed URL) is revalidated.
    cache = _IMMUTABLE if request.query.get("v") == found.version else "no-cache"
    return _answer(request, found, cache)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get(PREFIX + "{name}", asset)
