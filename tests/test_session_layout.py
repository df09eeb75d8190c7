"""The session hash keeps only what the scripts cannot derive (memory per session, issue 6).

Derived: the last use (the rotation time, else the creation), the network of the latest
address (dotted quads), the burst window a rotation opened. The tag key is random and stored
from the start ('K'): a tag must be something no token holder can compute, since it vouches
for generations the store lost. Sessions written in the older layouts keep working.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from service.anomalies import derived_network, network_of
from service.store import Keyspace
from service.tokens import RefreshToken, new_secret, seal, secret_hash
from tests.conftest import AppFactory
from tests.factories import bearer, login
from tests.test_anomalies import AGENT, ELSEWHERE, refresh_as, signals

pytestmark = pytest.mark.topologies("standalone", "cluster")

DERIVED = ("k", "la", "nw", "rw", "rc", "pe", "pn", "ri", "ru")


async def fields(redis_client: aioredis.Redis, keys: Keyspace, sid: str) -> dict[str, bytes]:
    raw: dict[Any, Any] = await redis_client.hgetall(keys.session(keys.partition_of_id(sid), sid))
    return {k.decode(): v for k, v in raw.items()}


async def listed(client: TestClient[Any, Any], access_token: str) -> dict[str, Any]:
    resp = await client.get("/v1/me/sessions", headers=bearer(access_token))
    (row,) = (await resp.json())["sessions"]
    assert isinstance(row, dict)
    return row


@pytest.mark.parametrize(
    ("ip", "stored"),
    [
        ("198.51.100.23", False),
        ("2001:db8:aa:bb::1", True),
        ("::ffff:198.51.100.23", True),
        ("198.051.100.23", True),  # a quad to Lua, no address to Python: '' stored, no baseline
        ("not-an-ip", False),
        ("", False),
    ],
)
def test_network_is_stored_only_where_the_script_cannot_derive_it(ip: str, stored: bool) -> None:
    assert (network_of(ip) != derived_network(ip)) is stored


class TestCommonCase:
    async def test_a_fresh_session_stores_nothing_derivable(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        first = await login(client, device={"name": "laptop", "user_agent": AGENT, "ip": ELSEWHERE})
        f = await fields(redis_client, keys, first["session_id"])
        assert not set(DERIVED) & set(f), f
        row = await listed(client, first["access_token"])
        assert row["last_used_at"] == row["created_at"] == int(f["ca"])
        # The first token is tagged under the session's random key, not under anything it carries.
        token = RefreshToken.parse(first["refresh_token"])
        assert token is not None and token.authentic(f["K"]) and not token.authentic(f["h"])
        assert len(f["K"]) == 16

    async def test_a_rotation_from_the_login_device_adds_only_the_grace_fields(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        first = await login(client, device={"user_agent": AGENT, "ip": "127.0.0.1"})
        sid = first["session_id"]
        before = await fields(redis_client, keys, sid)
        status, second = await refresh_as(client, first["refresh_token"])
        assert status == 200, second
        f = await fields(redis_client, keys, sid)
        assert not {"la", "nw", "rw", "rc", "pe", "pn", "ri", "ru"} & set(f), f
        assert f["K"] == before["K"] and before["h"] == f["p"], "the tag key stays as the hash moves on"
        assert abs(int(f["pt"]) - time.time() * 1000) < 5000
        row = await listed(client, second["access_token"])
        assert row["last_used_at"] == int(f["pt"]) // 1000


class TestDerivedNetwork:
    async def test_an_ipv6_login_network_is_stored_then_dropped(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        first = await login(client, device={"user_agent": AGENT, "ip": "2001:db8:aa:bb::1"})
        sid = first["session_id"]
        assert (await fields(redis_client, keys, sid))["nw"] == b"2001:db8:aa::/48"
        status, second = await refresh_as(client, first["refresh_token"])
        assert status == 200, second
        assert [s["reasons"] for s in await signals(redis_client, keys, sid)] == [["network"]]
        assert "nw" not in await fields(redis_client, keys, sid)


class TestDerivedTimes:
    async def test_a_grace_use_stores_the_last_use_until_the_next_rotation(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        client = await make_client(refresh_grace=30)
        first = await login(client, device={"user_agent": AGENT, "ip": "127.0.0.1"})
        sid = first["session_id"]
        status, second = await refresh_as(client, first["refresh_token"])
        assert status == 200
        await asyncio.sleep(1.1)
        status, again = await refresh_as(client, first["refresh_token"])
        assert status == 200 and again["refresh_token"] == second["refresh_token"]
        f = await fields(redis_client, keys, sid)
        assert int(f["la"]) > int(f["pt"]) // 1000 and f["pn"] == b"1"
        assert (await listed(client, again["access_token"]))["last_used_at"] == int(f["la"])
        status, _ = await refresh_as(client, second["refresh_token"])
        assert status == 200
        assert not {"la", "pn"} & set(await fields(redis_client, keys, sid))

    async def test_a_burst_stores_its_window_only_past_the_first_refresh(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        client = await make_client(refresh_burst=3)
        first = await login(client, device={"user_agent": AGENT, "ip": "127.0.0.1"})
        sid = first["session_id"]
        status, body = await refresh_as(client, first["refresh_token"])
        assert status == 200
        assert "rc" not in await fields(redis_client, keys, sid)
        status, body = await refresh_as(client, body["refresh_token"])
        assert status == 200
        assert (await fields(redis_client, keys, sid))["rc"] == b"2"


class TestOlderLayout:
    async def test_a_session_written_before_still_rotates_and_sheds_its_fields(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        """Generation 1 as the older layout stored it: random tag key, 'pe', 'la', 'nw', 'rw'/'rc'
        (a burst window long closed, so the rotation opens one that 'pt' implies)."""
        client = await make_client(refresh_grace=30, refresh_grace_uses=1)
        first = await login(client, "olga", device={"user_agent": AGENT, "ip": "127.0.0.1"})
        sid = first["session_id"]
        p = keys.partition_of_id(sid)
        tag_key, s0, s1 = secrets.token_bytes(16), new_secret(), new_secret()
        now = int(time.time() * 1000)
        await redis_client.hdel(keys.session(p, sid), "K")  # the older layouts had none
        await redis_client.hset(
            keys.session(p, sid),
            mapping={
                "g": 1, "h": secret_hash(s1), "k": tag_key, "p": secret_hash(s0), "pe": now + 30_000,
                "pc": seal(s1, s0), "la": now // 1000, "nw": "127.0.0.0/24", "rw": now // 1000 - 3600, "rc": 1,
            },
        )  # fmt: skip
        t0 = RefreshToken.issue(sid, 0, tag_key, s0)
        t1 = RefreshToken.issue(sid, 1, tag_key, s1)
        status, body = await refresh_as(client, str(t0))
        assert status == 200 and body["refresh_token"] == str(t1), "grace from the stored deadline"
        status, body = await refresh_as(client, str(t1))
        assert status == 200, body
        f = await fields(redis_client, keys, sid)
        assert f["k"] == tag_key and f["g"] == b"2"
        assert not {"pe", "la", "nw", "rw", "rc", "pn"} & set(f), f
        status, _ = await refresh_as(client, str(t0))
        assert status == 400, "two generations old, recognised by the stored tag key: reuse"
        assert await redis_client.exists(keys.session(p, sid)) == 0
