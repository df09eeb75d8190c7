"""The SDK honours the boot marker: after Redis is wiped, tokens issued before it are refused."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp.test_utils import TestClient

from service.config import Secret
from service.keys import KeyRing
from service.sdk.events import boot_key, partition_of_sub
from service.sdk.listener import RevocationListener
from service.sdk.verifier import RevokedToken, Verifier
from tests.conftest import AppFactory
from tests.factories import login
from tests.sdk.conftest import ListenerFactory, eventually, verifier_for
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.topologies("standalone", "cluster")

# From the wipe to the SDK refusing: one check_interval (0.5 s in the tests' FAST timings)
# plus a reload; generous for a loaded 2-core machine.
PROMPT = 5.0


async def revoked_and_live_tokens(client: TestClient[Any, Any], verifier: Verifier) -> tuple[str, str]:
    """A revoked access token (its session ended) the SDK refuses, and a live one it accepts."""
    revoked = await login(client, "alice")
    live = await login(client, "bob")
    resp = await client.post("/oauth/revoke", data={"token": revoked["refresh_token"]})
    assert resp.status == 200

    async def refused() -> None:
        while True:
            try:
                await verifier.verify(revoked["access_token"])
            except RevokedToken:
                return
            await asyncio.sleep(0.01)

    async with asyncio.timeout(PROMPT):
        await refused()
    assert (await verifier.verify(live["access_token"])).sub == "bob"
    return revoked["access_token"], live["access_token"]


async def boot_in_redis(client: Any, p: int) -> int | None:
    raw = await client.get(boot_key(p))
    return int(raw) if raw is not None else None


async def refused_within(verifier: Verifier, token: str, within: float) -> float:
    """Seconds until the verifier refuses ``token``; fails after ``within``."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            try:
                await verifier.verify(token)
            except RevokedToken:
                return time.monotonic() - started
            await asyncio.sleep(0.01)


class TestFlushall:
    async def test_wiped_store_refuses_old_tokens_and_accepts_new(
        self,
        make_client: AppFactory,
        make_listener: ListenerFactory,
        node_clients: list[aioredis.Redis],
        redis_client: aioredis.Redis,
        keyring: KeyRing,
        partitions: int,
    ) -> None:
        """FLUSHALL on every node: the SDK reloads an empty deny set, yet refuses every older token."""
        client = await make_client()
        listener = await make_listener()
        verifier = verifier_for(keyring, listener.cache)
        revoked, live = await revoked_and_live_tokens(client, verifier)
        pa, pb = partition_of_sub("alice", partitions), partition_of_sub("bob", partitions)
        before = {p: listener.cache.boot(p) for p in (pa, pb)}
        assert before[pa] is not None and before[pa] == await boot_in_redis(redis_client, pa)
        # A marker is a whole second: the wipe must come in a later second than the tokens' iat.
        await asyncio.sleep(1.1)
        reloads = listener.reloads
        wiped_at = time.monotonic()
        for node in node_clients:
            await node.flushall()
        await eventually(lambda: listener.cache.boot(pa) != before[pa] and listener.reloads > reloads, within=PROMPT)
        noticed = time.monotonic() - wiped_at
        # The reload emptied the cache (Redis holds no deny entry now): the marker alone refuses.
        await eventually(lambda: len(listener.cache) == 0, within=PROMPT)
        with pytest.raises(RevokedToken):
            await verifier.verify(revoked)
        with pytest.raises(RevokedToken):
            await verifier.verify(live)  # as the service: every token issued before the wipe
        # Nobody called the service: the SDK set the marker, as the service would, and both agree.
        assert await boot_in_redis(redis_client, pa) == listener.cache.boot(pa)
        fresh = await login(client, "alice")
        assert (await verifier.verify(fresh["access_token"])).sub == "alice"
        assert await boot_in_redis(redis_client, pa) == listener.cache.boot(pa)
        assert noticed < PROMPT, f"noticed after {noticed:.2f}s"

    async def test_second_wipe_is_picked_up(
        self,
        make_client: AppFactory,
        make_listener: ListenerFactory,
        node_clients: list[aioredis.Redis],
        redis_client: aioredis.Redis,
        keyring: KeyRing,
        partitions: int,
    ) -> None:
        """A marker that changes again (a second wipe, this time re-set by the service) is followed."""
        client = await make_client()
        listener = await make_listener()
        verifier = verifier_for(keyring, listener.cache)
        p = partition_of_sub("carol", partitions)
        for _ in range(2):
            token = (await login(client, "carol"))["access_token"]
            assert (await verifier.verify(token)).sub == "carol"
            old = listener.cache.boot(p)
            await asyncio.sleep(1.1)
            for node in node_clients:
                await node.flushall()
            # The service sets the new marker first (a login after the wipe).
            after = (await login(client, "carol"))["access_token"]
            marker = await boot_in_redis(redis_client, p)
            assert marker is not None and old is not None and marker > old
            waited = await refused_within(verifier, token, PROMPT)
            assert listener.cache.boot(p) == marker, waited
            assert (await verifier.verify(after)).sub == "carol"


class TestMissingMarkerCannotBeSet:
    async def test_read_only_user_refuses_until_the_marker_appears(
        self,
        make_client: AppFactory,
        make_listener: ListenerFactory,
        node_clients: list[aioredis.Redis],
        redis_client: aioredis.Redis,
        keyring: KeyRing,
        partitions: int,
    ) -> None:
        """An SDK user without write permission cannot set the marker: it refuses the partition's tokens."""
        client = await make_client()
        for node in node_clients:
            await node.acl_setuser(
                "reader",
                enabled=True,
                passwords=["+pw"],
                keys=["*"],
                channels=["*"],
                commands=["+@read", "+@connection", "+@pubsub", "+@transaction", "+cluster", "+scan", "+info", "+ping"],
            )
        try:
            listener = await make_listener(redis_options={"username": "reader", "password": "pw"})
            verifier = verifier_for(keyring, listener.cache)
            token = (await login(client, "dave"))["access_token"]
            assert (await verifier.verify(token)).sub == "dave"
            p = partition_of_sub("dave", partitions)
            for node in node_clients:
                await node.flushall()
            await refused_within(verifier, token, PROMPT)
            assert await boot_in_redis(redis_client, p) is None  # the SDK could not set it
            fresh = (await login(client, "dave"))["access_token"]  # the service sets it again
            async with asyncio.timeout(PROMPT):
                while True:
                    with contextlib.suppress(RevokedToken):
                        assert (await verifier.verify(fresh)).sub == "dave"
                        break
                    await asyncio.sleep(0.01)
        finally:
            for node in node_clients:
                with contextlib.suppress(redis.exceptions.RedisError):
                    await node.acl_deluser("reader")


@pytest.fixture(name="volatile_server")
def _volatile_server() -> Any:
    """A Redis of its own without persistence, to be restarted empty."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.mark.topologies("standalone")  # a Redis of its own
class TestRestartWithoutPersistence:
    async def test_restart_empty_refuses_revoked_token(
        self, make_client: AppFactory, make_listener: ListenerFactory, keyring: KeyRing, volatile_server: RedisServer
    ) -> None:
        """A real restart with nothing on disk: the revoked token is refused after the listener reconnects."""
        client = await make_client(redis_url=Secret(volatile_server.url))
        listener: RevocationListener = await make_listener(volatile_server.url)
        verifier = verifier_for(keyring, listener.cache)
        revoked, _ = await revoked_and_live_tokens(client, verifier)
        old = listener.cache.boot(0)
        await asyncio.sleep(1.1)
        volatile_server.stop()
        volatile_server.wipe()
        volatile_server.start()
        restarted_at = time.monotonic()
        await eventually(lambda: listener.cache.boot(0) not in (None, old), within=PROMPT)
        noticed = time.monotonic() - restarted_at
        await eventually(lambda: len(listener.cache) == 0, within=PROMPT)
        with pytest.raises(RevokedToken):
            await verifier.verify(revoked)
        # The app's pooled connections died with the server: the first use may fail, a retry works.
        with contextlib.suppress(Exception):
            await login(client, "alice")
        fresh = await login(client, "alice")
        assert (await verifier.verify(fresh["access_token"])).sub == "alice"
        assert noticed < PROMPT, f"noticed after {noticed:.2f}s"
