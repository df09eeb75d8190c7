"""service/metrics.py: what /metrics reports, measured against real Redis through the real app."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.clients import ClientRegistry
from service.config import Secret, Settings
from service.keys import KeyRing
from service.metrics import Metrics, cause_of, sample_keys
from tests.conftest import AppFactory, basic
from tests.factories import bearer, login, refresh
from tests.support.prom import scrape, value
from tests.support.redis_servers import RedisServer

ADMIN = basic("admin")


async def test_refresh_outcomes_each_counted(make_client: AppFactory) -> None:
    client = await make_client(refresh_grace=30)
    s = await login(client, "olga")
    status, r1 = await refresh(client, s["refresh_token"])
    assert status == 200
    assert (await refresh(client, s["refresh_token"]))[0] == 200  # grace: the same successor again
    assert (await refresh(client, "twr_garbage"))[0] == 400
    assert (await refresh(client, r1["refresh_token"] + "x"))[0] == 400  # wrong secret: invalid
    text = await scrape(client, ADMIN)
    assert value(text, "tokenward_refresh_total", outcome="rotated") == 1
    assert value(text, "tokenward_refresh_total", outcome="grace") == 1
    assert value(text, "tokenward_refresh_total", outcome="invalid") == 2
    assert value(text, "tokenward_refresh_total", outcome="reuse_detected") == 0
    assert value(text, "tokenward_refresh_total", outcome="expired") == 0


async def test_reuse_and_expiry_outcomes(make_client: AppFactory) -> None:
    client = await make_client(refresh_grace=0, refresh_idle_ttl=1, refresh_max_ttl=1)
    s = await login(client, "pia")
    await refresh(client, s["refresh_token"])
    assert (await refresh(client, s["refresh_token"]))[0] == 400  # replay outside the window: theft
    late = await login(client, "pia")
    await asyncio.sleep(1.3)  # the session's idle and absolute TTL is 1 s
    assert (await refresh(client, late["refresh_token"]))[0] == 400
    text = await scrape(client, ADMIN)
    assert value(text, "tokenward_refresh_total", outcome="reuse_detected") == 1
    assert value(text, "tokenward_refresh_total", outcome="expired") == 1
    assert value(text, "tokenward_revocations_total", kind="session", cause="reuse") == 1


async def test_revocations_by_kind_and_cause_and_events(client: TestClient[Any, Any]) -> None:
    a = await login(client, "quinn")
    b = await login(client, "quinn")
    c = await login(client, "ruth")
    d = await login(client, "sam")
    # The holder logs out (refresh token) and revokes an access token: cause logout.
    assert (await client.post("/oauth/revoke", data={"token": a["refresh_token"]})).status == 200
    assert (await client.post("/oauth/revoke", data={"token": b["access_token"]})).status == 200
    # The user logs out everywhere: one cut-off.
    assert (await client.delete("/v1/me/sessions", headers=bearer(b["access_token"]))).status == 401  # b's jti denied
    e = await login(client, "quinn")
    assert (await client.delete("/v1/me/sessions", headers=bearer(e["access_token"]))).status == 200
    # An admin ends a session, a user's sessions, and a jti by id.
    assert (await client.delete(f"/v1/sessions/{c['session_id']}", headers=ADMIN)).status == 204
    assert (await client.delete("/v1/users/sam/sessions", headers=ADMIN)).status == 200
    body = {"jti": "00" + "a" * 22, "exp": int(time.time()) + 60, "reason": "incident 42: leaked in a log"}
    assert (await client.post("/v1/revocations", json=body, headers=ADMIN)).status == 200
    text = await scrape(client, ADMIN)
    expected = {
        ("session", "logout"): 1,
        ("jti", "logout"): 1,
        ("user", "logout"): 1,
        ("session", "admin"): 1,
        ("user", "admin"): 1,
        ("jti", "admin"): 1,
        ("session", "reuse"): 0,
        ("jti", "reuse"): 0,
        ("user", "reuse"): 0,
    }
    for (kind, cause), n in expected.items():
        assert value(text, "tokenward_revocations_total", kind=kind, cause=cause) == n, (kind, cause)
    assert value(text, "tokenward_events_published_total") == 6
    assert "incident" not in text, "free-form reasons never become labels"
    del d


def test_cause_labels_are_a_closed_set() -> None:
    assert cause_of("logout") == cause_of("logout_all") == cause_of("revoked") == "logout"
    assert cause_of("refresh_token_reuse") == "reuse"
    assert cause_of("admin") == cause_of("anything an admin typed") == "admin"


async def test_request_histogram_by_route_template_and_status(client: TestClient[Any, Any]) -> None:
    s = await login(client, "tess")
    await client.delete(f"/v1/sessions/{s['session_id']}", headers=ADMIN)
    await client.get(f"/no/such/{s['session_id']}")
    await client.request("PROPFIND", "/v1/authz/x")
    text = await scrape(client, ADMIN)
    labels = {"method": "DELETE", "route": "/v1/sessions/{sid}", "status": "204"}
    assert value(text, "tokenward_http_request_duration_seconds_count", **labels) == 1
    assert value(text, "tokenward_http_request_duration_seconds_bucket", le="+Inf", **labels) == 1
    assert value(text, "tokenward_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(text, "tokenward_http_requests_total", method="other", route="/v1/authz/{tail}", status="401") == 1
    assert s["session_id"] not in text and "PROPFIND" not in text


async def test_redis_latency_by_command_and_script(client: TestClient[Any, Any]) -> None:
    s = await login(client, "uma")
    await refresh(client, s["refresh_token"])
    await client.get("/v1/me/sessions", headers=bearer(s["access_token"]))
    text = await scrape(client, ADMIN)
    assert value(text, "tokenward_redis_command_duration_seconds_count", command="EVALSHA create_session") >= 1
    assert value(text, "tokenward_redis_command_duration_seconds_count", command="EVALSHA rotate") >= 1
    assert value(text, "tokenward_redis_command_duration_seconds_count", command="MGET") >= 1
    total = value(text, "tokenward_redis_command_duration_seconds_sum", command="EVALSHA rotate")
    assert 0 < total < 5


async def test_redis_errors_counted_by_kind(
    aiohttp_client: Any, settings: Settings, keyring: KeyRing, clients: ClientRegistry
) -> None:
    server = RedisServer().start()
    try:
        app = create_app(
            Settings(**{**_fields(settings), "redis_url": Secret(server.url), "redis_timeout": 0.5}),
            keyring=keyring,
            clients=clients,
        )
        client: TestClient[Any, Any] = await aiohttp_client(app)
        s = await login(client, "vera")
        server.kill()
        resp = await client.get("/v1/me/sessions", headers=bearer(s["access_token"]))
        assert resp.status == 503
        text = await scrape(client, ADMIN)
        errors = value(text, "tokenward_redis_errors_total", kind="ConnectionError")
        assert errors >= 1
        assert value(text, "tokenward_http_requests_total", method="GET", route="/v1/me/sessions", status="503") == 1
    finally:
        server.close()


def _fields(settings: Settings) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


async def test_each_app_has_its_own_registry(make_client: AppFactory) -> None:
    one = await make_client()
    two = await make_client()
    await login(one, "wes")
    t1, t2 = await scrape(one, ADMIN), await scrape(two, ADMIN)
    assert value(t1, "tokenward_http_requests_total", method="POST", route="/v1/sessions", status="201") == 1
    assert 'route="/v1/sessions"' not in t2


async def test_key_counts_sampled_in_the_background(make_client: AppFactory) -> None:
    client = await make_client(metrics_interval=1)
    for sub in ("xena", "xena", "yann"):
        await login(client, sub)
    s = await login(client, "zack")
    await client.delete(f"/v1/sessions/{s['session_id']}", headers=ADMIN)
    deadline = time.monotonic() + 15
    while True:
        text = await scrape(client, ADMIN)
        if value(text, "tokenward_keys", kind="session") == 3 and value(text, "tokenward_keys", kind="deny_session"):
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.2)
    assert value(text, "tokenward_keys", kind="user_index") == 2
    assert value(text, "tokenward_keys", kind="deny_session") == 1
    assert value(text, "tokenward_keys_sample_coverage") == 1


async def test_key_sample_is_bounded_and_estimates(redis_client: aioredis.Redis) -> None:
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(6000):
            pipe.set(f"tw:{{0}}:s:{i:05d}", 1)
        for i in range(2000):
            pipe.set(f"tw:{{0}}:dj:{i:05d}", 1)
        for i in range(2000):
            pipe.set(f"other:{i}", 1)
        await pipe.execute()
    exact = await sample_keys(redis_client, max_keys=100_000)
    assert exact.coverage == 1 and exact.counts["session"] == 6000 and exact.counts["deny_jti"] == 2000
    calls = 0
    inner: Any = redis_client.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        nonlocal calls
        calls += 1
        return await inner(*args, **options)

    redis_client.execute_command = counting  # type: ignore[method-assign]
    estimate = await sample_keys(redis_client, max_keys=2000)
    assert calls <= 4, "two or three SCAN steps of COUNT 1000, then DBSIZE"
    assert 0.1 < estimate.coverage < 0.35
    assert 4500 < estimate.counts["session"] < 7500, estimate
    assert 1200 < estimate.counts["deny_jti"] < 2800, estimate


def test_render_is_prometheus_text() -> None:
    m = Metrics()
    m.observe_request("GET", "/healthz", 200, 0.001)
    m.redis_call("MGET", 0.0002)
    text = m.render().decode()
    assert value(text, "tokenward_http_requests_total", method="GET", route="/healthz", status="200") == 1
    assert value(text, "tokenward_redis_command_duration_seconds_bucket", command="MGET", le="0.00025") == 1
    assert value(text, "tokenward_redis_errors_total", kind="ConnectionError") == 0
