"""SDK fixtures: listeners on the test Redis, the Redis deny set to compare caches with, a TCP proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.keys import KeyRing
from service.sdk.cache import DenyCache
from service.sdk.events import Kind, deny_until, parse_deny_key, seq_key
from service.sdk.jwks import VerificationKey, keys_from_jwks
from service.sdk.listener import RevocationListener
from service.sdk.verifier import Verifier
from tests.sdk.proxy import Proxy
from tests.support.redis_servers import RedisCluster as TestCluster

ListenerFactory = Callable[..., Coroutine[Any, Any, RevocationListener]]

# Fast timings so failures are noticed in tests within a second, not the production defaults.
FAST = {"ping_interval": 0.2, "ping_timeout": 0.6, "check_interval": 0.5, "socket_timeout": 1.0, "backoff_max": 0.5}


async def redis_deny_set(client: aioredis.Redis) -> dict[tuple[Kind, str], int]:
    """Every deny key in Redis as ``{(kind, id): value}``: the truth a cache must equal."""
    out: dict[tuple[Kind, str], int] = {}
    keys = [k async for k in client.scan_iter(match="tw:{*}:d[jsc]:*", count=5000)]
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        # On a cluster the chunk spans slots: mget_nonatomic splits it per slot.
        values = await (client.mget_nonatomic(chunk) if isinstance(client, RedisCluster) else client.mget(chunk))
        async with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.pttl(key)
            ttls = await pipe.execute()
        now_ms = int(time.time() * 1000)
        for key, value, ttl in zip(chunk, values, ttls, strict=True):
            parsed = parse_deny_key(key.decode())
            if parsed is not None and value is not None and ttl >= 0:
                _, kind, ident = parsed
                # The cache holds until for jti/sid and before for sub; the keys hold before
                # (sub) or 1, their until being their expiry.
                out[(kind, ident)] = int(value) if kind == "sub" else deny_until(now_ms, ttl)
    return out


async def wait_all_equal(
    listeners: Iterable[RevocationListener], client: aioredis.Redis, within: float = 30.0
) -> dict[tuple[Kind, str], int]:
    """Wait until every listener is current and its cache equals the Redis deny set."""
    listeners = list(listeners)
    truth = await redis_deny_set(client)
    deadline = time.monotonic() + within
    for listener in listeners:
        while True:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await listener.wait_current()
            if listener.cache.entries() == truth:
                break
            assert time.monotonic() < deadline, _diff(listener, truth)
            await asyncio.sleep(0.05)
    return truth


def _diff(listener: RevocationListener, truth: dict[tuple[Kind, str], int]) -> str:
    have = listener.cache.entries()
    missing = set(truth) - set(have)
    extra = set(have) - set(truth)
    return f"cache differs: {len(missing)} missing, {len(extra)} extra, last_seq={listener.last_seq}"


@pytest.fixture(name="make_listener")
async def _make_listener(redis_server: Any, partitions: int) -> AsyncIterator[ListenerFactory]:
    """Start listeners (own connections each, on the test topology) and close them all afterwards."""
    made: list[RevocationListener] = []

    async def factory(url: Any = None, *, wait: float | None = 10.0, **options: Any) -> RevocationListener:
        options = {"partitions": partitions, **FAST, **options}
        listener = RevocationListener(url or redis_server.url, DenyCache(), **options)
        made.append(listener)
        await listener.start(wait=wait)
        return listener

    yield factory
    await asyncio.gather(*(listener.aclose() for listener in made))


@pytest.fixture(name="node_clients")
async def _node_clients(redis_server: Any) -> AsyncIterator[list[aioredis.Redis]]:
    """A plain client per Redis process of the topology (one standalone, every node of a cluster)."""
    servers = redis_server.nodes if isinstance(redis_server, TestCluster) else [redis_server]
    clients = [aioredis.Redis(host="127.0.0.1", port=s.port) for s in servers]
    yield clients
    await asyncio.gather(*(c.aclose() for c in clients))


async def counters(client: Any, partitions: int) -> dict[int, int | None]:
    """Every partition's event counter (None: none yet), as ``RevocationListener.last_seq`` reports."""
    out: dict[int, int | None] = {}
    for p in range(partitions):
        raw = await client.get(seq_key(p))
        out[p] = int(raw) if raw is not None else None
    return out


@pytest.fixture(name="proxy")
async def _proxy(redis_server: Any) -> AsyncIterator[Proxy]:
    """A cuttable TCP proxy in front of the test Redis."""
    proxy = await Proxy(redis_server.port).start()
    yield proxy
    await proxy.aclose()


class RingKeys:
    """A KeySource over the service's key ring, parsed through the SDK's JWKS code."""

    def __init__(self, ring: KeyRing) -> None:
        import orjson

        self.keys = keys_from_jwks(orjson.loads(ring.jwks_bytes()))

    async def get_key(self, kid: str) -> VerificationKey | None:
        return self.keys.get(kid)


def verifier_for(ring: KeyRing, cache: DenyCache) -> Verifier:
    """An SDK verifier for the test app's tokens (issuer and audience of tests/conftest.py)."""
    return Verifier(RingKeys(ring), issuer="https://tokenward.test", audience="api.test", cache=cache)


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll until ``predicate()`` holds; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.001)
