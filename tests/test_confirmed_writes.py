"""WAIT confirms the write it follows, on a primary with a real replica.

WAIT counts the replicas holding every write of *its own connection*; on a connection that
only read it answers at once with every connected replica, confirming nothing. The service
sends each revoking script and its WAIT in one pipeline (``Store.run_confirmed``), so the
promise does not depend on which pooled connection is free. These tests stop the replica
(SIGSTOP: still connected, silent) and revoke while other requests read and release pooled
connections, and check no revocation is acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from service.config import Secret, Settings
from service.errors import StoreUnavailable
from service.revocation import Revocations
from service.store import Store, open_store
from tests.support.redis_servers import RedisCluster, RedisServer


@pytest.fixture(name="pair", scope="module")
def _pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer().start()
    replica = RedisServer("--replicaof", "127.0.0.1", str(primary.port)).start()
    deadline = time.monotonic() + 10
    while True:
        with primary.client() as c:
            # Acknowledging, not merely connected or "online": just after its first sync a
            # replica can leave a WAIT unanswered for up to its next second.
            c.set("tw:probe", 1)
            if int(c.execute_command("WAIT", 1, 200)) == 1:
                break
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    try:
        yield primary, replica
    finally:
        replica.close()
        primary.close()


@pytest.fixture(name="store")
async def _store(pair: tuple[RedisServer, RedisServer], settings: Settings) -> AsyncIterator[Store]:
    primary, _ = pair
    configured = dataclasses.replace(
        settings, redis_url=Secret(primary.url), partitions=1, wait_replicas=1, wait_timeout_ms=600
    )
    store = open_store(configured)
    yield store
    await store.aclose()


@pytest.fixture(name="revocations")
def _revocations(store: Store, settings: Settings) -> Revocations:
    return Revocations(store, dataclasses.replace(settings, partitions=1, wait_replicas=1))


async def busy_reads(store: Store, stop: asyncio.Event) -> None:
    """Other requests' reads, holding and releasing pooled connections meanwhile."""
    while not stop.is_set():
        await asyncio.gather(*(store.client.get(f"tw:{{0}}:r{i}") for i in range(8)))


async def test_a_revocation_is_acknowledged_only_once_the_replica_has_it(
    pair: tuple[RedisServer, RedisServer], store: Store, revocations: Revocations
) -> None:
    _, replica = pair
    exp = int(time.time()) + 300
    assert await revocations.revoke_jti("00" + "a" * 16, exp, "warm-up") > 0  # the replica confirms
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGSTOP)
    stop = asyncio.Event()
    readers = [asyncio.create_task(busy_reads(store, stop)) for _ in range(4)]
    try:

        async def attempt(i: int) -> str:
            try:
                await revocations.revoke_jti(f"00stopped{i:08d}", exp, "replica stopped")
            except StoreUnavailable:
                return "refused"
            return "acknowledged"

        outcomes = await asyncio.gather(*(attempt(i) for i in range(40)))
    finally:
        stop.set()
        await asyncio.gather(*readers)
        os.kill(replica.proc.pid, signal.SIGCONT)
    assert outcomes.count("acknowledged") == 0, "acknowledged while no replica could hold it"
    # Back: confirmed again.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert await revocations.revoke_jti("00" + "b" * 16, exp, "replica back") > 0
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)


async def test_a_primary_without_the_scripts_still_confirms(store: Store) -> None:
    """A restarted or newly promoted primary has no scripts loaded: the pipeline loads and retries."""
    deny = store.keys.deny_jti(0, "00" + "c" * 16)
    now = int(time.time() * 1000)
    args = [now, "jti", "00" + "c" * 16, 0, now + 60_000, "t", 60_000, "tw:events", 0]
    await store.client.script_flush()
    seq = await store.run_confirmed(
        store.scripts.revoke, keys=[deny, store.keys.seq(0), store.keys.stream(0)], args=args
    )
    assert int(seq) > 0
    assert await store.client.exists(deny) == 1


async def test_on_a_cluster_the_wait_goes_to_the_primary_that_took_the_write(
    cluster_redis: RedisCluster, settings: Settings
) -> None:
    """The test cluster has no replicas: the write lands on its slot's primary and the WAIT there
    answers 0, so the revocation is refused (503), neither misrouted nor acknowledged."""
    configured = dataclasses.replace(
        settings, redis_url=Secret(cluster_redis.url), partitions=3, wait_replicas=1, wait_timeout_ms=50
    )
    store = open_store(configured)
    try:
        revocations = Revocations(store, configured)
        for p in range(3):
            jti = f"{p:02x}" + "d" * 16
            with pytest.raises(StoreUnavailable, match="only 0 of 1"):
                await revocations.revoke_jti(jti, int(time.time()) + 60, "cluster")
            assert await store.client.exists(store.keys.deny_jti(p, jti)) == 1
    finally:
        await store.aclose()
