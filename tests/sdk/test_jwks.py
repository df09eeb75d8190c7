"""JWKS: rotation picked up on first use, retired keys stop verifying, random kids cannot force fetches."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from aiohttp import web

from service.sdk.cache import DenyCache
from service.sdk.jwks import JWKSClient
from service.sdk.testing import TokenFactory
from service.sdk.verifier import InvalidToken, Verifier


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="factory")
def _factory() -> TokenFactory:
    return TokenFactory()


@pytest.fixture(name="jwks_url")
async def _jwks_url(aiohttp_server: Any, factory: TokenFactory) -> tuple[str, list[int]]:
    """A JWKS endpoint serving the factory's current keys; the list counts requests."""
    hits: list[int] = []

    async def jwks(request: web.Request) -> web.Response:
        hits.append(1)
        return web.Response(body=factory.jwks_bytes(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    server = await aiohttp_server(app)
    return str(server.make_url("/.well-known/jwks.json")), hits


async def test_rotation_retirement_and_rate_limit(factory: TokenFactory, jwks_url: tuple[str, list[int]]) -> None:
    """The whole key lifecycle through the verifier, with fetches counted."""
    url, hits = jwks_url
    clock = Clock()
    jwks = JWKSClient(url, ttl=300, min_refetch_interval=30, clock=clock)
    verifier = Verifier(jwks, issuer=factory.issuer, audience=factory.audience, cache=DenyCache())
    try:
        old = factory.token()
        await verifier.verify(old)
        assert len(hits) == 1

        # Rotation: a token signed with a new key verifies at once (one refetch), old ones too.
        clock.now += 31
        factory.add_key("test-2", "ES256")
        new = factory.token()
        assert (await verifier.verify(new)).sub == "alice"
        await verifier.verify(old)
        assert len(hits) == 2

        # Random kids: at most one fetch per min_refetch_interval, however many arrive.
        for round_fetches in (2, 3):
            for _ in range(200):
                forged = factory.token(headers={"kid": secrets.token_hex(8)})
                with pytest.raises(InvalidToken, match="unknown key"):
                    await verifier.verify(forged)
            assert len(hits) == round_fetches
            clock.now += 31
        clock.now -= 25  # 6 s after the last fetch: still inside the interval
        with pytest.raises(InvalidToken):
            await verifier.verify(factory.token(headers={"kid": "nope"}))
        assert len(hits) == 3

        # Retirement: once the cached set expires (TTL), the retired key stops verifying.
        factory.retire_key("test-1")
        await verifier.verify(old)  # still cached
        clock.now += 301
        with pytest.raises(InvalidToken, match="unknown key"):
            await verifier.verify(old)
        await verifier.verify(new)
        assert len(hits) == 4
    finally:
        await jwks.aclose()


async def test_fetch_failure_keeps_old_keys(aiohttp_server: Any, factory: TokenFactory) -> None:
    """A JWKS outage after a good fetch keeps verifying with the cached keys."""
    state = {"up": True}

    async def jwks(request: web.Request) -> web.Response:
        if not state["up"]:
            return web.Response(status=503)
        return web.Response(body=factory.jwks_bytes(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await aiohttp_server(app)
    clock = Clock()
    client = JWKSClient(str(server.make_url("/jwks")), ttl=10, min_refetch_interval=1, clock=clock)
    verifier = Verifier(client, issuer=factory.issuer, audience=factory.audience)
    try:
        token = factory.token()
        await verifier.verify(token)
        state["up"] = False
        clock.now += 60
        await verifier.verify(token)
        assert client.fetches == 2
    finally:
        await client.aclose()
