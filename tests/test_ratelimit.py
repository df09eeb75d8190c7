"""The rate limiter on real Redis, standalone and cluster: GCRA arithmetic, atomicity, replicas."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from service.config import Rate, Settings
from service.errors import RateLimited
from service.ratelimit import ADDRESS, CLIENT, FAMILY, Hit, RateLimiter, address_ident, interval_ms
from service.store import Keyspace, Store, connect

pytestmark = pytest.mark.topologies("standalone", "cluster")


@pytest.fixture(name="store")
async def _store(settings: Settings, redis_client: aioredis.Redis) -> AsyncIterator[Store]:
    store = await connect(settings)
    yield store
    await store.aclose()


async def allowed(limiter: RateLimiter, hits: list[Hit]) -> bool:
    try:
        await limiter.charge(hits)
    except RateLimited:
        return False
    return True


def same_partition(keys: Keyspace, kind: str, n: int) -> list[str]:
    """Identities whose keys share one partition (so one script call)."""
    by_p: dict[int, list[str]] = {}
    for i in range(10_000):
        ident = f"id-{i}"
        group = by_p.setdefault(keys.partition_of_limit(kind, ident), [])
        group.append(ident)
        if len(group) == n:
            return group
    raise AssertionError("no partition filled")


def spread(keys: Keyspace, kind: str, n: int) -> list[str]:
    """Identities in as many different partitions as there are (up to n)."""
    seen: dict[int, str] = {}
    for i in range(10_000):
        seen.setdefault(keys.partition_of_limit(kind, f"id-{i}"), f"id-{i}")
        if len(seen) == min(n, keys.partitions):
            break
    return list(seen.values())


async def test_burst_then_refusal_with_retry_after(store: Store) -> None:
    limiter = RateLimiter(store)
    hit = [Hit(ADDRESS, "192.0.2.1", Rate(0.5, 3))]
    assert [await allowed(limiter, hit) for _ in range(3)] == [True, True, True]
    with pytest.raises(RateLimited) as refused:
        await limiter.charge(hit)
    assert refused.value.retry_after == 2  # one request every two seconds


async def test_bucket_refills_at_the_rate(store: Store) -> None:
    limiter = RateLimiter(store)
    hit = [Hit(ADDRESS, "192.0.2.2", Rate(20, 1))]
    assert await allowed(limiter, hit)
    assert not await allowed(RateLimiter(store), hit)
    await asyncio.sleep(0.08)  # one interval is 50 ms
    assert await allowed(RateLimiter(store), hit), "a fresh limiter: nothing remembered locally"


async def test_key_expires_when_the_bucket_is_full_again(store: Store, redis_client: Any) -> None:
    limiter = RateLimiter(store)
    rate = Rate(10, 5)
    await limiter.charge([Hit(CLIENT, "login", rate)])
    await limiter.charge([Hit(CLIENT, "login", rate)])
    p = store.keys.partition_of_limit(CLIENT, "login")
    ttl = await redis_client.pttl(store.keys.ratelimit(p, CLIENT, "login"))
    assert 0 < ttl <= 2 * interval_ms(rate)


async def test_all_or_nothing_within_a_partition(store: Store, redis_client: Any) -> None:
    limiter = RateLimiter(store)
    full, fresh = same_partition(store.keys, FAMILY, 2)
    slow = Rate(0.01, 1)
    await limiter.charge([Hit(FAMILY, full, slow)])
    assert not await allowed(RateLimiter(store), [Hit(FAMILY, fresh, slow), Hit(FAMILY, full, slow)])
    p = store.keys.partition_of_limit(FAMILY, fresh)
    assert await redis_client.get(store.keys.ratelimit(p, FAMILY, fresh)) is None, "a refused request charged nothing"
    assert await allowed(limiter, [Hit(FAMILY, fresh, slow)])


async def test_keys_in_several_partitions_in_one_charge(store: Store, redis_client: Any) -> None:
    """On the cluster the keys land on different primaries: one script per partition, no CROSSSLOT."""
    limiter = RateLimiter(store)
    idents = spread(store.keys, FAMILY, 6)
    assert len(idents) == min(6, store.keys.partitions)
    hits = [Hit(FAMILY, i, Rate(1, 2)) for i in idents]
    assert await allowed(limiter, hits)
    assert await allowed(limiter, hits)
    assert not await allowed(limiter, hits)
    for ident in idents:
        p = store.keys.partition_of_limit(FAMILY, ident)
        assert await redis_client.get(store.keys.ratelimit(p, FAMILY, ident)) is not None


async def test_cost_zero_checks_without_charging(store: Store, redis_client: Any) -> None:
    limiter = RateLimiter(store)
    check = Hit(ADDRESS, "192.0.2.3", Rate(0.01, 2), cost=0)
    charge = Hit(ADDRESS, "192.0.2.3", Rate(0.01, 2))
    for _ in range(5):
        await limiter.charge([check])
    p = store.keys.partition_of_limit(ADDRESS, "192.0.2.3")
    assert await redis_client.get(store.keys.ratelimit(p, ADDRESS, "192.0.2.3")) is None
    await limiter.charge([charge])
    await limiter.charge([check])  # one more would still pass
    await limiter.charge([charge])
    assert not await allowed(limiter, [check]), "no room left: the check refuses"


async def test_replicas_racing_let_exactly_the_burst_through(settings: Settings, redis_client: Any) -> None:
    """Four replicas (own connections) fire 200 charges at one key at once."""
    stores = [await connect(settings) for _ in range(4)]
    try:
        limiters = [RateLimiter(s) for s in stores]
        hit = [Hit(CLIENT, "racer", Rate(0.01, 25))]
        results = await asyncio.gather(*(allowed(limiters[i % 4], hit) for i in range(200)))
        assert results.count(True) == 25
    finally:
        for s in stores:
            await s.aclose()


async def test_a_known_refusal_is_answered_from_memory(store: Store, redis_client: Any) -> None:
    now = [1000.0]
    limiter = RateLimiter(store, clock=lambda: now[0])
    hit = [Hit(ADDRESS, "192.0.2.4", Rate(0.5, 1))]
    await limiter.charge(hit)
    with pytest.raises(RateLimited):
        await limiter.charge(hit)
    await redis_client.flushall()
    with pytest.raises(RateLimited) as refused:
        await limiter.charge(hit)  # Redis forgot, this process did not: no round trip made
    assert refused.value.retry_after == 2
    assert limiter.known_wait(hit) == 2
    now[0] += 2.1
    assert limiter.known_wait(hit) == 0
    await limiter.charge(hit)


async def test_switched_off_limits_touch_nothing(store: Store, redis_client: Any) -> None:
    limiter = RateLimiter(store)
    for _ in range(10):
        await limiter.charge([Hit(ADDRESS, "192.0.2.5", Rate(0, 1))])
    assert await redis_client.dbsize() == 0


def test_identities_and_intervals() -> None:
    assert address_ident(ipaddress.ip_address("192.0.2.7")) == "192.0.2.7"
    assert address_ident(ipaddress.ip_address("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert interval_ms(Rate(1000, 1)) == 1 and interval_ms(Rate(0.2, 1)) == 5000 and interval_ms(Rate(3, 1)) == 333
