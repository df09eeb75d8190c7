"""Several service processes on one Redis: read-your-writes and single-use rotation."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.keys import KeyRing
from tests.conftest import CLIENT_SECRETS, basic
from tests.support.processes import ServiceProcess, write_config
from tests.support.redis_servers import RedisServer


@pytest.fixture(name="replicas", scope="module")
def _replicas(tmp_path_factory: pytest.TempPathFactory, keyring: KeyRing) -> Iterator[list[ServiceProcess]]:
    redis = RedisServer().start()
    env = write_config(Path(tmp_path_factory.mktemp("replicas")), keyring, CLIENT_SECRETS)
    # One strict replica and two answering from their events-fed caches: read-your-writes
    # must hold across both modes.
    modes = ["strict", "cached", "cached"]
    procs = [ServiceProcess({**env, "TOKENWARD_REDIS_URL": redis.url, "TOKENWARD_DENY_MODE": m}) for m in modes]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            p.stop()
        redis.close()


async def post_json(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]) -> Any:
    async with http.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_revoke_on_one_is_refused_by_the_others_at_once(replicas: list[ServiceProcess]) -> None:
    async with aiohttp.ClientSession() as http:
        for round_ in range(20):
            a, *others = random.sample(replicas, 3)
            status, s = await post_json(http, f"{a.url}/v1/sessions", {"sub": f"rw{round_}"}, basic("login"))
            assert status == 201
            kind = round_ % 3
            if kind == 0:
                async with http.post(f"{a.url}/oauth/revoke", data={"token": s["refresh_token"]}) as r:
                    assert r.status == 200
            elif kind == 1:
                async with http.post(f"{a.url}/oauth/revoke", data={"token": s["access_token"]}) as r:
                    assert r.status == 200
            else:
                async with http.delete(f"{a.url}/v1/users/rw{round_}/sessions", headers=basic("admin")) as r:
                    assert r.status == 200
            for other in others:
                async with http.post(
                    f"{other.url}/oauth/introspect", data={"token": s["access_token"]}, headers=basic("gateway")
                ) as r:
                    assert await r.read() == b'{"active":false}'
                async with http.get(
                    f"{other.url}/v1/authz", headers={"Authorization": f"Bearer {s['access_token']}"}
                ) as r:
                    assert r.status == 401


async def test_rotation_is_single_use_across_replicas(replicas: list[ServiceProcess]) -> None:
    """One refresh token, 30 concurrent refreshes spread over three processes: one successor."""
    async with aiohttp.ClientSession() as http:
        for round_ in range(5):
            status, s = await post_json(http, f"{replicas[0].url}/v1/sessions", {"sub": f"ru{round_}"}, basic("login"))
            assert status == 201

            async def refresh(p: ServiceProcess, token: str = s["refresh_token"]) -> tuple[int, Any]:
                data = {"grant_type": "refresh_token", "refresh_token": token}
                async with http.post(f"{p.url}/oauth/token", data=data) as resp:
                    return resp.status, await resp.json()

            results = await asyncio.gather(*(refresh(replicas[i % 3]) for i in range(30)))
            assert all(code in (200, 400) for code, _ in results)
            successors = {body["refresh_token"] for code, body in results if code == 200}
            assert len(successors) == 1
