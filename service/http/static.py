"""The browser client, served at a stable path so web apps import it from the service itself."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from aiohttp import web


@cache
def _client_script() -> tuple[bytes, str]:
    """The module's bytes and their ETag, read once from the package data."""
    body = resources.files("service").joinpath("static/tokenward.js").read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def client_js(request: web.Request) -> web.Response:
    """GET /client/tokenward.js: the ES module (public; revalidated so upgrades reach browsers)."""
    body, etag = _client_script()
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=300, must-revalidate",
        # A module script from another origin is fetched in CORS mode; the file holds no secret.
        "Access-Control-Allow-Origin": "*",
        "X-Content-Type-Options": "nosniff",
    }
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="text/javascript", charset="utf-8", headers=headers)
