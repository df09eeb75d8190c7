"""A resource server protected by the Tokenward SDK: ``python -m examples.resource_server``.

Settings (environment): ``TOKENWARD_URL`` (where the JWKS lives, default
``http://127.0.0.1:8080``), ``REDIS_URL`` (the Redis Tokenward writes to, default
``redis://127.0.0.1:6379/0``), ``AUDIENCE`` (default ``tokenward``), ``ISSUER`` (default
``TOKENWARD_URL``), ``PORT`` (default 8081), ``TOKENWARD_PARTITIONS`` (default 1).

``GET /hello`` (and ``GET /api/hello``) answers the caller's ``sub``; ``GET /healthz`` is open
and reports the revocation feed. A logged-out token is refused on the next call, without any
request to Tokenward: the revocation arrives through Redis into the local deny cache.

The browser demo: ``GET /demo`` is a page using Tokenward's browser client
(``PUBLIC_TOKENWARD_URL``, default ``TOKENWARD_URL``, is where browsers reach Tokenward), and
``POST /demo/login`` is a DEMO ONLY login backend: one fixed user, ``demo`` / ``demo``. It opens
the session with ``POST /v1/sessions`` and ``"delivery": "cookie"`` using its own client
credentials (``DEMO_CLIENT_ID``, default ``demo-login``, and ``DEMO_CLIENT_SECRET``; scope
``sessions:write``) and relays Tokenward's ``Set-Cookie`` to the browser. The cookie is host-only,
so the page, this server and Tokenward must share a host name (ports may differ).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import AsyncIterator
from html import escape
from pathlib import Path

import aiohttp
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
DEMO_DIR = Path(__file__).resolve().parent / "demo"
# DEMO ONLY: one fixed user and password, so the demo runs without a user database.
DEMO_USER, DEMO_PASSWORD = "demo", "demo"


class DemoLogin:
    """The demo login backend's settings and its HTTP client to Tokenward."""

    def __init__(self, tokenward_url: str, public_url: str, client_id: str, client_secret: str) -> None:
        self.tokenward_url = tokenward_url
        self.public_url = public_url
        self.auth = aiohttp.BasicAuth(client_id, client_secret) if client_secret else None
        self.http: aiohttp.ClientSession | None = None

    def page(self) -> bytes:
        """The demo page with Tokenward's public URL filled in."""
        html = (DEMO_DIR / "index.html").read_text()
        return html.replace("{{TOKENWARD_URL}}", escape(self.public_url, quote=True)).encode()


DEMO = web.AppKey("demo", DemoLogin)


def _problem(status: int, title: str, detail: str) -> web.Response:
    return web.json_response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status=status,
        content_type="application/problem+json",
    )


async def demo_page(request: web.Request) -> web.Response:
    """GET /demo: the page (its script imports the client from Tokenward)."""
    return web.Response(body=request.app[DEMO].page(), content_type="text/html", charset="utf-8")


async def demo_script(request: web.Request) -> web.FileResponse:
    """GET /demo/app.js: the page's script."""
    return web.FileResponse(DEMO_DIR / "app.js", headers={"Content-Type": "text/javascript; charset=utf-8"})


async def demo_login(request: web.Request) -> web.Response:
    """POST /demo/login (DEMO ONLY): check the fixed demo user, open a cookie session, relay it."""
    demo = request.app[DEMO]
    if demo.auth is None or demo.http is None:
        return _problem(503, "Demo login not configured", "set DEMO_CLIENT_SECRET (a client with sessions:write)")
    try:
        form = await request.json()
    except ValueError:
        return _problem(400, "Bad request", "send JSON {username, password, device}")
    if not isinstance(form, dict):
        return _problem(400, "Bad request", "send JSON {username, password, device}")
    user, password = str(form.get("username", "")), str(form.get("password", ""))
    matches = hmac.compare_digest(user.encode(), DEMO_USER.encode())
    matches &= hmac.compare_digest(password.encode(), DEMO_PASSWORD.encode())
    if not matches:
        return _problem(401, "Sign-in refused", "the demo user is demo / demo")
    session = {
        "sub": DEMO_USER,
        "scope": "read",
        "delivery": "cookie",
        "device": {
            "name": str(form.get("device") or "browser")[:100],
            "user_agent": request.headers.get("User-Agent", "")[:256],
            "ip": request.remote or "",
        },
    }
    try:
        async with demo.http.post(f"{demo.tokenward_url}/v1/sessions", json=session, auth=demo.auth) as resp:
            body = await resp.json(content_type=None)
            cookies = resp.headers.getall("Set-Cookie", [])
            status = resp.status
    except (aiohttp.ClientError, ValueError) as exc:
        return _problem(502, "Tokenward unreachable", str(exc))
    if isinstance(body, dict):
        # Cookie delivery keeps the refresh token out of the body; never hand one to page scripts.
        body.pop("refresh_token", None)
    out = web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
    for cookie in cookies:
        out.headers.add("Set-Cookie", cookie)
    return out


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
    demo = DemoLogin(
        base,
        environ.get("PUBLIC_TOKENWARD_URL", base).rstrip("/"),
        environ.get("DEMO_CLIENT_ID", "demo-login"),
        environ.get("DEMO_CLIENT_SECRET", ""),
    )
    cache = DenyCache()
    listener = RevocationListener(
        environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        cache,
        partitions=int(environ.get("TOKENWARD_PARTITIONS", "1")),
    )
    jwks = JWKSClient(f"{base}/.well-known/jwks.json")
    verifier = Verifier(
        jwks,
        issuer=environ.get("ISSUER", base),
        audience=environ.get("AUDIENCE", "tokenward"),
        cache=cache,
        # The service's access-token lifetime: a token claiming a longer one is refused.
        access_ttl=int(environ.get("TOKENWARD_ACCESS_TTL", "300")),
    )
    app = web.Application(
        middlewares=[
            aiohttp_middleware(
                verifier,
                listener=listener,
                stale=StalePolicy(),
                public_paths={"/healthz", "/demo", "/demo/app.js", "/demo/login"},
            )
        ]
    )
    app[LISTENER] = listener
    app[DEMO] = demo

    async def feed(app: web.Application) -> AsyncIterator[None]:
        # Load the deny set before taking traffic; the listener keeps retrying on its own.
        await listener.start(wait=10.0)
        yield
        await listener.aclose()
        await jwks.aclose()

    async def demo_http(app: web.Application) -> AsyncIterator[None]:
        # No cookie jar: the login backend relays Tokenward's cookies, it never keeps them.
        demo.http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=10))
        yield
        await demo.http.close()

    app.cleanup_ctx.append(feed)
    app.cleanup_ctx.append(demo_http)
    app.router.add_get("/hello", hello)
    app.router.add_get("/api/hello", hello)
    app.router.add_get("/demo", demo_page)
    app.router.add_get("/demo/app.js", demo_script)
    app.router.add_post("/demo/login", demo_login)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    """Run on 127.0.0.1:$PORT."""
    logging.basicConfig(level=logging.INFO)
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8081")))


if __name__ == "__main__":
    main()
