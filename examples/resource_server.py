"""A resource server protected by the Tokenward SDK: ``python -m examples.resource_server``.

Settings (environment): ``TOKENWARD_URL`` (where the JWKS lives, default
``http://127.0.0.1:8080``), ``REDIS_URL`` (the Redis Tokenward writes to, default
``redis://127.0.0.1:6379/0``), ``AUDIENCE`` (default ``tokenward``), ``ISSUER`` (default
``TOKENWARD_URL``), ``PORT`` (default 8081), ``TOKENWARD_PARTITIONS`` (default 1).

``GET /hello`` answers the caller's ``sub``; ``GET /healthz`` is open and reports the
revocation feed. A logged-out token is refused on the next call, without any request
to Tokenward: the revocation arrives through Redis into the local deny cache.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from service.sdk import (
    CLAIMS,
    DenyCache,
    JWKSClient,
    RevocationListener,
    StalePolicy,
    Verifier,
    aiohttp_middleware,
)

LISTENER = web.AppKey("listener", RevocationListener)


async def hello(request: web.Request) -> web.Response:
    """GET /hello: who is calling."""
    claims = request[CLAIMS]
    return web.json_response({"hello": claims.sub, "session": claims.sid, "scope": claims.scope})


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the feed's state, for probes and for curious humans."""
    listener = request.app[LISTENER]
    return web.json_response(
        {"healthy": listener.healthy, "staleness": round(listener.staleness, 3), "last_seq": listener.last_seq},
        status=200 if listener.healthy else 503,
    )


def create_app(environ: dict[str, str] | os._Environ[str] = os.environ) -> web.Application:
    """Wire the SDK: cache, listener, JWKS, verifier, middleware."""
    base = environ.get("TOKENWARD_URL", "http://127.0.0.1:8080").rstrip("/")
    cache = DenyCache()
    listener = RevocationListener(
        environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        cache,
        partitions=int(environ.get("TOKENWARD_PARTITIONS", "1")),
    )
    jwks = JWKSClient(f"{base}/.well-known/jwks.json")
    verifier = Verifier(
        jwks, issuer=environ.get("ISSUER", base), audience=environ.get("AUDIENCE", "tokenward"), cache=cache
    )
    app = web.Application(
        middlewares=[aiohttp_middleware(verifier, listener=listener, stale=StalePolicy(), public_paths={"/healthz"})]
    )
    app[LISTENER] = listener

    async def feed(app: web.Application) -> AsyncIterator[None]:
        # Load the deny set before taking traffic; the listener keeps retrying on its own.
        await listener.start(wait=10.0)
        yield
        await listener.aclose()
        await jwks.aclose()

    app.cleanup_ctx.append(feed)
    app.router.add_get("/hello", hello)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    """Run on 127.0.0.1:$PORT."""
    logging.basicConfig(level=logging.INFO)
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8081")))


if __name__ == "__main__":
    main()
