"""Refresh-abuse signals: recorded on the session, compared in the rotation script, acted on by policy."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from service.anomalies import RefreshOrigin, clean_agent, network_of, parse_reasons
from service.store import Keyspace
from tests.conftest import AppFactory, basic
from tests.factories import bearer, login

pytestmark = pytest.mark.topologies("standalone", "cluster")

AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"
# The test client connects from 127.0.0.1; a login described as elsewhere makes a move.
ELSEWHERE = "203.0.113.7"


async def refresh_as(client: TestClient[Any, Any], token: str, agent: str = AGENT) -> tuple[int, dict[str, Any]]:
    resp = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers={"User-Agent": agent},
    )
    body: dict[str, Any] = await resp.json()
    return resp.status, body


async def signals(redis_client: aioredis.Redis, keys: Keyspace, sid: str) -> list[dict[str, Any]]:
    """Every signal in the session's partition stream about ``sid``."""
    entries: Any = await redis_client.xrange(keys.signals(keys.partition_of_id(sid)))
    found = [orjson.loads(fields[b"e"]) for _, fields in entries]
    return [s for s in found if s["sid"] == sid]


async def introspect(client: TestClient[Any, Any], token: str) -> bool:
    resp = await client.post("/oauth/introspect", data={"token": token}, headers=basic("gateway"))
    body: dict[str, Any] = await resp.json()
    return bool(body["active"])


class TestOrigin:
    @pytest.mark.parametrize(
        ("ip", "network"),
        [
            ("198.51.100.23", "198.51.100.0/24"),
            ("2001:db8:aa:bb::1", "2001:db8:aa::/48"),
            ("::ffff:198.51.100.23", "198.51.100.0/24"),
            ("not-an-ip", ""),
            ("", ""),
            (None, ""),
        ],
    )
    def test_network_of(self, ip: str | None, network: str) -> None:
        assert network_of(ip) == network

    def test_agent_is_cleaned_and_capped(self) -> None:
        assert clean_agent("curl/8\r\nX-Evil: 1") == "curl/8X-Evil: 1"
        assert len(clean_agent("a" * 5000)) == 256
        assert clean_agent(None) == ""

    def test_reasons_ignore_unknown_words(self) -> None:
        assert parse_reasons("network,agent,bogus") == ("network", "agent")
        assert parse_reasons("") == ()

    def test_origin_of_bad_address_is_unknown(self) -> None:
        assert RefreshOrigin.of("garbage", "ua") == RefreshOrigin("", "", "ua")


class TestRecording:
    async def test_last_seen_is_recorded_and_listed_beside_the_login_device(self, client: TestClient[Any, Any]) -> None:
        first = await login(client, device={"name": "laptop", "user_agent": AGENT, "ip": ELSEWHERE})
        status, second = await refresh_as(client, first["refresh_token"], agent="TokenwardTest/1.0")
        assert status == 200, second
        resp = await client.get("/v1/me/sessions", headers=bearer(second["access_token"]))
        (row,) = (await resp.json())["sessions"]
        assert (row["ip"], row["user_agent"]) == (ELSEWHERE, AGENT)
        assert (row["last_ip"], row["last_user_agent"]) == ("127.0.0.1", "TokenwardTest/1.0")

    async def test_before_any_refresh_last_seen_is_the_login(self, client: TestClient[Any, Any]) -> None:
        first = await login(client, device={"user_agent": AGENT, "ip": ELSEWHERE})
        resp = await client.get("/v1/me/sessions", headers=bearer(first["access_token"]))
        (row,) = (await resp.json())["sessions"]
        assert (row["last_ip"], row["last_user_agent"]) == (ELSEWHERE, AGENT)

    async def test_back_at_the_login_device_the_extra_fields_go(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        first = await login(client, device={"user_agent": AGENT, "ip": "127.0.0.1"})
        sid = first["session_id"]
        session = keys.session(keys.partition_of_id(sid), sid)
        status, body = await refresh_as(client, first["refresh_token"], agent="other/1")
        assert status == 200, body
        assert await redis_client.hget(session, "ru") == b"other/1"
        status, body = await refresh_as(client, body["refresh_token"])
        assert status == 200, body
        assert await redis_client.hmget(session, "ri", "ru") == [None, None]
        resp = await client.get("/v1/me/sessions", headers=bearer(body["access_token"]))
        (row,) = (await resp.json())["sessions"]
        assert (row["last_ip"], row["last_user_agent"]) == ("127.0.0.1", AGENT)


class TestFlagPolicy:
    async def test_network_change_flags_once_and_refresh_goes_on(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        first = await login(client, device={"user_agent": AGENT, "ip": ELSEWHERE})
        sid = first["session_id"]
        status, second = await refresh_as(client, first["refresh_token"])
        assert status == 200, second
        (signal,) = await signals(redis_client, keys, sid)
        assert signal["reasons"] == ["network"] and signal["action"] == "flag"
        assert signal["ip"] == "127.0.0.1" and signal["sub"] == "alice" and signal["v"] == 1
        # The new network is now the session's (derived from ri, not stored): the next refresh from it is quiet.
        session = keys.session(keys.partition_of_id(sid), sid)
        assert await redis_client.hmget(session, "ri", "nw") == [b"127.0.0.1", None]
        status, third = await refresh_as(client, second["refresh_token"])
        assert status == 200, third
        assert len(await signals(redis_client, keys, sid)) == 1
        assert await introspect(client, third["access_token"])

    async def test_agent_change_flags(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        first = await login(client, device={"user_agent": AGENT, "ip": "127.0.0.1"})
        status, second = await refresh_as(client, first["refresh_token"], agent="python-requests/2.32")
        assert status == 200, second
        (signal,) = await signals(redis_client, keys, first["session_id"])
        assert signal["reasons"] == ["agent"] and signal["ua"] == "python-requests/2.32"

    async def test_same_network_and_agent_is_quiet(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        # A new address inside the same /24 is the same network (DHCP), not a move.
        first = await login(client, device={"user_agent": AGENT, "ip": "127.0.0.99"})
        token = first["refresh_token"]
        for _ in range(3):
            status, body = await refresh_as(client, token)
            assert status == 200, body
            token = body["refresh_token"]
        assert await signals(redis_client, keys, first["session_id"]) == []

    async def test_signal_is_published_on_the_signals_channel(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis
    ) -> None:
        pubsub = redis_client.pubsub()
        await pubsub.subscribe("tw:signals")
        try:
            first = await login(client, device={"user_agent": AGENT, "ip": ELSEWHERE})
            status, _ = await refresh_as(client, first["refresh_token"])
            assert status == 200
            async with asyncio.timeout(5):
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None:
                        break
            signal = orjson.loads(msg["data"])
            assert signal["sid"] == first["session_id"] and signal["reasons"] == ["network"]
            assert signal["xid"]
        finally:
            await pubsub.aclose()

    async def test_burst_flags_once_per_window(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        client = await make_client(refresh_burst=3)
        first = await login(client, device={"user_agent": AGENT, "ip": "127.0.0.1"})
        token = first["refresh_token"]
        for _ in range(6):
            status, body = await refresh_as(client, token)
            assert status == 200, body
            token = body["refresh_token"]
        found = await signals(redis_client, keys, first["session_id"])
        assert [s["reasons"] for s in found] == [["burst"]]

    async def test_many_concurrent_refreshes_from_a_new_network_flag_once(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        first = await login(client, device={"user_agent": AGENT, "ip": ELSEWHERE})
        results = await asyncio.gather(*(refresh_as(client, first["refresh_token"]) for _ in range(30)))
        assert {status for status, _ in results} <= {200, 400}
        assert len({body["refresh_token"] for status, body in results if status == 200}) == 1
        (signal,) = await signals(redis_client, keys, first["session_id"])
        assert signal["reasons"] == ["network"]


class TestOtherPolicies:
    async def test_revoke_policy_ends_the_session_and_denies_its_tokens(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        client = await make_client(refresh_anomaly="revoke")
        first = await login(client, device={"user_agent": AGENT, "ip": ELSEWHERE})
        other = await login(client, device={"user_agent": AGENT, "ip": "127.0.0.1"})
        assert await introspect(client, first["access_token"])
        status, body = await refresh_as(client, first["refresh_token"])
        assert (status, body["error"]) == (400, "invalid_grant")
        assert not await introspect(client, first["access_token"])
        # The family is gone: the token that tripped it cannot be retried from home either.
        status, _ = await refresh_as(client, first["refresh_token"])
        assert status == 400
        # The revocation is an ordinary event, so deny caches learn of it like any logout.
        p = keys.partition_of_id(first["session_id"])
        entries: Any = await redis_client.xrange(keys.stream(p))
        events = [orjson.loads(f[b"e"]) for _, f in entries]
        assert [(e["kind"], e["id"], e["reason"]) for e in events] == [("sid", first["session_id"], "refresh_anomaly")]
        # Other sessions of the user are untouched.
        status, body = await refresh_as(client, other["refresh_token"])
        assert status == 200, body

    async def test_revoke_policy_under_concurrent_refreshes_leaves_no_live_successor(
        self, make_client: AppFactory
    ) -> None:
        client = await make_client(refresh_anomaly="revoke")
        first = await login(client, device={"user_agent": AGENT, "ip": ELSEWHERE})
        results = await asyncio.gather(*(refresh_as(client, first["refresh_token"]) for _ in range(30)))
        assert {status for status, _ in results} == {400}
        assert not await introspect(client, first["access_token"])

    async def test_allow_policy_records_but_never_flags(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        client = await make_client(refresh_anomaly="allow", refresh_burst=2)
        first = await login(client, device={"user_agent": AGENT, "ip": ELSEWHERE})
        token = first["refresh_token"]
        for agent in ("a/1", "b/2", "c/3", "d/4"):
            status, body = await refresh_as(client, token, agent=agent)
            assert status == 200, body
            token = body["refresh_token"]
        assert await signals(redis_client, keys, first["session_id"]) == []
        resp = await client.get("/v1/me/sessions", headers=bearer(body["access_token"]))
        (row,) = (await resp.json())["sessions"]
        assert (row["last_ip"], row["last_user_agent"]) == ("127.0.0.1", "d/4")
