"""Cached deny checks: the same answers as strict mode, read-your-writes kept, fewer round trips."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio.cluster import RedisCluster

from service import state
from service.denycache import CachedRevocations
from tests.conftest import AppFactory, basic
from tests.factories import bearer, login, refresh

pytestmark = pytest.mark.topologies("standalone", "cluster")


async def commands_processed(client: Any) -> int:
    """Commands Redis has processed, summed over every node on a cluster."""
    if isinstance(client, RedisCluster):
        per_node = await client.info("stats", target_nodes=RedisCluster.ALL_NODES)
        return sum(int(stats["total_commands_processed"]) for stats in per_node.values())
    return int((await client.info("stats"))["total_commands_processed"])


@pytest.fixture(name="cached")
async def _cached(make_client: AppFactory) -> TestClient[Any, Any]:
    return await make_client(deny_mode="cached")


async def test_cached_answers_match_strict(cached: TestClient[Any, Any], make_client: AppFactory) -> None:
    """Every kind of revocation is refused at once by a cached replica and a strict one."""
    strict = await make_client()
    revocations = cached.app[state.REVOCATIONS]
    assert isinstance(revocations, CachedRevocations)
    for n in range(10):
        s = await login(cached, f"cm{n}")
        _, r = await refresh(cached, s["refresh_token"])
        for client in (cached, strict):
            assert (await client.get("/v1/authz", headers=bearer(r["access_token"]))).status == 200
        kind = n % 3
        if kind == 0:
            await strict.post("/oauth/revoke", data={"token": r["refresh_token"]})
        elif kind == 1:
            await strict.post("/oauth/revoke", data={"token": r["access_token"]})
        else:
            await strict.delete(f"/v1/users/cm{n}/sessions", headers=basic("admin"))
        # Revoked through the other app (another replica): refused here immediately.
        assert (await cached.get("/v1/authz", headers=bearer(r["access_token"]))).status == 401
        assert (await strict.get("/v1/authz", headers=bearer(r["access_token"]))).status == 401
    # The listener keeps up: (almost) no request needed the strict path (a GC pause may cost one).
    assert revocations.fallbacks <= 2


async def test_concurrent_checks_share_one_counter_read(cached: TestClient[Any, Any]) -> None:
    """200 concurrent checks, far fewer Redis reads than requests, every answer right."""
    s = await login(cached, "crowd")
    revocations = cached.app[state.REVOCATIONS]
    assert isinstance(revocations, CachedRevocations)
    client = cached.app[state.STORE].client
    before = await commands_processed(client)
    results = await asyncio.gather(*(cached.get("/v1/authz", headers=bearer(s["access_token"])) for _ in range(200)))
    after = await commands_processed(client)
    assert all(r.status == 200 for r in results)
    assert after - before - 1 < 100, f"{after - before} Redis commands for 200 checks"


async def test_unhealthy_listener_falls_back_to_strict(cached: TestClient[Any, Any]) -> None:
    revocations = cached.app[state.REVOCATIONS]
    assert isinstance(revocations, CachedRevocations)
    s = await login(cached, "fallback")
    await revocations.listener.aclose()  # the listener is gone: never answer from a stale cache
    await cached.post("/oauth/revoke", data={"token": s["access_token"]})
    assert (await cached.get("/v1/authz", headers=bearer(s["access_token"]))).status == 401
    assert revocations.fallbacks >= 1


async def test_a_cancelled_check_leaves_the_shared_read_to_the_others(cached: TestClient[Any, Any]) -> None:
    """Clients that go away mid-check cancel only their own wait on the shared counter read."""
    s = await login(cached, "quitter")
    revocations = cached.app[state.REVOCATIONS]
    assert isinstance(revocations, CachedRevocations)
    claims = cached.app[state.TOKENS].verify(s["access_token"])
    checks = [asyncio.create_task(revocations.is_denied(claims)) for _ in range(40)]
    await asyncio.sleep(0)  # every check has joined the read; none has its answer yet
    for task in checks[::2]:
        task.cancel()
    done = await asyncio.gather(*checks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in done[::2])
    assert done[1::2] == [False] * 20, done[1::2]
    assert revocations.fallbacks == 0, "the others were answered from the cache, not by a fallback"
