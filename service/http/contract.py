"""The API contract: the OpenAPI 3.1 document, served as it is kept in the repository."""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web


@cache
def document() -> bytes:
    """The document, read once from the package data."""
    return resources.files("service").joinpath("openapi.json").read_bytes()


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: public; cacheable, since it changes only with a deployment."""
    return web.Response(
        body=document(), content_type="application/json", headers={"Cache-Control": "public, max-age=300"}
    )
