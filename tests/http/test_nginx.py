"""A real nginx with auth_request to /v1/authz in front of an upstream, on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from service.keys import KeyRing
from service.sdk.identity import decode_header, is_safe_sub
from tests.conftest import CLIENT_SECRETS, basic
from tests.support.processes import Nginx, ServiceProcess, write_config
from tests.support.redis_servers import RedisServer, free_port


class Stack:
    def __init__(self, redis: RedisServer, service: ServiceProcess, nginx: Nginx, seen: list[dict[str, str]]) -> None:
        self.redis, self.service, self.nginx, self.seen = redis, service, nginx, seen


@pytest.fixture(name="own_redis", scope="module")
def _own_redis() -> Iterator[RedisServer]:
    # With AOF, as production runs it: a restart keeps the boot marker (a wipe is test_faults').
    server = RedisServer(appendonly=True).start()
    yield server
    server.close()


@pytest.fixture(name="stack")
async def _stack(own_redis: RedisServer, keyring: KeyRing, tmp_path: Path) -> AsyncIterator[Stack]:
    if own_redis.proc is None:
        own_redis.start()
    seen: list[dict[str, str]] = []

    async def upstream(request: web.Request) -> web.Response:
        seen.append({k: v for k, v in request.headers.items() if k.lower().startswith("x-auth-request")})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    env = write_config(tmp_path, keyring, CLIENT_SECRETS)
    service = ServiceProcess({**env, "TOKENWARD_REDIS_URL": own_redis.url, "TOKENWARD_REDIS_TIMEOUT": "0.5"})
    await asyncio.to_thread(service.start)
    nginx = await asyncio.to_thread(Nginx(service.url, f"http://127.0.0.1:{port}").start)
    yield Stack(own_redis, service, nginx, seen)
    nginx.stop()
    service.stop()
    await runner.cleanup()


async def login(http: aiohttp.ClientSession, stack: Stack, sub: str) -> dict[str, Any]:
    async with http.post(
        f"{stack.service.url}/v1/sessions", json={"sub": sub, "scope": "read"}, headers=basic("login")
    ) as resp:
        assert resp.status == 201
        data: dict[str, Any] = await resp.json()
        return data


async def through_gateway(http: aiohttp.ClientSession, stack: Stack, token: str | None) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(f"{stack.nginx.url}/api/things", headers=headers) as resp:
        await resp.read()
        return resp


async def test_gateway_end_to_end(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        s = await login(http, stack, "yuri")
        resp = await through_gateway(http, stack, s["access_token"])
        assert resp.status == 200
        assert stack.seen[-1]["X-Auth-Request-User"] == "yuri"
        assert stack.seen[-1]["X-Auth-Request-Session"] == s["session_id"]
        assert stack.seen[-1]["X-Auth-Request-Scope"] == "read"

        resp = await through_gateway(http, stack, None)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        calls = len(stack.seen)
        resp = await through_gateway(http, stack, "garbage")
        assert resp.status == 401 and len(stack.seen) == calls, "the upstream never sees a denied request"

        # Logout: every access token of the session is refused at once.
        await http.post(f"{stack.service.url}/oauth/revoke", data={"token": s["refresh_token"]})
        assert (await through_gateway(http, stack, s["access_token"])).status == 401

        # jti revocation.
        t = await login(http, stack, "yuri")
        assert (await through_gateway(http, stack, t["access_token"])).status == 200
        await http.post(f"{stack.service.url}/oauth/revoke", data={"token": t["access_token"]})
        assert (await through_gateway(http, stack, t["access_token"])).status == 401

        # User cut-off.
        u = await login(http, stack, "zed")
        assert (await through_gateway(http, stack, u["access_token"])).status == 200
        claims = jwt.decode(u["access_token"], options={"verify_signature": False})
        assert claims["sub"] == "zed"
        async with http.post(f"{stack.service.url}/v1/revocations", json={"sub": "zed"}, headers=basic("admin")) as r:
            assert r.status == 200
        assert (await through_gateway(http, stack, u["access_token"])).status == 401


async def test_redis_down_gives_503_then_recovers(stack: Stack) -> None:
    """Redis stopped: the gateway answers 503 with Retry-After (never 401: clients keep their
    tokens); when Redis returns, the same token is allowed again, without restarting anything."""
    async with aiohttp.ClientSession() as http:
        s = await login(http, stack, "amy")
        assert (await through_gateway(http, stack, s["access_token"])).status == 200
        # Let the token's second pass: had the restart lost the boot marker, a new one would
        # now deny it, so "allowed again" below proves the store came back whole.
        await asyncio.sleep(1.1)
        stack.redis.stop()
        try:
            started = time.monotonic()
            resp = await through_gateway(http, stack, s["access_token"])
            assert resp.status == 503 and resp.headers["Retry-After"]
            assert time.monotonic() - started < 3, "fast 503, no hang"
            async with http.get(
                f"{stack.service.url}/v1/authz", headers={"Authorization": f"Bearer {s['access_token']}"}
            ) as direct:
                assert direct.status == 503
            async with http.get(f"{stack.service.url}/readyz") as ready:
                assert ready.status == 503
        finally:
            stack.redis.start()
        deadline = time.monotonic() + 10
        while (await through_gateway(http, stack, s["access_token"])).status != 200:
            assert time.monotonic() < deadline, "no recovery after Redis returned"
            await asyncio.sleep(0.1)


# Subs that reach the upstream alike unless the header carries them exactly: nginx (and most
# proxies) trim the spaces around a header value, and pass C1 and raw UTF-8 bytes as they come.
LOOKALIKE_SUBS = ["admin-user", " admin-user ", "admin-user\u0085", "admin%2Duser", "admin user", "é", "e\u0301", "ü/ö"]


async def test_two_subs_never_reach_the_upstream_as_one(stack: Stack) -> None:
    """Login refuses what is not a safe identifier; every sub it accepts reaches the upstream
    percent-encoded, decodes to exactly itself, and differs from every other sub's header."""
    arrived: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for sub in LOOKALIKE_SUBS:
            async with http.post(
                f"{stack.service.url}/v1/sessions", json={"sub": sub, "scope": "read"}, headers=basic("login")
            ) as resp:
                if not is_safe_sub(sub):
                    assert resp.status == 400, sub
                    assert (await resp.json(content_type=None))["code"] == "invalid_request"
                    continue
                assert resp.status == 201, sub
                token = (await resp.json())["access_token"]
            assert (await through_gateway(http, stack, token)).status == 200
            header = stack.seen[-1]["X-Auth-Request-User"]
            assert header.isascii() and " " not in header
            assert decode_header(header) == sub
            arrived[sub] = header
    assert set(arrived) == {s for s in LOOKALIKE_SUBS if is_safe_sub(s)}
    assert len(set(arrived.values())) == len(arrived), arrived
    assert arrived["admin-user"] == "admin-user", "an ordinary identifier is its own header form"
