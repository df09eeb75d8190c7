"""The aiohttp and ASGI middlewares: 401 challenges, claims for handlers, the stale policy."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from aiohttp import web

from service.sdk.middleware import ASGI_STATE_KEY, CLAIMS, ASGIMiddleware, StalePolicy, aiohttp_middleware
from service.sdk.testing import FakeFeed, TokenFactory
from service.sdk.verifier import Verifier


@pytest.fixture(name="factory")
def _factory() -> TokenFactory:
    return TokenFactory()


def make_app(factory: TokenFactory, feed: FakeFeed, stale: StalePolicy | None = None) -> web.Application:
    verifier = Verifier(factory.key_source(), issuer=factory.issuer, audience=factory.audience, cache=feed.cache)

    async def me(request: web.Request) -> web.Response:
        return web.json_response({"sub": request[CLAIMS].sub})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    guard = aiohttp_middleware(verifier, listener=feed, stale=stale or StalePolicy(), public_paths={"/healthz"})
    app = web.Application(middlewares=[guard])
    app.router.add_get("/me", me)
    app.router.add_get("/healthz", health)
    return app


class TestAiohttp:
    async def test_claims_challenges_and_revocation(self, aiohttp_client: Any, factory: TokenFactory) -> None:
        """200 with claims; 401 Bearer for none; 401 invalid_token for bad or revoked; public paths open."""
        feed = FakeFeed()
        client = await aiohttp_client(make_app(factory, feed))
        token = factory.token(sub="bob")
        resp = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200 and await resp.json() == {"sub": "bob"}
        resp = await client.get("/me")
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        resp = await client.get("/me", headers={"Authorization": "Bearer nope"})
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        feed.cut_off("bob")
        resp = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
        assert (await client.get("/healthz")).status == 200

    async def test_stale_feed_refused_by_default(self, aiohttp_client: Any, factory: TokenFactory) -> None:
        """Past the budget the default policy answers 503 with Retry-After; back in touch, 200 again."""
        feed = FakeFeed()
        client = await aiohttp_client(make_app(factory, feed, StalePolicy(budget=30)))
        headers = {"Authorization": f"Bearer {factory.token()}"}
        feed.staleness = 29
        assert (await client.get("/me", headers=headers)).status == 200
        feed.staleness = 31
        resp = await client.get("/me", headers=headers)
        assert resp.status == 503 and resp.headers["Retry-After"]
        feed.staleness = 0
        assert (await client.get("/me", headers=headers)).status == 200

    async def test_stale_feed_served_when_configured(self, aiohttp_client: Any, factory: TokenFactory) -> None:
        """refuse=False keeps serving from the cache, and known revocations still apply."""
        feed = FakeFeed()
        client = await aiohttp_client(make_app(factory, feed, StalePolicy(budget=30, refuse=False)))
        good, bad = factory.token(sub="a"), factory.token(sub="b")
        feed.cut_off("b")
        feed.staleness = 3600
        assert (await client.get("/me", headers={"Authorization": f"Bearer {good}"})).status == 200
        assert (await client.get("/me", headers={"Authorization": f"Bearer {bad}"})).status == 401


class TestASGI:
    async def test_claims_in_scope_state_and_401(self, factory: TokenFactory) -> None:
        """A pure ASGI app sees scope['state']['tokenward_claims']; bad tokens never reach it."""
        feed = FakeFeed()
        seen: list[Any] = []

        async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            seen.append(scope["state"][ASGI_STATE_KEY].sub)
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        verifier = Verifier(factory.key_source(), issuer=factory.issuer, audience=factory.audience, cache=feed.cache)
        guarded = ASGIMiddleware(app, verifier, listener=feed)

        async def call(headers: list[tuple[bytes, bytes]]) -> list[MutableMapping[str, Any]]:
            sent: list[MutableMapping[str, Any]] = []

            async def send(message: MutableMapping[str, Any]) -> None:
                sent.append(message)

            async def receive() -> MutableMapping[str, Any]:
                return {"type": "http.request", "body": b""}

            scope = {"type": "http", "method": "GET", "path": "/x", "headers": headers}
            await guarded(scope, receive, send)
            return sent

        sent = await call([(b"authorization", f"Bearer {factory.token(sub='carol')}".encode())])
        assert sent[0]["status"] == 204 and seen == ["carol"]
        sent = await call([])
        assert sent[0]["status"] == 401 and (b"www-authenticate", b"Bearer") in sent[0]["headers"]
        feed.staleness = 60
        sent = await call([(b"authorization", f"Bearer {factory.token()}".encode())])
        assert sent[0]["status"] == 503 and seen == ["carol"]
