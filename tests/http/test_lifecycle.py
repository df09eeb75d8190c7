"""The session lifecycle over HTTP, on real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from service import state
from service.store import Keyspace
from tests.conftest import AppFactory, basic
from tests.factories import bearer, login, refresh

pytestmark = pytest.mark.topologies("standalone", "cluster")

INVALID_GRANT = {"error": "invalid_grant", "error_description": "the refresh token is invalid, expired or revoked"}


async def lifecycle(client: TestClient[Any, Any]) -> None:
    """Log in, refresh, list, log out: the walk-through of the README."""
    first = await login(client, "alice", device={"name": "laptop", "user_agent": "UA/1", "ip": "10.0.0.1"})
    assert first["token_type"] == "Bearer" and first["expires_in"] > 0 and first["refresh_expires_in"] > 0

    status, second = await refresh(client, first["refresh_token"])
    assert status == 200, second
    assert second["session_id"] == first["session_id"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]

    resp = await client.get("/v1/me/sessions", headers=bearer(second["access_token"]))
    assert resp.status == 200
    rows = (await resp.json())["sessions"]
    assert [(r["id"], r["device_name"], r["user_agent"], r["ip"], r["current"]) for r in rows] == [
        (first["session_id"], "laptop", "UA/1", "10.0.0.1", True)
    ]

    resp = await client.post("/oauth/revoke", data={"token": second["refresh_token"]})
    assert resp.status == 200

    status, body = await refresh(client, second["refresh_token"])
    assert (status, body) == (400, INVALID_GRANT)


class TestLifecycle:
    async def test_full_lifecycle_on_redis(self, client: TestClient[Any, Any]) -> None:
        """Create, refresh, list and log out against real Redis."""
        await lifecycle(client)

    async def test_full_lifecycle_on_embedded_store(self, make_client: AppFactory) -> None:
        """The same walk-through passes on the embedded in-process store."""
        await lifecycle(await make_client(redis_url=None, keys_dir=None, clients_file=None))

    async def test_token_response_is_rfc6749_shaped(self, client: TestClient[Any, Any]) -> None:
        """§5.1: no-store headers on every answer that carries tokens."""
        first = await login(client)
        resp = await client.post(
            "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        )
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Pragma"] == "no-cache"
        assert resp.content_type == "application/json"

    async def test_access_token_claims(self, client: TestClient[Any, Any]) -> None:
        """The access token carries the session id, scope and extra claims, typed at+jwt."""
        import jwt

        first = await login(client, "bob", scope="read write", claims={"tenant": "acme"})
        header = jwt.get_unverified_header(first["access_token"])
        claims = jwt.decode(first["access_token"], options={"verify_signature": False})
        assert header["typ"] == "at+jwt" and header["kid"] == "test-1" and header["alg"] == "RS256"
        assert claims["sub"] == "bob" and claims["sid"] == first["session_id"]
        assert claims["scope"] == "read write" and claims["tenant"] == "acme"
        assert claims["iss"] == "https://tokenward.test" and claims["aud"] == "api.test"
        assert claims["client_id"] == "login" and claims["exp"] - claims["iat"] == 300

    async def test_narrower_scope_keeps_refresh_scope(self, client: TestClient[Any, Any]) -> None:
        """A narrower scope may be asked for; the next refresh still has the original scope."""
        first = await login(client, scope="read write")
        status, narrow = await refresh(client, first["refresh_token"], scope="read")
        assert status == 200 and narrow["scope"] == "read"
        status, again = await refresh(client, narrow["refresh_token"])
        assert status == 200 and again["scope"] == "read write"
        status, body = await refresh(client, again["refresh_token"], scope="admin")
        assert status == 400 and body["error"] == "invalid_scope"

    async def test_reserved_claims_rejected(self, client: TestClient[Any, Any]) -> None:
        resp = await client.post("/v1/sessions", json={"sub": "a", "claims": {"sid": "x"}}, headers=basic("login"))
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_request"

    async def test_remember_me_uses_longer_profile(self, make_client: AppFactory) -> None:
        client = await make_client(
            refresh_idle_ttl=60, refresh_max_ttl=120, remember_idle_ttl=600, remember_max_ttl=1200
        )
        short = await login(client, "a")
        long = await login(client, "a", remember_me=True)
        assert short["refresh_expires_in"] == 60
        assert long["refresh_expires_in"] == 600


class TestRotation:
    async def test_each_refresh_token_works_once_outside_grace(self, make_client: AppFactory) -> None:
        """With grace off, replaying a rotated token revokes its session; the user's other session lives."""
        client = await make_client(refresh_grace=0)
        stolen = await login(client, "carol")
        other = await login(client, "carol")
        status, rotated = await refresh(client, stolen["refresh_token"])
        assert status == 200

        status, body = await refresh(client, stolen["refresh_token"])
        assert (status, body) == (400, INVALID_GRANT)
        status, body = await refresh(client, rotated["refresh_token"])
        assert (status, body) == (400, INVALID_GRANT), "the whole family is revoked"

        status, body = await refresh(client, other["refresh_token"])
        assert status == 200, "the user's other device keeps working"

    async def test_replay_after_grace_window_revokes_family(self, make_client: AppFactory) -> None:
        client = await make_client(refresh_grace=1)
        victim = await login(client, "dave")
        other = await login(client, "dave")
        _, rotated = await refresh(client, victim["refresh_token"])
        status, again = await refresh(client, victim["refresh_token"])
        assert status == 200 and again["refresh_token"] == rotated["refresh_token"], "inside grace: same successor"
        await asyncio.sleep(1.1)
        status, body = await refresh(client, victim["refresh_token"])
        assert (status, body) == (400, INVALID_GRANT)
        status, _ = await refresh(client, rotated["refresh_token"])
        assert status == 400
        assert (await refresh(client, other["refresh_token"]))[0] == 200

    async def test_old_generation_replay_is_detected(self, make_client: AppFactory) -> None:
        """A token two or more rotations old is recognised by its tag and ends the session."""
        client = await make_client(refresh_grace=0)
        t0 = await login(client, "erin")
        _, t1 = await refresh(client, t0["refresh_token"])
        _, t2 = await refresh(client, t1["refresh_token"])
        status, _ = await refresh(client, t0["refresh_token"])
        assert status == 400
        assert (await refresh(client, t2["refresh_token"]))[0] == 400

    async def test_forged_tokens_touch_nothing(self, make_client: AppFactory, redis_client: aioredis.Redis) -> None:
        """A real sid with a wrong secret or tag, any generation, leaves the session working."""
        client = await make_client(refresh_grace=0)
        t0 = await login(client, "frank")
        _, t1 = await refresh(client, t0["refresh_token"])
        _, t2 = await refresh(client, t1["refresh_token"])
        sid = t0["session_id"]
        secret = "A" * 32
        for forged in (
            f"twr_{sid}.0.{secret}.0123456789abcdef",
            f"twr_{sid}.1.{secret}.0123456789abcdef",
            f"twr_{sid}.2.{secret}.0123456789abcdef",
            f"twr_{sid}.9.{secret}.0123456789abcdef",
            t0["refresh_token"][:-16] + "0123456789abcdef",
        ):
            status, body = await refresh(client, forged)
            assert (status, body) == (400, INVALID_GRANT), forged
        assert (await refresh(client, t2["refresh_token"]))[0] == 200

    async def test_error_body_identical_for_every_reason(self, make_client: AppFactory) -> None:
        """Unknown, garbled, revoked and reused tokens are indistinguishable."""
        client = await make_client(refresh_grace=0)
        a = await login(client)
        await refresh(client, a["refresh_token"])
        reused = await refresh(client, a["refresh_token"])
        b = await login(client)
        await client.post("/oauth/revoke", data={"token": b["refresh_token"]})
        revoked = await refresh(client, b["refresh_token"])
        unknown = await refresh(client, "twr_00AAAAAAAAAAAAAAAAAAAAAA.0." + "B" * 32 + ".0123456789abcdef")
        garbled = await refresh(client, "not-a-token")
        assert reused == revoked == unknown == garbled == (400, INVALID_GRANT)


class TestConcurrency:
    async def test_fifty_concurrent_refreshes_share_one_successor(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis
    ) -> None:
        """The honest race: no 5xx, no family revoked, at most one live successor."""
        first = await login(client, "gina")
        results = await asyncio.gather(*(refresh(client, first["refresh_token"]) for _ in range(50)))
        statuses = [s for s, _ in results]
        assert all(s in (200, 400) for s in statuses), statuses
        successors = {b["refresh_token"] for s, b in results if s == 200}
        assert len(successors) == 1
        assert statuses.count(200) >= 1
        assert len([k async for k in redis_client.scan_iter("tw:*:s:*")]) == 1
        assert [k async for k in redis_client.scan_iter("tw:*:ds:*")] == [], "no family was revoked"
        status, _ = await refresh(client, successors.pop())
        assert status == 200, "the successor works"

    @pytest.mark.parametrize("how", ["revoke_refresh_token", "admin_delete"])
    async def test_logout_racing_fifty_refreshes(self, client: TestClient[Any, Any], how: str) -> None:
        """Logout while 50 refreshes of the session are in flight, many rounds: once logout
        has returned, every refresh token the session ever had, including successors minted
        by the racing refreshes, is dead, and no refresh started afterwards succeeds."""
        for round_ in range(15):
            s = await login(client, f"henry{round_}")
            seen = {s["refresh_token"]}

            async def one(token: str = s["refresh_token"], seen: set[str] = seen) -> None:
                status, body = await refresh(client, token)
                assert status in (200, 400), body
                if status == 200:
                    seen.add(body["refresh_token"])

            racers = [asyncio.create_task(one()) for _ in range(50)]
            await asyncio.sleep(0.001 * (round_ % 6))
            if how == "admin_delete":
                resp = await client.delete(f"/v1/sessions/{s['session_id']}", headers=basic("admin"))
                assert resp.status == 204
            else:
                resp = await client.post("/oauth/revoke", data={"token": s["refresh_token"]})
                assert resp.status == 200
            after = [await refresh(client, token) for token in list(seen)]
            assert all(status == 400 for status, _ in after), "a refresh succeeded after logout returned"
            await asyncio.gather(*racers)
            for token in seen:
                assert (await refresh(client, token))[0] == 400, "the session came back"

    async def test_login_racing_logout_everywhere(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        """A login racing log-out-everywhere is either ended by it or alive after it, never half."""
        for round_ in range(10):
            sub = f"jack{round_}"
            await login(client, sub)
            logins = [asyncio.create_task(login(client, sub)) for _ in range(10)]
            resp = await client.delete(f"/v1/users/{sub}/sessions", headers=basic("admin"))
            assert resp.status == 200
            created = await asyncio.gather(*logins)
            for s in created:
                p = keys.partition_of_sub(sub)
                alive = await redis_client.exists(keys.session(p, s["session_id"]))
                indexed = await redis_client.zscore(keys.user_index(p, sub), s["session_id"])
                status, _ = await refresh(client, s["refresh_token"])
                assert bool(alive) == (indexed is not None) == (status == 200)


class TestExpiry:
    async def test_idle_expiry(self, make_client: AppFactory) -> None:
        client = await make_client(refresh_idle_ttl=1, refresh_max_ttl=60)
        s = await login(client)
        await asyncio.sleep(1.2)
        assert (await refresh(client, s["refresh_token"]))[0] == 400

    async def test_refresh_slides_idle_but_not_absolute(self, make_client: AppFactory) -> None:
        client = await make_client(refresh_idle_ttl=1, refresh_max_ttl=2, refresh_grace=0)
        s = await login(client)
        token = s["refresh_token"]
        for _ in range(3):
            await asyncio.sleep(0.5)
            status, body = await refresh(client, token)
            assert status == 200, "each refresh moves the idle expiry"
            token = body["refresh_token"]
        await asyncio.sleep(0.6)
        assert (await refresh(client, token))[0] == 400, "the absolute cap is never extended"

    async def test_no_key_without_ttl(self, make_client: AppFactory, redis_client: aioredis.Redis) -> None:
        """After a mixed workload every key in Redis carries a TTL no longer than what it stands for,
        except the boot markers, exactly one per partition (a few bytes each; see service/store.py)."""
        client = await make_client(refresh_grace=0)
        sessions = [await login(client, f"u{i % 3}", remember_me=i % 2 == 0) for i in range(9)]
        await refresh(client, sessions[0]["refresh_token"])
        await refresh(client, sessions[0]["refresh_token"])  # reuse: family revoked
        await client.post("/oauth/revoke", data={"token": sessions[1]["refresh_token"]})
        await client.delete("/v1/me/sessions", headers=bearer(sessions[2]["access_token"]))
        await client.delete("/v1/me/sessions?keep_current=true", headers=bearer(sessions[4]["access_token"]))
        await client.delete(f"/v1/sessions/{sessions[5]['session_id']}", headers=basic("admin"))
        keys = [k async for k in redis_client.scan_iter("*")]
        markers = {k for k in keys if k.endswith(b":boot")}
        assert markers == {Keyspace.boot(p).encode() for p in range(client.app[state.SETTINGS].partitions)}
        for key in markers:
            assert await redis_client.pttl(key) == -1
        assert set(keys) - markers
        for key in set(keys) - markers:
            ttl = await redis_client.pttl(key)
            assert ttl > 0, f"{key!r} has no TTL"
            assert ttl <= 90 * 24 * 3600 * 1000


class TestSessionsApi:
    async def test_logout_other_devices_keeps_current(self, client: TestClient[Any, Any]) -> None:
        mine = await login(client, "kim")
        others = [await login(client, "kim") for _ in range(2)]
        resp = await client.delete("/v1/me/sessions?keep_current=true", headers=bearer(mine["access_token"]))
        assert resp.status == 200 and (await resp.json()) == {"ended": 2}
        assert (await refresh(client, mine["refresh_token"]))[0] == 200
        for s in others:
            assert (await refresh(client, s["refresh_token"]))[0] == 400

    async def test_logout_everywhere_and_own_session_delete(self, client: TestClient[Any, Any]) -> None:
        a = await login(client, "lee")
        b = await login(client, "lee")
        stranger = await login(client, "mallory")
        resp = await client.delete(f"/v1/me/sessions/{b['session_id']}", headers=bearer(stranger["access_token"]))
        assert resp.status == 404, "nobody ends somebody else's session"
        resp = await client.delete(f"/v1/me/sessions/{b['session_id']}", headers=bearer(a["access_token"]))
        assert resp.status == 204
        assert (await refresh(client, b["refresh_token"]))[0] == 400
        resp = await client.delete("/v1/me/sessions", headers=bearer(a["access_token"]))
        assert resp.status == 200
        assert (await refresh(client, a["refresh_token"]))[0] == 400
        assert (await refresh(client, stranger["refresh_token"]))[0] == 200

    async def test_admin_lists_and_ends_user_sessions(self, client: TestClient[Any, Any]) -> None:
        s1 = await login(client, "nina", device={"name": "phone"})
        await login(client, "nina", device={"name": "tablet"})
        resp = await client.get("/v1/users/nina/sessions", headers=basic("admin"))
        assert resp.status == 200
        assert sorted(r["device_name"] for r in (await resp.json())["sessions"]) == ["phone", "tablet"]
        assert (await client.get("/v1/users/nina/sessions", headers=basic("login"))).status == 403
        resp = await client.delete("/v1/users/nina/sessions", headers=basic("admin"))
        assert (await resp.json()) == {"ended": 2}
        assert (await refresh(client, s1["refresh_token"]))[0] == 400
        resp = await client.get("/v1/users/nina/sessions", headers=basic("admin"))
        assert (await resp.json())["sessions"] == []

    async def test_access_token_after_logout_is_refused_for_own_sessions(self, client: TestClient[Any, Any]) -> None:
        """Logout denies the session's access tokens, not only its refresh token."""
        s = await login(client, "olga")
        await client.post("/oauth/revoke", data={"token": s["refresh_token"]})
        resp = await client.get("/v1/me/sessions", headers=bearer(s["access_token"]))
        assert resp.status == 401
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/.well-known/jwks.json"])
async def test_public_endpoints(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200


async def test_readyz_names_store(client: TestClient[Any, Any], topology: str) -> None:
    expected = {"standalone": "redis", "cluster": "cluster"}[topology]
    assert (await (await client.get("/readyz")).json())["store"] == expected


async def test_jwks_has_no_private_parts(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/.well-known/jwks.json")
    assert "max-age" in resp.headers["Cache-Control"]
    keys = (await resp.json())["keys"]
    assert [k["kid"] for k in keys] == ["test-1"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & keys[0].keys()
