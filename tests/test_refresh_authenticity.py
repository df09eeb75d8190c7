"""A refresh token is accepted only whole and authentic, whatever its generation, and what the
store forgot (a failover that discarded acknowledged rotations) neither signs users out nor
leaves a logout without effect.

Lost writes are reproduced exactly: the session hash is DUMPed before a rotation and RESTOREd
after it, which is what a replica promoted before the rotation reached it holds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from service.store import Keyspace
from service.tokens import RefreshToken
from tests.conftest import AppFactory, basic
from tests.factories import bearer, login, refresh

pytestmark = pytest.mark.topologies("standalone", "cluster")


def forged(token: str, tag: str = "0" * 16) -> str:
    """The same token with another tag: what a prefix leaked by an echo can be completed to."""
    parsed = RefreshToken.parse(token)
    assert parsed is not None
    return f"twr_{parsed.sid}.{parsed.gen}.{parsed.secret}.{tag}"


async def authz(client: TestClient[Any, Any], access: str) -> int:
    resp = await client.get("/v1/authz", headers=bearer(access))
    return resp.status


async def revoke(client: TestClient[Any, Any], token: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    resp = await client.post("/oauth/revoke", data={"token": token}, headers=headers or {})
    return resp.status, await resp.text()


class LostWrites:
    """Snapshot a session's hash and put it back: the store forgets what happened in between."""

    def __init__(self, redis_client: aioredis.Redis, keys: Keyspace, sid: str) -> None:
        self.redis = redis_client
        self.key = keys.session(keys.partition_of_id(sid), sid)
        self.dump: Any = None

    async def snapshot(self) -> None:
        self.dump = await self.redis.dump(self.key)
        assert self.dump is not None

    async def forget(self) -> None:
        ttl = await self.redis.pttl(self.key)
        await self.redis.restore(self.key, max(int(ttl), 60_000), self.dump, replace=True)


async def lost_rotation(
    client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace, sub: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Log in and rotate once, then lose that rotation: (the login's pair, the lost rotation's pair)."""
    pair = await login(client, sub)
    lost = LostWrites(redis_client, keys, pair["session_id"])
    await lost.snapshot()
    status, ahead = await refresh(client, pair["refresh_token"])
    assert status == 200
    await lost.forget()
    return pair, ahead


class TestWholeTokens:
    """Finding 1c: the tag is verified for every generation, the current one included."""

    @pytest.mark.parametrize("rotations", [0, 1, 3])
    async def test_a_token_with_a_made_up_tag_is_refused_and_touches_nothing(
        self, client: TestClient[Any, Any], rotations: int
    ) -> None:
        pair = await login(client, "whole")
        for _ in range(rotations):
            status, pair = await refresh(client, pair["refresh_token"])
            assert status == 200
        real = pair["refresh_token"]
        parsed = RefreshToken.parse(real)
        assert parsed is not None
        for tag in ("0" * 16, parsed.tag[:8] + "0" * 8, parsed.tag[:15] + ("0" if parsed.tag[15] != "0" else "1")):
            status, body = await refresh(client, forged(real, tag))
            assert (status, body["error"]) == (400, "invalid_grant"), tag
            status, _ = await revoke(client, forged(real, tag))
            assert status == 200  # RFC 7009: an invalid token is not an error ...
        # ... and nothing happened to the session: the real token still works, once.
        status, body = await refresh(client, real)
        assert status == 200, body
        assert await authz(client, body["access_token"]) == 200

    async def test_introspection_calls_only_whole_tokens_active(self, client: TestClient[Any, Any]) -> None:
        real = (await login(client, "intro"))["refresh_token"]
        answers = []
        for token in (real, forged(real)):
            resp = await client.post("/oauth/introspect", data={"token": token}, headers=basic("gateway"))
            answers.append((await resp.json())["active"])
        assert answers == [True, False]

    async def test_the_first_tokens_holder_cannot_vouch_for_a_later_generation(
        self, client: TestClient[Any, Any]
    ) -> None:
        """The tag key is random: nothing in any token computes it (the first secret's hash used to)."""
        pair = await login(client, "first")
        first = RefreshToken.parse(pair["refresh_token"])
        assert first is not None
        _, later = await refresh(client, pair["refresh_token"])
        for gen in (1, 2, 7):
            guess = RefreshToken.issue(first.sid, gen, first.hash, "A" * 32)
            status, _ = await refresh(client, str(guess))
            assert status == 400
        status, body = await refresh(client, later["refresh_token"])
        assert status == 200, body

    async def test_truncated_tokens_are_not_refresh_tokens(self, client: TestClient[Any, Any]) -> None:
        real = (await login(client, "trunc"))["refresh_token"]
        for cut in (1, 8, 15, 17):
            status, body = await refresh(client, real[:-cut])
            assert (status, body["error"]) == (400, "invalid_grant")


class TestRevocationOracle:
    """Finding 5: a client without scope ``revoke`` cannot learn which sessions are live, or whose."""

    async def test_forged_tokens_answer_alike_whatever_they_name(self, client: TestClient[Any, Any]) -> None:
        victim = await login(client, "victim")  # created through client "login"
        unknown = RefreshToken.issue("00" + "A" * 22, 0, b"k" * 16)
        answers = set()
        for token in (forged(victim["refresh_token"]), str(unknown)):
            answers.add(await revoke(client, token, basic("nobody")))
        assert answers == {(200, "")}
        # The victim's session is intact.
        assert await authz(client, victim["access_token"]) == 200
        status, _ = await refresh(client, victim["refresh_token"])
        assert status == 200

    async def test_an_authentic_token_of_another_client_is_still_refused(self, client: TestClient[Any, Any]) -> None:
        victim = await login(client, "victim2")
        status, body = await revoke(client, victim["refresh_token"], basic("nobody"))
        assert status == 400 and "unauthorized_client" in body
        assert await authz(client, victim["access_token"]) == 200


class TestLostRotations:
    """Issue 16: the store lost rotations it had acknowledged."""

    async def test_the_honest_client_goes_on_and_a_second_use_is_still_reuse(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        client = await make_client(refresh_grace=0)
        _pair, ahead = await lost_rotation(client, redis_client, keys, "honest")
        # The client holds a generation the store never saw: authentic, so it moves the session on.
        status, after = await refresh(client, ahead["refresh_token"])
        assert status == 200, after
        assert await authz(client, after["access_token"]) == 200
        metrics = await (await client.get("/metrics", headers=basic("admin"))).text()
        assert 'tokenward_refresh_total{outcome="recovered"} 1.0' in metrics
        # Its second use is a rotated token's replay: theft, the session ends.
        status, body = await refresh(client, ahead["refresh_token"])
        assert (status, body["error"]) == (400, "invalid_grant")
        assert await authz(client, after["access_token"]) == 401
        status, _ = await refresh(client, after["refresh_token"])
        assert status == 400

    async def test_a_thief_with_a_lost_generation_is_caught_at_the_next_use(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        client = await make_client(refresh_grace=0)
        _pair, stolen = await lost_rotation(client, redis_client, keys, "robbed")
        status, thief = await refresh(client, stolen["refresh_token"])  # the thief is first
        assert status == 200
        status, _ = await refresh(client, stolen["refresh_token"])  # the victim's turn: reuse
        assert status == 400
        assert await authz(client, thief["access_token"]) == 401
        status, _ = await refresh(client, thief["refresh_token"])
        assert status == 400

    async def test_a_logout_with_a_lost_generation_ends_the_session(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        pair, ahead = await lost_rotation(client, redis_client, keys, "leaving")
        assert await revoke(client, ahead["refresh_token"]) == (200, "")
        assert await authz(client, ahead["access_token"]) == 401
        assert await authz(client, pair["access_token"]) == 401
        status, _ = await refresh(client, pair["refresh_token"])
        assert status == 400, "the logout was not undone by the older token"

    async def test_a_logout_of_a_session_the_store_forgot_denies_its_access_tokens(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        pair = await login(client, "forgotten")
        _, later = await refresh(client, pair["refresh_token"])
        sid = pair["session_id"]
        await redis_client.delete(keys.session(keys.partition_of_id(sid), sid))  # lost whole
        assert await authz(client, later["access_token"]) == 200, "nothing denies it yet"
        assert await revoke(client, later["refresh_token"]) == (200, "")
        assert await authz(client, later["access_token"]) == 401
        assert await redis_client.pttl(keys.deny_sid(keys.partition_of_id(sid), sid)) > 0

    async def test_a_session_of_the_older_layout_rotates_but_never_trusts_a_lost_generation(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        """Sessions written before the random tag key tag under the first secret's hash, which its
        holder can compute: their tags are checked, but cannot vouch for a generation the store lacks."""
        client = await make_client(refresh_grace=0)
        pair = await login(client, "legacy")
        sid = pair["session_id"]
        key = keys.session(keys.partition_of_id(sid), sid)
        await redis_client.hdel(key, "K")
        first = RefreshToken.parse(pair["refresh_token"])
        assert first is not None
        legacy = RefreshToken.issue(sid, 0, first.hash, first.secret)  # tagged as they were
        lost = LostWrites(redis_client, keys, sid)
        await lost.snapshot()
        status, ahead = await refresh(client, str(legacy))
        assert status == 200, ahead
        await lost.forget()
        status, _ = await refresh(client, ahead["refresh_token"])
        assert status == 400
        status, body = await refresh(client, str(legacy))
        assert status == 200, body

    async def test_concurrent_use_of_a_lost_generation_moves_the_session_once(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        """Two tabs present the lost token together: one rotation, the other gets the same successor."""
        client = await make_client(refresh_grace=30, refresh_grace_uses=5)
        _pair, ahead = await lost_rotation(client, redis_client, keys, "tabs")
        answers = await asyncio.gather(*(refresh(client, ahead["refresh_token"]) for _ in range(4)))
        assert [status for status, _ in answers] == [200] * 4
        assert len({body["refresh_token"] for _, body in answers}) == 1
