"""/metrics: Prometheus text for SREs, behind a client with scope metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from aiohttp.test_utils import TestClient

from service.app import create_app
from service.clients import Client, ClientRegistry, hash_secret
from service.config import Settings
from service.keys import KeyRing
from tests.conftest import CLIENT_SECRETS, basic
from tests.factories import login, refresh
from tests.support.prom import value


async def test_metrics_count_routes_by_template(client: TestClient[Any, Any]) -> None:
    s = await login(client, "mia")
    await refresh(client, s["refresh_token"])
    await refresh(client, "garbage")
    await client.delete(f"/v1/sessions/{s['session_id']}", headers=basic("admin"))
    resp = await client.get("/metrics", headers=basic("admin"))
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    assert 'tokenward_http_requests_total{method="POST",route="/v1/sessions",status="201"} 1' in text
    assert 'tokenward_http_requests_total{method="POST",route="/oauth/token",status="200"} 1' in text
    assert 'tokenward_http_requests_total{method="POST",route="/oauth/token",status="400"} 1' in text
    assert 'route="/v1/sessions/{sid}",status="204"' in text, "labels use the route template, not the sid"
    assert s["session_id"] not in text


async def test_metrics_need_the_scope(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=basic("login"))).status == 403


async def test_cached_mode_exports_listener_gauges(
    aiohttp_client: Any, settings: Settings, keyring: KeyRing, redis_client: Any
) -> None:
    registry = ClientRegistry(
        {"prom": Client("prom", hash_secret("prom-secret-0123456789abcdef"), frozenset({"metrics"}))}
    )
    app = create_app(dataclasses.replace(settings, deny_mode="cached"), keyring=keyring, clients=registry)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    text = await (await client.get("/metrics", headers=basic("prom", "prom-secret-0123456789abcdef"))).text()
    assert "tokenward_events_listener_healthy 1" in text
    assert "tokenward_deny_cache_fallbacks_total 0.0" in text, "a counter now, hence _total"


async def test_cached_mode_histograms_the_subscriber_lag(
    aiohttp_client: Any, settings: Settings, keyring: KeyRing, redis_client: Any
) -> None:
    app = create_app(dataclasses.replace(settings, deny_mode="cached"), keyring=keyring, clients=_admin_registry())
    client: TestClient[Any, Any] = await aiohttp_client(app)
    s = await login(client, "lea")
    assert (await client.post("/oauth/revoke", data={"token": s["refresh_token"]})).status == 200
    deadline = time.monotonic() + 10
    while True:
        text = await (await client.get("/metrics", headers=basic("admin"))).text()
        if "tokenward_events_subscriber_lag_seconds_count" in text:
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.05)
    assert value(text, "tokenward_events_subscriber_lag_seconds_count") == 1
    lag = value(text, "tokenward_events_subscriber_lag_seconds_sum")
    assert 0 <= lag < 5


def _admin_registry() -> ClientRegistry:
    return ClientRegistry(
        {cid: Client(cid, hash_secret(sec), frozenset(sc)) for cid, (sec, sc) in CLIENT_SECRETS.items()}
    )
