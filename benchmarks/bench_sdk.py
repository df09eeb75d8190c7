"""SDK costs: verify + deny check vs bare PyJWT, DenyCache bytes per entry, propagation with 1/20/100 subscribers.

Run: ``.venv/bin/python -m benchmarks.bench_sdk``. Starts its own redis-server (never 6379).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc
from collections.abc import Callable

import jwt
import redis.asyncio as aioredis

from service.sdk.cache import DenyCache
from service.sdk.events import Event
from service.sdk.jwks import VerificationKey
from service.sdk.listener import RevocationListener
from service.sdk.testing import TokenFactory
from service.sdk.verifier import Verifier
from service.store import load_script_source
from tests.support.redis_servers import RedisServer


def median_rounds(fn: Callable[[], object], n: int, rounds: int = 7) -> float:
    """Median over rounds of the mean seconds per call."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - started) / n)
    return statistics.median(samples)


class CachedKey:
    """A KeySource holding one key, as JWKSClient does between refreshes."""

    def __init__(self, key: VerificationKey) -> None:
        self.key = key

    async def get_key(self, kid: str) -> VerificationKey | None:
        return self.key if kid == self.key.kid else None


async def verify_cost() -> None:
    factory = TokenFactory()
    cache = DenyCache()
    for i in range(10_000):
        cache.deny_jti(f"00j{i}", 2_000_000_000)
    key = await factory.key_source().get_key(factory.signing_kid)
    assert key is not None
    verifier = Verifier(CachedKey(key), issuer=factory.issuer, audience=factory.audience, cache=cache)
    token = factory.token()
    header = verifier.header(token)

    def sdk() -> None:
        claims = verifier.verify_with(token, verifier.header(token), key)
        cache.is_denied(claims.jti, claims.sid, claims.sub, claims.iat)

    def bare() -> None:
        jwt.decode(token, key.key, algorithms=["RS256"], audience=factory.audience, issuer=factory.issuer)

    assert header
    n = 2000
    t_bare = median_rounds(bare, n)
    t_sdk = median_rounds(sdk, n)
    # The full async path (key lookup through the KeySource) on one loop, for completeness.
    started = time.perf_counter()
    for _ in range(n):
        await verifier.verify(token)
    t_async = (time.perf_counter() - started) / n
    t_deny = median_rounds(lambda: cache.is_denied("00x", "00y", "bob", 1), 200_000)
    print(
        f"verify RS256: bare jwt.decode {t_bare * 1e6:.1f} us, SDK rules + deny check {t_sdk * 1e6:.1f} us "
        f"(x{t_sdk / t_bare:.2f}), SDK async verify() {t_async * 1e6:.1f} us; deny check alone {t_deny * 1e9:.0f} ns"
    )


def cache_memory() -> None:
    n = 200_000

    # Ids are built inside the traced region: a real cache owns the strings it parsed.
    def fill_jti(cache: DenyCache) -> None:
        for i in range(n):
            cache.deny_jti(f"00{i:022d}", 2_000_000_000)  # a jti's shape: 2 hex digits + 22 chars

    def fill_sub(cache: DenyCache) -> None:
        for i in range(n):
            cache.cut_off(f"user-{i}@example.com", 1_700_000_000, 2_000_000_000)

    for label, fill in (("jti", fill_jti), ("sub", fill_sub)):
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        cache = DenyCache()
        fill(cache)
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        print(f"DenyCache {label} entries: {used / n:.0f} bytes per entry over {n:,} (id strings included)")


async def propagation(url: str, subscribers: int, events: int = 50) -> None:
    arrivals: dict[str, list[float]] = {}
    complete = asyncio.Event()

    def record(event: Event) -> None:
        seen = arrivals.setdefault(event.id, [])
        seen.append(time.perf_counter())
        if len(seen) == subscribers:
            complete.set()

    listeners = [RevocationListener(url, DenyCache(), on_apply=record) for _ in range(subscribers)]
    await asyncio.gather(*(x.start() for x in listeners))
    client = aioredis.Redis.from_url(url)
    revoke = client.register_script(load_script_source("revoke"))
    delays: list[float] = []
    try:
        for i in range(events):
            jti = f"00bench{subscribers}x{i}"
            now = int(time.time() * 1000)
            complete.clear()
            await revoke(
                keys=["tw:{0}:dj:" + jti, "tw:{0}:seq", "tw:{0}:ev"],
                args=[now, "jti", jti, 0, now + 300_000, "bench", 900_000, "tw:events", 0],
            )
            # From the revoke call returning (issue 6): on one loop a subscriber may apply the
            # event before the caller's reply is read, which counts as no delay at all.
            returned = time.perf_counter()
            await asyncio.wait_for(complete.wait(), 10)
            delays += [max(0.0, t - returned) for t in arrivals[jti]]
    finally:
        await asyncio.gather(*(x.aclose() for x in listeners))
        await client.aclose()
    ordered = sorted(delays)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"propagation, {subscribers:>3} subscribers x {events} events: p50={statistics.median(ordered) * 1e3:.2f} ms "
        f"p99={p99 * 1e3:.2f} ms max={ordered[-1] * 1e3:.2f} ms (all in one process on one loop)"
    )


async def main() -> None:
    await verify_cost()
    cache_memory()
    server = RedisServer().start()
    try:
        for n in (1, 20, 100):
            await propagation(server.url, n)
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
