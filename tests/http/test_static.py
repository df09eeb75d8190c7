"""GET /client/tokenward.js: the browser client served by the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

SOURCE = Path(__file__).resolve().parents[2] / "service" / "static" / "tokenward.js"


async def test_client_script_is_served_as_a_public_module(client: TestClient[Any, Any]) -> None:
    """The repository's file, as JavaScript, importable from any origin, revalidated by ETag."""
    resp = await client.get("/client/tokenward.js")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    body = await resp.read()
    assert body == SOURCE.read_bytes()
    assert b"export class TokenwardClient" in body

    again = await client.get("/client/tokenward.js", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""
    stale = await client.get("/client/tokenward.js", headers={"If-None-Match": '"something-else"'})
    assert stale.status == 200
