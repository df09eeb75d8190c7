"""RevocationListener: keeps a DenyCache equal to the deny entries in Redis.

Pub/sub is fast but not a log: a dropped connection, a slow consumer cut off by
``client-output-buffer-limit`` or a silent reconnect loses messages. So pub/sub is
only the fast path; the per-partition stream and counter are the truth:

1. Subscribe to ``tw:events`` first, so nothing published from then on is missed.
2. Per partition, with a position (last applied ``seq`` and stream id): catch up
   with ``XRANGE`` after that id. Without one, reload: read the counter and the
   newest stream id in one MULTI, SCAN the deny keys (values and PTTL) into the
   cache, then catch up from that stream id. Applying an event twice is harmless.
3. Apply pub/sub events in ``seq`` order. ``seq == last + 1`` applies; ``seq <= last``
   is a duplicate; anything higher is a gap: catch up from the stream. A stream that
   no longer holds ``last + 1`` (trimmed, expired, the counter restarted) means reload.
4. Every ``ping_interval`` PING the subscription; a PONG proves that everything
   published before it arrived (pub/sub keeps order per connection), so the listener
   was current when it sent the PING. No PONG within ``ping_timeout``: the connection
   is dead even if TCP has not noticed; drop it and reconnect.
5. Every ``check_interval`` compare each counter with ``last_seq`` (catches anything
   the rules above could miss) and sweep expired cache entries.
   The same round trip (and a reload's MULTI) reads each partition's boot marker
   ``tw:{p}:boot`` into the cache: tokens issued before it are denied, since a wiped
   Redis lost every deny entry. A marker that changed (another wipe) means reload. A
   missing marker (wiped, the service has not set it again yet) is set here exactly as
   the service does: ``SET NX`` of the current epoch second, then read back, so the
   first writer wins and the service and every listener agree on one value. Refusing
   the partition's tokens until the service sets it would also refuse tokens minted
   after the wipe until the next check; the SDK's own marker is never later than one
   the service would set, so it denies nothing the service would accept. If the write
   is refused (a read-only ACL user), every token of the partition is refused until
   a marker appears.
6. On any error: reconnect with exponential backoff and full jitter, then step 2.

Everything runs as tasks on the caller's event loop; no call blocks it (snapshots are
read in SCAN batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import ResponseError

from .cache import DenyCache
from .connections import connect
from .events import (
    CHANNEL,
    Event,
    EventFormatError,
    Kind,
    UnsupportedEvent,
    boot_key,
    deny_pattern,
    deny_until,
    parse_deny_key,
    parse_event,
    partition_of_id,
    partition_of_sub,
    seq_key,
    stream_key,
)

log = logging.getLogger("tokenward.sdk.listener")

_PING_PAYLOAD: Final = b"tw-listener"
# Stands for "no marker and none could be set": later than any token's iat.
_REFUSE_ALL: Final = 2**62


class DeadConnection(ConnectionError):
    """The subscription stopped answering PINGs or was silently re-established."""


@dataclass(slots=True)
class _Partition:
    """Where the listener stands in one partition."""

    last_seq: int | None = None
    last_xid: str | None = None
    # True when last_seq/last_xid are a position consistent with the live subscription:
    # only then may pub/sub events be applied directly.
    positioned: bool = False
    seen_max: int = 0


class RevocationListener:
    """Feeds a :class:`DenyCache` from Redis and says how current it is.

    ``redis`` is where the service writes: its ``TOKENWARD_REDIS_URL`` (``redis://``,
    ``rediss://``, ``redis+sentinel://`` or ``redis+cluster://``; the listener opens and
    closes its own connections, ``redis_options`` added to them), or a ready-made
    ``redis.asyncio.Redis`` (a Sentinel ``master_for`` client included) or
    ``redis.asyncio.cluster.RedisCluster`` that the caller keeps and closes. Give such a
    client no retries (``Retry(NoBackoff(), 0)``): reads would survive them, and a
    subscription silently re-established underneath is detected and treated as a
    reconnect anyway. On a cluster the subscription goes to one node (any node delivers
    every ``PUBLISH``), a new one on each reconnect. ``partitions`` must equal the
    service's ``TOKENWARD_PARTITIONS``.
    """

    def __init__(
        self,
        redis: Any,
        cache: DenyCache | None = None,
        *,
        partitions: int = 1,
        ping_interval: float = 1.0,
        ping_timeout: float = 3.0,
        check_interval: float = 5.0,
        socket_timeout: float = 5.0,
        backoff_base: float = 0.1,
        backoff_max: float = 10.0,
        batch: int = 1000,
        on_apply: Callable[[Event], None] | None = None,
        redis_options: dict[str, Any] | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.cache = cache if cache is not None else DenyCache()
        self.partitions = partitions
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.check_interval = check_interval
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.batch = batch
        self.on_apply = on_apply
        self._conn = connect(redis, socket_timeout, redis_options)
        # Typed as Any: redis-py's reply types are unions the code below narrows by protocol.
        self._client: Any = self._conn.reader
        self._parts = [_Partition() for _ in range(partitions)]
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._connected = False
        self._closing = False
        self._unsupported: str | None = None
        self._current_at = -math.inf  # monotonic time at which the listener last knew it was current
        self._first_current = asyncio.Event()
        self._lag = 0.0
        #: Counters for monitoring and tests.
        self.reconnects = 0
        self.reloads = 0
        self.catch_ups = 0
        self.applied = 0

    # -- public surface -----------------------------------------------------------

    async def start(self, *, wait: float | None = 10.0) -> None:
        """Start the background task; with ``wait``, return once the cache is loaded.

        Raises ``TimeoutError`` if the first load did not finish in ``wait`` seconds
        (the listener keeps trying in the background).
        """
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tokenward-listener")
        if wait is not None:
            await asyncio.wait_for(self._first_current.wait(), wait)

    async def aclose(self) -> None:
        """Stop the task and close the connections."""
        self._closing = True
        if self._task is not None:
            # Bounded: closing a connection the server already dropped can stall in
            # redis-py's disconnect; a stuck close must not hang the application's shutdown.
            for _ in range(3):
                self._task.cancel()
                done, _ = await asyncio.wait({self._task}, timeout=2.0)
                if done:
                    break
            self._task = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._conn.aclose()

    @property
    def healthy(self) -> bool:
        """Subscribed, positioned on every partition, and current within the last few pings."""
        return (
            self._connected
            and self._unsupported is None
            and all(p.positioned for p in self._parts)
            and self.staleness <= self.ping_interval + self.ping_timeout
        )

    @property
    def staleness(self) -> float:
        """Seconds since the listener last knew it had every event (``inf`` before the first load)."""
        return max(0.0, time.monotonic() - self._current_at)

    @property
    def lag(self) -> float:
        """Seconds between the server writing the latest applied event and the cache applying it."""
        return self._lag

    @property
    def last_seq(self) -> dict[int, int | None]:
        """The last applied seq per partition (None: no event known yet)."""
        return {p: part.last_seq for p, part in enumerate(self._parts)}

    @property
    def problem(self) -> str | None:
        """Why the listener cannot apply events (an unsupported event version), or None."""
        return self._unsupported

    async def wait_current(self) -> None:
        """Wait until the listener proves it is current as of now (bound it with ``asyncio.timeout``)."""
        since = time.monotonic()
        while self._current_at < since or not self.healthy:
            self._wake.set()
            await asyncio.sleep(0.01)

    # -- connection lifecycle -----------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            began = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure means: reconnect and resync
                task = asyncio.current_task()
                if self._closing or (task is not None and task.cancelling()):
                    # On Python 3.11 a cancel that meets a socket timeout can come out as
                    # TimeoutError (and redis-py's TimeoutError): stop, do not reconnect.
                    raise asyncio.CancelledError from exc
                log.warning("revocation listener lost Redis: %s: %s", type(exc).__name__, exc)
            finally:
                self._connected = False
            self.reconnects += 1
            # A session that got current resets the backoff; one that never did grows it.
            attempt = 0 if self._current_at >= began else min(attempt + 1, 20)
            # Full jitter: spreads a fleet's reconnects after a Redis restart.
            await asyncio.sleep(random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt)))

    async def _session(self) -> None:
        """One subscription's life; always ends by raising."""
        pubsub, node_client = await self._conn.pubsub()
        try:
            await pubsub.subscribe(CHANNEL)
            await self._await_subscribed(pubsub)
            for part in self._parts:
                # Without a seq there is no telling the first event on the new subscription
                # from a later one: such a partition must be re-read.
                if part.last_seq is None:
                    part.positioned = False
            await self._verify_positions()
            self._connected = True
            tasks = [
                asyncio.create_task(self._read(pubsub), name="tokenward-listener-read"),
                asyncio.create_task(self._sync_loop(), name="tokenward-listener-sync"),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
                raise DeadConnection("listener task ended")
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await pubsub.aclose()
            if node_client is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await node_client.aclose()

    async def _await_subscribed(self, pubsub: Any) -> None:
        deadline = time.monotonic() + self.ping_timeout + self.ping_interval
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(timeout=0.2)
            if msg is not None and msg.get("type") == "subscribe":
                return
        raise DeadConnection("no subscription confirmation")

    async def _verify_positions(self) -> None:
        """After a (re)connect: is each position still in this Redis's history?

        A failover or a restart without AOF can lose the last writes the listener saw and
        then hand out their seqs again. The entry at ``last_xid`` must still exist with
        ``last_seq``; an older entry without ours means ours was lost (trimming removes the
        oldest first). Nothing at or before it: trimmed or expired, which catch-up handles.
        """
        checked = [
            (p, part) for p, part in enumerate(self._parts) if part.positioned and part.last_xid not in (None, "0-0")
        ]
        if not checked:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for p, part in checked:
                pipe.xrevrange(stream_key(p), max=part.last_xid, min="-", count=1)
            replies = await pipe.execute()
        for (p, part), top in zip(checked, replies, strict=True):
            if not top:
                continue
            xid, fields = top[0][0].decode(), top[0][1]
            try:
                seq = parse_event(fields.get(b"e", b""), xid).seq
            except UnsupportedEvent as exc:
                seq = exc.seq
            except EventFormatError:
                continue
            if xid != part.last_xid or seq != part.last_seq:
                log.warning(
                    "partition %d: position %s/%s is not in Redis any more; reloading", p, part.last_xid, part.last_seq
                )
                part.positioned = False

    # -- pub/sub path -------------------------------------------------------------

    async def _read(self, pubsub: Any) -> None:
        loop_time = time.monotonic
        ping_sent_at = loop_time()
        ping_outstanding = False
        await pubsub.ping(_PING_PAYLOAD)
        ping_outstanding = True
        while True:
            msg = await pubsub.get_message(timeout=min(0.25, self.ping_interval))
            now = loop_time()
            if msg is not None:
                kind = msg.get("type")
                if kind == "message":
                    self._on_message(msg["data"])
                elif kind == "pong":
                    ping_outstanding = False
                    if not any(p.seen_max > (p.last_seq or 0) for p in self._parts) and all(
                        p.positioned for p in self._parts
                    ):
                        self._mark_current(ping_sent_at)
                elif kind == "subscribe":
                    raise DeadConnection("the subscription was re-established underneath")
            if ping_outstanding and now - ping_sent_at > self.ping_timeout:
                raise DeadConnection(f"no PONG within {self.ping_timeout}s")
            if not ping_outstanding and now - ping_sent_at >= self.ping_interval:
                ping_sent_at = now
                await pubsub.ping(_PING_PAYLOAD)
                ping_outstanding = True

    def _on_message(self, data: bytes | str) -> None:
        try:
            event = parse_event(data)
        except UnsupportedEvent as exc:
            self._unsupported_event(exc)
            return
        except EventFormatError as exc:
            log.error("ignoring a malformed revocation event: %s", exc)
            return
        if event.p >= self.partitions:
            log.error("event for partition %d, but partitions=%d: check TOKENWARD_PARTITIONS", event.p, self.partitions)
            return
        if not self._offer(event):
            self._wake.set()

    def _offer(self, event: Event) -> bool:
        """Apply an event if it is the next one; False when it reveals a gap."""
        part = self._parts[event.p]
        if not part.positioned:
            # Being (re)loaded: the stream has it; wake the syncer to look again after.
            part.seen_max = max(part.seen_max, event.seq)
            return False
        if part.last_seq is not None and event.seq <= part.last_seq:
            if event.xid is not None and part.last_xid not in (None, "0-0") and _xid(event.xid) > _xid(part.last_xid):
                # seq and stream id grow together in one history: an older seq at a newer id
                # means Redis lost writes (a failover, a restart without AOF) and reused the
                # seqs. Only a reload is true.
                log.warning("partition %d: seq %d reused after %s; reloading", event.p, event.seq, part.last_xid)
                part.positioned = False
                return False
            return True  # a duplicate (pub/sub and the stream both delivered it)
        if part.last_seq is not None and event.seq != part.last_seq + 1:
            part.seen_max = max(part.seen_max, event.seq)
            return False
        self.cache.apply(event)
        part.last_seq = event.seq
        if event.xid is not None:
            part.last_xid = event.xid
        part.seen_max = max(part.seen_max, event.seq)
        self.applied += 1
        self._lag = max(0.0, time.time() - event.at / 1000)
        if self.on_apply is not None:
            self.on_apply(event)
        return True

    def _unsupported_event(self, exc: UnsupportedEvent) -> None:
        if self._unsupported is None:
            log.error("cannot apply a revocation event (%s): upgrade the Tokenward SDK", exc)
        self._unsupported = str(exc)
        if exc.p < self.partitions:
            # Keep the position so later events still apply; health stays false.
            part = self._parts[exc.p]
            if part.last_seq is None or exc.seq == part.last_seq + 1:
                part.last_seq = exc.seq

    def _mark_current(self, at: float) -> None:
        if self._unsupported is not None:
            return
        self._current_at = max(self._current_at, at)
        self._first_current.set()

    # -- stream path --------------------------------------------------------------

    async def _sync_loop(self) -> None:
        """Position every partition, then keep checking counters and filling gaps."""
        while True:
            started = time.monotonic()
            self._wake.clear()
            await self._check_all()
            if all(p.positioned and p.seen_max <= (p.last_seq or 0) for p in self._parts):
                self._mark_current(started)
            self.cache.sweep()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.check_interval)

    async def _check_all(self) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                pipe.get(seq_key(p))
                pipe.get(boot_key(p))
            replies = await pipe.execute()
        for p in range(self.partitions):
            raw, raw_boot = replies[2 * p], replies[2 * p + 1]
            part = self._parts[p]
            await self._observe_boot(p, raw_boot)
            if not part.positioned:
                await self._reload(p)
                continue
            counter = int(raw) if raw is not None else None
            behind = counter is not None and (part.last_seq is None or counter > part.last_seq)
            if behind or part.seen_max > (part.last_seq or 0):
                await self._catch_up(p, counter)
            elif counter is not None and part.last_seq is not None and counter < part.last_seq:
                # The counter went backwards: Redis lost data. Only a reload is true.
                await self._reload(p)

    async def _catch_up(self, p: int, counter: int | None, *, may_reload: bool = True) -> None:
        """Apply the stream after the partition's position; reload if it cannot fill the gap."""
        part = self._parts[p]
        self.catch_ups += 1
        key = stream_key(p)
        while True:
            start = f"({part.last_xid}" if part.last_xid else "-"
            entries = await self._client.xrange(key, min=start, max="+", count=self.batch)
            for raw_xid, fields in entries:
                xid = raw_xid.decode()
                try:
                    event = parse_event(fields.get(b"e", b""), xid)
                except UnsupportedEvent as exc:
                    self._unsupported_event(exc)
                    part.last_xid = xid
                    continue
                except EventFormatError as exc:
                    log.error("ignoring malformed stream entry %s: %s", xid, exc)
                    part.last_xid = xid
                    continue
                if not self._offer(event):
                    await self._gap(p, may_reload)
                    return
            if len(entries) < self.batch:
                break
        target = max(counter or 0, part.seen_max)
        missing = target > 0 if part.last_seq is None else part.last_seq < target
        if missing:
            await self._gap(p, may_reload)

    async def _gap(self, p: int, may_reload: bool) -> None:
        """The stream no longer holds the next event: only a full reload is true."""
        if may_reload:
            log.info("partition %d: the stream cannot fill the gap after seq %s; reloading", p, self._parts[p].last_seq)
            await self._reload(p)
        else:
            # Entries vanished between a reload's position read and its catch-up: redo it.
            self._parts[p].positioned = False
            self._wake.set()

    async def _reload(self, p: int) -> None:
        """Replace the partition's entries with a SCAN of its deny keys, then catch up."""
        part = self._parts[p]
        part.positioned = False
        self.reloads += 1
        # The position is read before the scan: anything written after it is in the
        # stream after that id, and re-applying an entry the scan already saw is harmless.
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.get(seq_key(p))
            pipe.xrevrange(stream_key(p), max="+", min="-", count=1)
            pipe.get(boot_key(p))
            raw_seq, top, raw_boot = await pipe.execute()
        await self._observe_boot(p, raw_boot, reload_on_change=False)
        entries = await self._scan(p)
        self.cache.replace_where(self._belongs(p), entries)
        part.last_seq = int(raw_seq) if raw_seq is not None else None
        # "0-0": everything in the stream after the read is newer than the snapshot.
        part.last_xid = top[0][0].decode() if top else "0-0"
        if part.last_seq is None:
            part.seen_max = 0
        part.positioned = True
        await self._catch_up(p, part.last_seq, may_reload=False)

    async def _observe_boot(self, p: int, raw: Any, *, reload_on_change: bool = True) -> None:
        """Record the partition's boot marker (``raw`` as read; None: missing, set it)."""
        if raw is None:
            marker = await self._ensure_boot(p)
        else:
            marker = int(raw)
        known = self.cache.boot(p)
        if known is not None and known != marker and known != _REFUSE_ALL:
            log.warning(
                "partition %d: boot marker changed from %d to %d, Redis was wiped; access tokens issued "
                "before %d are refused",
                p,
                known,
                marker,
                marker,
            )
            if reload_on_change:
                # Every entry the cache holds for the partition is gone from Redis: re-read it.
                self._parts[p].positioned = False
        self.cache.set_boot(p, marker, self.partitions)

    async def _ensure_boot(self, p: int) -> int:
        """SET NX the current epoch second then read it back, as the service does."""
        key = boot_key(p)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.set(key, int(time.time()), nx=True)
                pipe.get(key)
                created, stored = await pipe.execute()
        except ResponseError as exc:
            log.error("partition %d: no boot marker and it cannot be set (%s); refusing its tokens", p, exc)
            return _REFUSE_ALL
        if created:
            log.warning("partition %d: no boot marker, Redis was wiped; set it to %s", p, stored.decode())
        return int(stored)

    def _belongs(self, p: int) -> Callable[[Kind, str], bool]:
        partitions = self.partitions

        def belongs(kind: Kind, ident: str) -> bool:
            if partitions == 1:
                return True
            if kind == "sub":
                return partition_of_sub(ident, partitions) == p
            try:
                return partition_of_id(ident) == p
            except ValueError:
                return False

        return belongs

    async def _scan(self, p: int) -> list[tuple[Kind, str, int, int]]:
        """The partition's deny entries. On a cluster ``scan_iter`` walks every primary, so a
        slot being migrated is read on both sides; each GET/PTTL goes to the key's node."""
        out: list[tuple[Kind, str, int, int]] = []
        keys: list[bytes] = []
        async for key in self._client.scan_iter(match=deny_pattern(p), count=self.batch):
            keys.append(key)
            if len(keys) >= self.batch:
                out += await self._read_deny_keys(keys)
                keys = []
        if keys:
            out += await self._read_deny_keys(keys)
        return out

    async def _read_deny_keys(self, keys: list[bytes]) -> list[tuple[Kind, str, int, int]]:
        out: list[tuple[Kind, str, int, int]] = []
        async with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            values = await pipe.execute()
        now_ms = int(time.time() * 1000)
        for i, key in enumerate(keys):
            value, pttl = values[2 * i], values[2 * i + 1]
            parsed = parse_deny_key(key.decode())
            if parsed is None or value is None or pttl is None or int(pttl) < 0:
                continue
            _, kind, ident = parsed
            until = deny_until(now_ms, int(pttl))
            out.append((kind, ident, int(value) if kind == "sub" else 0, until))
        return out


def _xid(xid: str) -> tuple[int, int]:
    ms, _, seq = xid.partition("-")
    return int(ms), int(seq or 0)


__all__ = ["DeadConnection", "RevocationListener"]
