"""Redis: the key layout, the Lua scripts and the client, documented once, here.

Key layout. Every key starts with ``tw:{p}:`` where ``p`` is the partition, a small
number (``TOKENWARD_PARTITIONS``, default 1) that is also the Redis Cluster hash tag.
A user, all of the user's sessions and every deny entry that can match the user's
tokens live in the same partition, so each script touches one hash slot and the
deny check for a token is one MGET.

=============================  ======  =====================================  ==========================
key                            type    holds                                  expires (PEXPIREAT)
=============================  ======  =====================================  ==========================
``tw:{p}:s:<sid>``             hash    one session (fields below)             min(last use + idle, absolute)
``tw:{p}:u:<sub>``             zset    the user's sids, scored by absolute    the latest absolute expiry
``tw:{p}:dj:<jti>``            string  deny one access token; value = 1       the token's exp + leeway
``tw:{p}:ds:<sid>``            string  deny a session's tokens; value = 1     revocation + access TTL + leeway
``tw:{p}:dc:<sub>``            string  user cut-off; value = before (epoch s)  revocation + access TTL + leeway
``tw:{p}:seq``                 string  the partition's event counter          event retention, renewed per event
``tw:{p}:ev``                  stream  the partition's replay log             event retention, renewed per event
``tw:{p}:sg``                  stream  refresh-anomaly signals (anomalies.py) event retention, renewed per signal
``tw:{p}:rl:<k>:<id>``         string  a rate limit's theoretical arrival     when the bucket is full again
                                       time (ms, GCRA)
``tw:{p}:boot``                string  when the store was (re)initialised (s) never (see below)
=============================  ======  =====================================  ==========================

Rate limits (``service/ratelimit.py``): ``<k>`` is ``a`` (client address, IPv6 per /64),
``c`` (authenticated client id), ``f`` (refresh-token family: the sid) or ``x`` (failed client
authentications per address). Their partition is ``crc32("<k>:<id>") % partitions``, so
limits spread over the cluster; the keys of one request sharing a partition go in one script
call, and with one partition that is every request's only call.

Boot marker. ``tw:{p}:boot`` is the one key without a TTL (a few bytes per partition): the
epoch second at which the partition's store was first used, set with ``SET NX`` (then read
back, so concurrent service processes agree on one value). It is read in the same MGET as
a token's deny entries, so it costs no round trip. Missing means the store was wiped (a
Redis restarted without persistence, a FLUSHALL): every deny entry is gone, so every
access token issued before the marker (``iat`` < marker) is refused from then on, and
refresh tokens are gone with their sessions, so users sign in again. Session creation sets
it too (inside ``create_session.lua``), so every token minted after a wipe is newer than
the marker and passes. A Redis rolled back to an older snapshot keeps its marker: the
marker detects a wipe, not lost recent writes (run AOF for that).

Session hash fields: ``u`` sub, ``c`` client id, ``sc`` scope (absent when empty), ``x``
extra claims (JSON, absent when none), ``g`` generation, ``h`` hash of the current refresh
secret (16 raw bytes), ``K`` the session's tag key (16 random raw bytes, never in any token:
a tag verified under it vouches for a token whole, whatever its generation, even one a
failover made the store forget; sessions of the older layouts have ``k`` instead, or at
generation 0 nothing, tagging under ``h``, which the first token's holder can compute, so
their tags never vouch for a lost generation), after the first rotation
``p``/``pt``/``pn``/``pc`` previous hash (16 raw bytes),
rotation time (ms; the grace window is ``pt`` + TOKENWARD_REFRESH_GRACE), grace uses (absent =
0) and the successor sealed under the previous secret (24 raw bytes), ``ca`` created (epoch
s), ``la`` last used (epoch s; stored only by a grace use, else ``pt``, else ``ca``), ``ax``
absolute expiry (ms), ``it`` idle TTL (s), ``dn``/``ua``/``ip`` the device as the login
backend described it, ``ri``/``ru`` the address and agent of the latest refresh (absent
while equal to the device's), ``nw`` the network (/24, /48) of the latest address (``ri``,
else ``ip``), stored only where rotate.lua cannot derive it (``anomalies.derived_network``:
the /24 of a dotted quad), '' for no network, ``rw``/``rc`` the current refresh-burst window
(epoch s) and the refreshes counted in it (absent when the last rotation opened the window:
then ``pt``, one refresh). Values are kept short (raw bytes, integers) so the hash stays
listpack-encoded; nothing grows with the number of rotations. Sessions written before
``pt`` (with ``pe`` the grace deadline in ms, a random ``k`` from the start, ``la``, ``nw``,
``rw``/``rc`` always stored) are read as they are and shed those fields at their next rotation.

Bytes (``benchmarks/memory.py``, Redis 7.0, one user per session, a typical device): 524 per
new session, 653 after any number of rotations. Most of it is Redis's per-key floor (dict
entry, key name, object header, expires entry, buckets: ~150 B per key), paid twice: by the
session and by the user's index, which per-user listing needs without anything to clean
(Redis < 7.4 has no per-field TTL); the listpack allocation is 192 B new, 320 B rotated.

Sids and jtis start with the partition as two hex digits, so an id alone finds its
keys; a sub maps to ``crc32(sub) % partitions``. Changing the partition count moves
users: pick it once per deployment.

Events are published on the one channel ``tw:events`` (classic pub/sub works on every
topology and needs one subscription per listener) and appended to the partition's
stream; the wire format is in ``docs/events.md``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ReadOnlyError

from .config import Settings, parse_redis_url
from .errors import StoreUnavailable

log = logging.getLogger(__name__)


class NoGoodReplicas(ReadOnlyError):
    """``NOREPLICAS``: fewer replicas than ``min-replicas-to-write`` acknowledged within
    ``min-replicas-max-lag``, so the primary refused the write (a script at its first write,
    having written nothing)."""


# redis-py raises a bare ResponseError for NOREPLICAS, which would be a 500. As a
# ReadOnlyError it is a 503 like every other store fault, and a Sentinel-managed connection
# drops itself and asks the sentinels again: a primary that lost its replicas is most likely
# one a failover left behind. Both parsers (Python and hiredis) read this table.
BaseParser.EXCEPTION_CLASSES.setdefault("NOREPLICAS", NoGoodReplicas)

EVENTS_CHANNEL: Final = "tw:events"
# Sentinel flags on a primary that may be about to lose the writes it takes.
UNSURE_PRIMARY: Final = frozenset({"s_down", "o_down", "failover_in_progress"})
SCRIPT_NAMES: Final = ("create_session", "rotate", "end_session", "end_user_sessions", "revoke", "ratelimit")


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Builds key names; the only place that knows their shape."""

    partitions: int = 1

    def partition_of_sub(self, sub: str) -> int:
        """The partition a user (and everything of theirs) lives in."""
        return zlib.crc32(sub.encode()) % self.partitions

    @staticmethod
    def partition_of_id(ident: str) -> int:
        """The partition encoded in the first two hex digits of a sid or jti."""
        return int(ident[:2], 16)

    @staticmethod
    def session(p: int, sid: str) -> str:
        return f"tw:{{{p}}}:s:{sid}"

    @staticmethod
    def user_index(p: int, sub: str) -> str:
        return f"tw:{{{p}}}:u:{sub}"

    @staticmethod
    def deny_jti(p: int, jti: str) -> str:
        return f"tw:{{{p}}}:dj:{jti}"

    @staticmethod
    def deny_sid(p: int, sid: str) -> str:
        return f"tw:{{{p}}}:ds:{sid}"

    @staticmethod
    def cutoff(p: int, sub: str) -> str:
        return f"tw:{{{p}}}:dc:{sub}"

    @staticmethod
    def seq(p: int) -> str:
        return f"tw:{{{p}}}:seq"

    @staticmethod
    def stream(p: int) -> str:
        return f"tw:{{{p}}}:ev"

    @staticmethod
    def signals(p: int) -> str:
        return f"tw:{{{p}}}:sg"

    def partition_of_limit(self, kind: str, ident: str) -> int:
        """The partition of a rate-limit key: spread by hash, nothing else lives with it."""
        return zlib.crc32(f"{kind}:{ident}".encode()) % self.partitions

    @staticmethod
    def ratelimit(p: int, kind: str, ident: str) -> str:
        return f"tw:{{{p}}}:rl:{kind}:{ident}"

    @staticmethod
    def boot(p: int) -> str:
        return f"tw:{{{p}}}:boot"


def text(value: Any) -> str:
    """A Redis reply (bytes) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def load_script_source(name: str) -> str:
    """A script's Lua source, with the shared revocation prelude where it revokes."""
    lua = resources.files("service") / "lua"
    body = (lua / f"{name}.lua").read_text()
    if "tw_revoke(" in body:
        body = (lua / "_revoke.lua").read_text() + "\n" + body
    return body


class Scripts:
    """The scripts, registered on one client (EVALSHA, reloaded on NOSCRIPT)."""

    def __init__(self, client: Any) -> None:
        self.create_session: AsyncScript = client.register_script(load_script_source("create_session"))
        self.rotate: AsyncScript = client.register_script(load_script_source("rotate"))
        self.end_session: AsyncScript = client.register_script(load_script_source("end_session"))
        self.end_user_sessions: AsyncScript = client.register_script(load_script_source("end_user_sessions"))
        self.revoke: AsyncScript = client.register_script(load_script_source("revoke"))
        self.ratelimit: AsyncScript = client.register_script(load_script_source("ratelimit"))

    def names(self) -> dict[str, str]:
        """SHA1 -> script name, to label EVALSHA calls."""
        return {getattr(self, name).sha: name for name in SCRIPT_NAMES}


class BatchedReads:
    """Concurrent MGETs leave together: one pipeline per event-loop turn (auto-pipelining).

    A gateway sends many checks at once. Each one costs redis-py a pool checkout, a
    send and a read of its own; batched, the requests that reached their deny check in
    the same loop turn share one of each, so the client work per check falls to packing
    and parsing. Every MGET is still sent after its request arrived, so a revocation
    acknowledged before that is seen, as with a call of its own.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._queue: list[tuple[tuple[str, ...], asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()  # held so a send is never garbage-collected
        #: Round trips made, and MGETs they carried (for tests and the benchmarks).
        self.trips = 0
        self.reads = 0

    async def mget(self, *keys: str) -> list[Any]:
        """MGET ``keys`` in the next batch; the values (None for missing keys)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((keys, future))
        if len(self._queue) == 1:
            # The task runs on the next loop turn: every check reached in this turn joins it.
            task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await future

    async def _send(self) -> None:
        batch, self._queue = self._queue, []
        self.trips += 1
        self.reads += len(batch)
        try:
            if len(batch) == 1:
                results = [await self._client.mget(*batch[0][0])]
            else:
                async with self._client.pipeline(transaction=False) as pipe:
                    for keys, _ in batch:
                        # Not pipe.mget: the cluster pipeline refuses it by name, although each
                        # batch member's keys share one slot (one partition).
                        pipe.execute_command("MGET", *keys)
                    results = await pipe.execute()
        except Exception as exc:  # every waiter gets the failure to map (a 503)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved here; the waiter re-raises it
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its request was cancelled meanwhile
                future.set_result(result)

    def names(self) -> dict[str, str]:
        """SHA1 -> script name, to label EVALSHA calls."""
        return {getattr(self, name).sha: name for name in SCRIPT_NAMES}


class Store:
    """The Redis client, its scripts and the write-acknowledgement policy."""

    def __init__(self, client: Any, settings: Settings, kind: str) -> None:
        self.client = client
        self.kind = kind
        self.keys = Keyspace(settings.partitions)
        self.scripts = Scripts(client)
        self.reads = BatchedReads(client)
        self._wait_replicas = settings.wait_replicas
        self._wait_timeout_ms = settings.wait_timeout_ms
        self._retention_ms = settings.event_retention * 1000
        #: True once Redis has answered the start-up work (boot markers, self-check).
        self.contacted = False
        #: What the self-check refused, when it ran after start (Redis away at start): /readyz fails.
        self.unfit: tuple[str, ...] = ()

    async def first_contact(self, retry_every: float | None = None) -> bool:
        """Set the boot markers and run the self-check; True once done.

        At start Redis may be away: once (``retry_every`` None) or until it answers. A
        Redis found unfit only now cannot refuse the start any more, so it fails /readyz.
        """
        while True:
            try:
                await self.ensure_boot_markers()
                fitness = await check_fitness(self)
            except (OSError, aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                if retry_every is None:
                    log.debug("first contact with redis failed: %s", exc)
                    return False
                await asyncio.sleep(retry_every)
                continue
            except aioredis.RedisError as exc:  # an answer, but a refusal (ACL, say): retrying will not help
                log.error("start-up work on redis refused: %s", exc)
                self.contacted = True
                return True
            if retry_every is not None:
                log.warning("redis answers now")
            for error in fitness.errors:
                log.error("refusing this Redis: %s", error)
            self.unfit = fitness.errors
            self.contacted = True
            return True

    async def confirm(self, partition: int = 0) -> None:
        """Make a revocation already written survive a failover: one write after it, then WAIT.

        WAIT counts the replicas holding every write *of its own connection*; a pooled
        connection that never wrote gets an immediate, meaningless answer. So the WAIT
        rides behind a write of its own (renewing the partition's event counter's TTL, as
        every event does), which the primary's replication stream orders after the
        revocation. Prefer ``run_confirmed``: a failover between the revocation and this
        call would confirm the new primary's stream, not the one that took the write.
        """
        if self._wait_replicas > 0:
            seq = self.keys.seq(partition)
            await self._confirmed(lambda pipe: pipe.execute_command("PEXPIRE", seq, self._retention_ms), seq)

    async def run_confirmed(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a script that revokes; with TOKENWARD_WAIT_REPLICAS, answer only once replicas hold its write.

        The script and its WAIT go in one pipeline, so on one connection to one server:
        the WAIT covers exactly this write (see ``confirm`` for why a WAIT elsewhere does
        not), and a failover in between breaks the connection instead of confirming another
        server's state. A script that wrote nothing is confirmed too, which costs a replica
        round trip and guarantees a retry never meets a silent no-op. On a cluster the WAIT
        goes to the primary of the slot of the script's first key (all its keys share it).
        """
        if self._wait_replicas <= 0:
            return await script(keys=keys, args=args)
        for attempt in (1, 2):
            reply = (await self._confirmed(
                lambda pipe: pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args), keys[0]
            ))[0]  # fmt: skip
            if isinstance(reply, NoScriptError) and attempt == 1:
                await self.client.script_load(script.script)  # a restarted or new primary
                continue
            if isinstance(reply, BaseException):
                raise reply
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def _confirmed(self, stage: Callable[[Any], Any], key: str) -> list[Any]:
        """``stage`` commands, then WAIT, as one pipeline on one connection; the replies, WAIT's checked.

        WAIT is not consensus. On Sentinel, a primary that a pause or a partition cut off keeps
        a replica and its clients for a while after the sentinels promoted another, and what it
        confirms then is discarded when it rejoins (measured: docs/consistency.md). So once
        the WAIT is back, the server that took the write must still be the primary the
        sentinels name; if not, the answer is 503 and the pool's idle connections move over.
        """
        pool: Any = getattr(self.client, "connection_pool", None)
        sentinel = isinstance(pool, SentinelConnectionPool)
        async with self.client.pipeline(transaction=False) as pipe:
            if sentinel:
                # Chosen here rather than inside execute, so the server it reached is known.
                pipe.connection = await pool.get_connection()
            server = (pipe.connection.host, pipe.connection.port) if sentinel else None
            stage(pipe)
            self._stage_wait(pipe, key)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        if not isinstance(replies[0], NoScriptError):
            self._check_acked(replies[-1])
        if server is not None:
            await self._check_still_primary(pool, server)
        return replies

    async def _check_still_primary(self, pool: Any, server: tuple[str, int]) -> None:
        """The fence: ``server`` must be the primary of the newest configuration any sentinel
        knows (highest config epoch), and no sentinel with that configuration may think it
        down or be failing it over.

        Asking one sentinel is not enough: one that has not heard of a promotion yet still
        names the old primary, and until a failover completes every sentinel names the old
        primary, flagged ``failover_in_progress``, while it may take writes it is about to
        lose (the split-brain harness measured 12 sessions acknowledged 3.0-3.1 s after a 3 s
        SIGSTOP with an address-only check). All sentinels answer in one concurrent round
        trip; none answering is a 503 too.
        """

        async def ask(sentinel: Any) -> dict[str, Any] | None:
            try:
                state: dict[str, Any] | None = (await sentinel.sentinel_masters()).get(pool.service_name)
            except (aioredis.RedisError, OSError):
                return None
            return state

        states = [s for s in await asyncio.gather(*(ask(s) for s in pool.sentinel_manager.sentinels)) if s]
        if not states:
            raise StoreUnavailable("no sentinel answered: cannot tell whether the write reached the primary")
        newest = max(int(s.get("config-epoch", 0)) for s in states)
        for state in states:
            if int(state.get("config-epoch", 0)) != newest:
                continue  # a sentinel that has not heard of the latest promotion yet
            if (str(state["ip"]), int(state["port"])) != (str(server[0]), int(server[1])):
                await pool.get_master_address()  # the pool's idle connections move to the new primary
                raise StoreUnavailable("the primary changed while the write was being confirmed")
            if UNSURE_PRIMARY & set(str(state.get("flags", "")).split(",")):
                raise StoreUnavailable("the sentinels are failing the primary over; retry")

    def _stage_wait(self, pipe: Any, key: str) -> None:
        args = ("WAIT", self._wait_replicas, self._wait_timeout_ms)
        if isinstance(self.client, RedisCluster):
            # WAIT names no key: send it to the primary owning the slot the write went to.
            pipe.execute_command(*args, target_nodes=self.client.get_node_from_key(key))
        else:
            pipe.execute_command(*args)

    def _check_acked(self, acked: Any) -> None:
        if isinstance(acked, BaseException):
            raise acked
        if int(acked) < self._wait_replicas:
            raise StoreUnavailable(f"only {acked} of {self._wait_replicas} replicas confirmed the write in time")

    async def ensure_boot(self, partition: int, now_s: int | None = None) -> int:
        """The partition's boot marker, set to now if missing (a fresh or wiped store).

        SET NX then GET in one pipeline: of concurrent processes the first one's value
        wins and every one reads it back, so they all deny the same tokens.
        """
        key = self.keys.boot(partition)
        value = int(time.time()) if now_s is None else now_s
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(key, value, nx=True)
            pipe.get(key)
            created, stored = await pipe.execute()
        if created:
            log.warning(
                "partition %d: no boot marker, the store is new or was wiped; access tokens issued "
                "before %d are refused from now on",
                partition,
                value,
            )
        return int(stored)

    async def ensure_boot_markers(self) -> None:
        """Set every partition's boot marker at start-up (a no-op where they exist)."""
        for p in range(self.keys.partitions):
            await self.ensure_boot(p)

    async def ping(self) -> bool:
        """True when Redis answers."""
        return bool(await self.client.ping())

    async def aclose(self) -> None:
        """Close the connection pool (and, on Sentinel, the connections to the sentinels)."""
        await self.client.aclose()
        pool = getattr(self.client, "connection_pool", None)  # a RedisCluster has none
        manager = getattr(pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def create_client(settings: Settings) -> tuple[Any, str]:
    """A Redis client for the settings, and the name of the store kind for /readyz."""
    if settings.redis_url is None:
        import fakeredis

        # lua_modules=set() makes fakeredis run scripts with lupa, as real Redis would.
        return fakeredis.FakeAsyncRedis(lua_modules=set()), "embedded"
    target = parse_redis_url(settings.redis_url.value)
    common: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "health_check_interval": 15,
        "retry": Retry(NoBackoff(), 0),
    }
    size = settings.redis_max_connections
    if target.kind == "redis":
        # A blocking pool: a burst beyond the pool waits for a free connection, at most
        # the Redis timeout, then answers 503 ("No connection available"), instead of
        # opening connections without bound or queueing without end.
        pool = aioredis.BlockingConnectionPool.from_url(
            target.url, max_connections=size, timeout=settings.redis_timeout, **common
        )
        return aioredis.Redis.from_pool(pool), "redis"
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "sentinel":
        sentinel = Sentinel(
            list(target.hosts), sentinel_kwargs={**common, "ssl": target.tls}, ssl=target.tls, **auth, **common
        )
        # Sentinel and Cluster pools refuse at once (503) when full rather than wait.
        client = sentinel.master_for(target.service, db=target.db, max_connections=size)
        return client, "sentinel"
    nodes = [ClusterNode(host, port) for host, port in target.hosts]
    cluster = RedisCluster(
        startup_nodes=nodes, ssl=target.tls, max_connections=size, require_full_coverage=True, **auth, **common
    )
    return cluster, "cluster"


@dataclass(frozen=True, slots=True)
class Fitness:
    """What the start-up self-check found: errors refuse the start, warnings are logged."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]


async def check_fitness(store: Store) -> Fitness:
    """Is this Redis safe for sessions and deny entries? Checks every primary.

    Eviction would silently drop revocations (every key has a TTL, so even volatile-*
    policies pick them), so anything but ``noeviction`` is refused. Without AOF a crash
    forgets recent revocations, which is worth a warning, not a refusal. A replicated primary
    without ``min-replicas-to-write`` keeps acknowledging writes after a failover demoted it in
    the others' eyes, and loses them when it resyncs (docs/consistency.md): a warning, and a
    refusal when ``TOKENWARD_WAIT_REPLICAS`` promises that revocations survive a failover.
    """
    if store.kind == "embedded":
        return Fitness((), ("embedded store: nothing is persisted",))
    client = store.client
    nodes: list[tuple[str, Any]] = []
    if isinstance(client, RedisCluster):
        for node in client.get_primaries():
            nodes.append((node.name, node))
    else:
        nodes.append(("primary", None))
    errors: list[str] = []
    warnings: list[str] = []
    for name, node in nodes:
        kwargs = {"target_nodes": node} if node is not None else {}
        memory = await client.info("memory", **kwargs)
        persistence = await client.info("persistence", **kwargs)
        policy = memory.get("maxmemory_policy", "unknown")
        if policy != "noeviction":
            errors.append(
                f"{name}: maxmemory-policy is {policy!r}; it could evict sessions and deny entries. "
                "Set maxmemory-policy noeviction (and keep caches in another Redis)."
            )
        if not int(persistence.get("aof_enabled", 0)):
            warnings.append(
                f"{name}: appendonly is off; a crash forgets revocations since the last snapshot "
                "(a restart with no data at all is noticed: the boot marker refuses every older access token)"
            )
        replication = await client.info("replication", **kwargs)
        replicated = store.kind == "sentinel" or int(replication.get("connected_slaves", 0)) > 0
        # INFO shows min_slaves_good_slaves only when min-replicas-to-write and -max-lag are
        # both on; INFO, unlike CONFIG GET, is allowed to the least-privilege ACL user.
        if replication.get("role") == "master" and replicated and "min_slaves_good_slaves" not in replication:
            finding = (
                f"{name}: min-replicas-to-write (or min-replicas-max-lag) is 0 on a replicated primary; "
                "a primary cut off by a failover keeps acknowledging writes that the promoted replica never "
                "sees, and forgets them when it rejoins (lost logouts and rotations). Set min-replicas-to-write 1 "
                "and min-replicas-max-lag to 2 x TOKENWARD_REDIS_TIMEOUT, at least 2 (docs/consistency.md)"
            )
            (errors if store._wait_replicas else warnings).append(finding)
    return Fitness(tuple(errors), tuple(warnings))


def open_store(settings: Settings) -> Store:
    """A store whose client connects on first use: the service starts (and answers 503)
    while Redis is away, and carries on by itself once it answers."""
    client, kind = create_client(settings)
    return Store(client, settings, kind)


async def connect(settings: Settings, attempts: int = 5) -> Store:
    """Connect with bounded retries and a ping, so start-up fails clearly, not later."""
    client, kind = create_client(settings)
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            await client.ping()
            break
        except (OSError, aioredis.RedisError) as exc:
            if attempt == attempts:
                await client.aclose()
                raise
            log.warning("redis not reachable (attempt %d/%d): %s", attempt, attempts, exc)
            await asyncio.sleep(delay)
            delay *= 2
    return Store(client, settings, kind)
