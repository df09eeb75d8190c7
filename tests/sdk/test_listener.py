"""The listener on real Redis: propagation, and zero lost revocations through every failure we can cause."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
import warnings
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp.test_utils import TestClient

from service import state
from service.config import Secret
from service.errors import StoreUnavailable
from service.keys import KeyRing
from service.sdk.events import Event
from service.sdk.listener import RevocationListener
from service.sdk.verifier import RevokedToken
from service.store import load_script_source
from tests.conftest import AppFactory, basic
from tests.factories import login
from tests.sdk.conftest import ListenerFactory, counters, eventually, verifier_for, wait_all_equal
from tests.sdk.proxy import Proxy
from tests.support.redis_servers import RedisServer, SentinelGroup

# The tests that run on the shared fixtures run on a standalone Redis and on a 3-primary
# cluster (16 partitions); those that start, stop or proxy a Redis of their own say so.
pytestmark = pytest.mark.topologies("standalone", "cluster")
STANDALONE_ONLY = pytest.mark.topologies("standalone")


def percentiles(samples: list[float]) -> str:
    """p50/p99/max in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50={statistics.median(ordered) * 1000:.1f}ms p99={p99 * 1000:.1f}ms max={ordered[-1] * 1000:.1f}ms"


async def revoke_jtis(client: TestClient[Any, Any], n: int, reason: str = "test") -> None:
    """n jti revocations through the service's own code path (tokens valid for 5 minutes),
    spread over every partition."""
    revocations = client.app[state.REVOCATIONS]
    partitions = client.app[state.SETTINGS].partitions
    exp = int(time.time()) + 300
    for i in range(n):
        await revocations.revoke_jti(f"{i % partitions:02x}{reason}{i:06d}", exp, reason)


async def mixed_revocations(client: TestClient[Any, Any], users: int) -> None:
    """Sessions ended over HTTP (sid), users logged out everywhere (sub), tokens denied (jti)."""
    for i in range(users):
        pair = await login(client, f"user{i}")
        resp = await client.post("/oauth/revoke", data={"token": pair["refresh_token"]})
        assert resp.status == 200
    await login(client, "carol")
    resp = await client.delete("/v1/users/carol/sessions", headers=basic("admin"))
    assert resp.status == 200


class TestPropagation:
    async def test_twenty_subscribers_refuse_after_revoke_returns(
        self, client: TestClient[Any, Any], make_listener: ListenerFactory, keyring: KeyRing
    ) -> None:
        """Every subscriber refuses a logged-out token; propagation measured from the revoke call."""
        applied: dict[str, list[float]] = {}

        def record(event: Event) -> None:
            applied.setdefault(event.id, []).append(time.perf_counter())

        listeners = [await make_listener(on_apply=record) for _ in range(20)]
        verifiers = [verifier_for(keyring, listener.cache) for listener in listeners]
        delays: list[float] = []
        for i in range(15):
            pair = await login(client, f"prop{i}")
            token = pair["access_token"]
            for verifier in verifiers:
                await verifier.verify(token)  # accepted before
            started = time.perf_counter()
            resp = await client.post("/oauth/revoke", data={"token": pair["refresh_token"]})
            assert resp.status == 200
            sid = pair["session_id"]
            await eventually(lambda sid=sid: len(applied.get(sid, ())) == len(listeners))  # type: ignore[misc]
            delays += [t - started for t in applied[pair["session_id"]]]
            for verifier in verifiers:
                with pytest.raises(RevokedToken):
                    await verifier.verify(token)
        print(f"\npropagation, 20 subscribers, {len(delays)} deliveries: {percentiles(delays)}")
        assert max(delays) < 2.0  # a generous sanity bound, not a performance claim


class TestNothingLost:
    async def test_killed_connections_lose_nothing(
        self,
        client: TestClient[Any, Any],
        redis_client: aioredis.Redis,
        node_clients: list[aioredis.Redis],
        make_listener: ListenerFactory,
        topology: str,
    ) -> None:
        """CLIENT KILL of pub/sub and normal listener connections during 1,000 revocations (200 on
        the cluster, where the kills go to every node: the one each listener subscribes to included)."""
        count, revocations = (20, 1000) if topology == "standalone" else (5, 200)
        listeners = [await make_listener(redis_options={"client_name": f"tw-listener-{i}"}) for i in range(count)]
        for batch in range(10):
            await revoke_jtis(client, revocations // 10, reason=f"kill{batch}")
            for node in node_clients:
                await node.client_kill_filter(_type="pubsub")
            if batch % 3 == 0:
                for node in node_clients:
                    for line in await node.client_list():
                        if str(line.get("name", "")).startswith("tw-listener-"):
                            await node.client_kill_filter(_id=line["id"])
            if topology == "cluster":
                # Few, fast revocations per batch: let every listener resubscribe, so each kill
                # hits a live subscription on whichever node the listener chose this time.
                await eventually(lambda: all(x.healthy for x in listeners))
        await mixed_revocations(client, 3)
        truth = await wait_all_equal(listeners, redis_client)
        assert len(truth) >= revocations
        assert all(listener.reconnects >= 5 for listener in listeners), [x.reconnects for x in listeners]

    @STANDALONE_ONLY  # the proxy fronts one server; cluster redirects would bypass it
    @pytest.mark.parametrize("trim", [False, True], ids=["stream-kept", "stream-trimmed"])
    async def test_blocked_subscribers_catch_up_or_reload(
        self,
        client: TestClient[Any, Any],
        redis_client: aioredis.Redis,
        make_listener: ListenerFactory,
        proxy: Proxy,
        trim: bool,
    ) -> None:
        """Subscribers cut off silently (blackholed) while 1,000 revocations happen, optionally past the stream."""
        listeners = [await make_listener(proxy.url) for _ in range(5)]
        # One event first, so each listener has a position (a seq) to resume from.
        await revoke_jtis(client, 1, reason="first")
        await eventually(lambda: all(x.applied == 1 for x in listeners))
        proxy.mode = "blackhole"
        await revoke_jtis(client, 1000, reason="blocked")
        if trim:
            await redis_client.xtrim("tw:{0}:ev", maxlen=0, approximate=False)
            await revoke_jtis(client, 10, reason="aftertrim")
        await asyncio.sleep(1.0)  # long enough for every listener to declare the connection dead
        assert not any(listener.healthy for listener in listeners)
        reloads_before = [listener.reloads for listener in listeners]
        proxy.mode = "pass"
        proxy.cut()
        truth = await wait_all_equal(listeners, redis_client)
        assert len(truth) >= 1000
        reloaded = [x.reloads > before for x, before in zip(listeners, reloads_before, strict=True)]
        # A kept stream is caught up from; a trimmed one forces a snapshot reload.
        assert reloaded == [trim] * len(listeners)


@pytest.fixture(name="aof_server")
def _aof_server() -> Any:
    """A Redis with AOF on, of its own, to be stopped and started."""
    server = RedisServer(appendonly=True).start()
    yield server
    server.close()


@STANDALONE_ONLY  # a Redis of its own
class TestRedisRestart:
    async def test_restart_with_aof_loses_nothing(
        self, make_client: AppFactory, make_listener: ListenerFactory, aof_server: RedisServer
    ) -> None:
        """Revocations before, during (refused) and after a restart all end up in every cache."""
        app_client = await make_client(redis_url=Secret(aof_server.url))
        listeners = [await make_listener(aof_server.url) for _ in range(5)]
        await revoke_jtis(app_client, 200, reason="before")
        aof_server.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            await revoke_jtis(app_client, 1, reason="during")  # refused: the API answers 503, nothing written
        await asyncio.sleep(0.5)
        assert not any(listener.healthy for listener in listeners)
        aof_server.start()
        # The app's pooled connections died with the server: the first use fails (503), a retry works.
        with contextlib.suppress(redis.exceptions.ConnectionError):
            await app_client.app[state.STORE].client.ping()
        await revoke_jtis(app_client, 200, reason="after")
        direct = aioredis.Redis.from_url(aof_server.url)
        try:
            truth = await wait_all_equal(listeners, direct)
        finally:
            await direct.aclose()
        assert len(truth) == 400


@STANDALONE_ONLY  # 100,000 sessions in partition 0; CONFIG SET on one server
class TestFlood:
    async def test_mass_logout_with_tiny_output_buffers(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, make_listener: ListenerFactory
    ) -> None:
        """100,000 sessions logged out; subscribers dropped by the output-buffer limit catch up."""
        store = client.app[state.STORE]
        create = store.client.register_script(load_script_source("create_session"))
        users, per_user = 100, 1000
        now = int(time.time() * 1000)
        started = time.perf_counter()
        for u in range(users):
            sub = f"flood{u}"
            keys = store.keys
            async with store.client.pipeline(transaction=False) as pipe:
                for i in range(per_user):
                    sid = f"00fl{u:03d}x{i:05d}"
                    await create(
                        keys=[keys.session(0, sid), keys.user_index(0, sub), keys.cutoff(0, sub), keys.boot(0)],
                        args=[now, now + 3_600_000, now + 3_600_000, sid, "u", sub, "g", 0],
                        client=pipe,
                    )
                await pipe.execute()
        created = time.perf_counter() - started
        listeners = [await make_listener(redis_options={"client_name": f"tw-flood-{i}"}) for i in range(4)]
        await redis_client.config_set("client-output-buffer-limit", "pubsub 32kb 16kb 1")
        try:
            sessions = client.app[state.SESSIONS]
            started = time.perf_counter()
            ended = 0
            for u in range(users):
                # keep_sid names no session: 'others' mode ends each one with its own sid event.
                ended += await sessions.end_all(f"flood{u}", keep_sid="none", reason="flood")
            logout = time.perf_counter() - started
            assert ended == users * per_user
            started = time.perf_counter()
            truth = await wait_all_equal(listeners, redis_client, within=90)
            caught_up = time.perf_counter() - started
        finally:
            await redis_client.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
        print(
            f"\nflood: created {ended} sessions in {created:.1f}s, logged out in {logout:.1f}s, "
            f"subscribers equal to Redis {caught_up:.1f}s later; reconnects={[x.reconnects for x in listeners]}"
        )
        assert len(truth) >= users * per_user
        assert all(listener.reconnects >= 1 for listener in listeners)


@pytest.fixture(name="listener")
async def _listener(make_listener: ListenerFactory) -> RevocationListener:
    return await make_listener()


class TestHealth:
    async def test_health_and_position(
        self,
        client: TestClient[Any, Any],
        listener: RevocationListener,
        redis_client: aioredis.Redis,
        partitions: int,
    ) -> None:
        """healthy, last_seq, lag and staleness tell the truth."""
        assert listener.healthy and listener.staleness < 1.0
        await revoke_jtis(client, 3)
        await eventually(lambda: listener.applied >= 3)
        assert listener.last_seq == await counters(redis_client, partitions)
        assert 0 <= listener.lag < 2


@pytest.fixture(name="sentinel_group")
def _sentinel_group() -> Any:
    group = SentinelGroup().start()
    yield group
    group.close()


@STANDALONE_ONLY  # a Sentinel group of its own
class TestSentinel:
    # redis-py's Sentinel client can drop a connection it was opening when the primary died
    # (see the end of the test); if the collector finds it mid-test, its ResourceWarning is
    # reported here as an unraisable exception. It is redis-py's stream, not the listener's.
    # The same holds for a pooled Connection it was connecting when the primary died (seen with the
    # revoke path's script-and-WAIT pipeline): collected mid-test, it warns ResourceWarning.
    @pytest.mark.filterwarnings("ignore:Exception ignored in.*StreamWriter:pytest.PytestUnraisableExceptionWarning")
    @pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*AbstractConnection.__del__:pytest.PytestUnraisableExceptionWarning"
    )
    async def test_listener_follows_a_failover(
        self, make_client: AppFactory, make_listener: ListenerFactory, sentinel_group: SentinelGroup
    ) -> None:
        """A redis+sentinel:// listener survives SIGKILL of the primary under a revocation load and
        ends equal to the new primary's deny set (WAIT 1: no acknowledged revocation is lost)."""
        app_client = await make_client(redis_url=Secret(sentinel_group.url), wait_replicas=1, wait_timeout_ms=300)
        listener = await make_listener(sentinel_group.url)
        revocations = app_client.app[state.REVOCATIONS]
        exp = int(time.time()) + 300
        acknowledged: list[str] = []
        killed = False

        async def worker(w: int) -> None:
            i = 0
            while not (killed and len(acknowledged) >= 120):
                jti = f"00fo{w}x{i:05d}"
                try:
                    await revocations.revoke_jti(jti, exp, "failover")
                except (redis.exceptions.RedisError, StoreUnavailable, OSError):
                    await asyncio.sleep(0.05)  # the service answers 503; the client retries
                    continue
                acknowledged.append(jti)
                i += 1

        workers = [asyncio.create_task(worker(w)) for w in range(4)]
        await eventually(lambda: len(acknowledged) >= 40, within=10)
        sentinel_group.master().kill()
        killed = True
        async with asyncio.timeout(30):
            await asyncio.gather(*workers)
        primary = aioredis.Redis(host="127.0.0.1", port=sentinel_group.master().port)
        try:
            truth = await wait_all_equal([listener], primary, within=20)
        finally:
            await primary.aclose()
        assert {("jti", jti) for jti in acknowledged} <= set(truth), "an acknowledged revocation was lost"
        assert listener.reconnects >= 1
        # Store.aclose closes the primary's pool, not the sentinels' connections: close them here.
        for sentinel in app_client.app[state.STORE].client.connection_pool.sentinel_manager.sentinels:
            await sentinel.aclose()
        # The service's Sentinel client can drop a connection it was opening when the primary
        # died without closing it (allocated in store.py's revoke path); collect it here so its
        # ResourceWarning does not fail whichever test runs the garbage collector next.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
