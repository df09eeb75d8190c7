"""Liveness and readiness."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from .. import state
from ..metrics import CONTENT_TYPE


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process answers. No dependencies, so Redis trouble never restarts pods."""
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: Redis reachable and keys loaded; names the store in use."""
    store = request.app[state.STORE]
    ring = request.app[state.KEYRING]
    try:
        redis_ok = await asyncio.wait_for(store.ping(), timeout=1.0)
    except Exception:
        redis_ok = False
    ready = redis_ok and bool(ring.keys) and not store.unfit
    body: dict[str, object] = {
        "status": "ready" if ready else "unavailable",
        "store": store.kind,
        "redis": "ok" if redis_ok else "unreachable",
        "signing_kid": ring.signer.kid,
        "keys": len(ring.keys),
    }
    if store.unfit:
        body["unfit"] = list(store.unfit)
    return web.Response(
        status=200 if ready else 503,
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics (Prometheus text; a client with scope ``metrics``)."""
    from . import auth

    await auth.client(request, "metrics")
    return web.Response(
        body=request.app[state.METRICS].render(),
        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
    )
