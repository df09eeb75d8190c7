"""The revocation event log, read over HTTP by resource servers that cannot reach Redis.

Redis holds, per partition, a counter ``tw:{p}:seq`` and a stream ``tw:{p}:ev`` (see
``store.py``); the wire schema is the SDK's (``service.sdk.events``; the server imports
the SDK, never the reverse) and ``docs/events.md`` is the contract.

Cursor. A position in every partition's stream, written
``1.<p>_<xid>_<seq>[.<p>_<xid>_<seq>...]``: the format version, then for each partition
the last stream entry id seen and its seq (``0-0`` and ``0`` when the stream was empty).
It is URL-safe and is what SSE sends as ``id:``, so ``Last-Event-ID`` resumes. A cursor
whose next event is no longer in the stream (the seq after it was trimmed, or the
counter restarted) is expired: the client must reload the snapshot.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from .config import Settings
from .errors import CursorExpired, InvalidRequest
from .sdk.events import (
    Event,
    EventFormatError,
    deny_pattern,
    deny_until,
    parse_deny_key,
    parse_event,
    seq_key,
    stream_key,
)
from .store import Store

CURSOR_VERSION: Final = "1"
# Canonical decimals only (no sign, no leading zero), as ``encode`` writes them: a cursor
# is read back exactly as it was written, so two spellings never name one position.
_NUMBER: Final = r"(0|[1-9][0-9]{0,19})"
_POSITION_RE: Final = re.compile(rf"{_NUMBER}_({_NUMBER}-{_NUMBER})_{_NUMBER}")
# Both halves of a Redis stream id are unsigned 64-bit and the seq counter (INCR) is signed
# 64-bit; Redis refuses anything larger ("Invalid stream ID"), which must be the caller's
# 400, never our 500.
_MAX_ID_PART: Final = 2**64 - 1
_MAX_SEQ: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Position:
    """The last stream entry seen in one partition, and its seq (0: none yet)."""

    xid: str = "0-0"
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position per partition; the text form is the SSE id."""

    positions: tuple[Position, ...]

    def encode(self) -> str:
        """``1.<p>_<xid>_<seq>...``."""
        parts = (f"{p}_{pos.xid}_{pos.seq}" for p, pos in enumerate(self.positions))
        return ".".join((CURSOR_VERSION, *parts))

    def after(self, event: Event) -> Cursor:
        """The cursor once ``event`` has been delivered."""
        positions = list(self.positions)
        positions[event.p] = Position(event.xid or positions[event.p].xid, event.seq)
        return replace(self, positions=tuple(positions))

    @classmethod
    def parse(cls, raw: str, partitions: int) -> Cursor:
        """Parse a cursor exactly as ``encode`` writes it; InvalidRequest (400) for anything
        malformed, out of Redis's range, or for another number of partitions."""
        version, _, rest = raw.partition(".")
        if version != CURSOR_VERSION or not rest:
            raise InvalidRequest("unknown cursor format")
        positions: list[Position] = []
        for item in rest.split("."):
            m = _POSITION_RE.fullmatch(item)
            if m is None:
                raise InvalidRequest("malformed cursor")
            ms, sub, seq = int(m[3]), int(m[4]), int(m[5])
            # The largest id itself is out too: nothing can follow it, and Redis refuses it as
            # the exclusive start of XRANGE.
            if max(ms, sub) > _MAX_ID_PART or (ms, sub) == (_MAX_ID_PART, _MAX_ID_PART) or seq > _MAX_SEQ:
                raise InvalidRequest("the cursor is out of range")
            if int(m[1]) != len(positions):
                raise InvalidRequest("the cursor does not match this deployment's partitions")
            positions.append(Position(m[2], seq))
        if len(positions) != partitions:
            raise InvalidRequest("the cursor does not match this deployment's partitions")
        return cls(tuple(positions))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class EventLog:
    """Snapshots, positions and reads of the per-partition streams."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.partitions = settings.partitions

    async def position(self) -> Cursor:
        """The current end of every stream (counter and newest entry read in one MULTI)."""
        out = []
        for p in range(self.partitions):
            async with self.store.client.pipeline(transaction=True) as pipe:
                pipe.get(seq_key(p))
                pipe.xrevrange(stream_key(p), max="+", min="-", count=1)
                raw_seq, top = await pipe.execute()
            # An empty stream with a live counter: the next event is seq+1 at any xid.
            out.append(Position(_text(top[0][0]) if top else "0-0", int(raw_seq) if raw_seq is not None else 0))
        return Cursor(tuple(out))

    async def snapshot(self) -> tuple[list[dict[str, Any]], Cursor, list[int]]:
        """Every live deny entry, the cursor to resume events from, and each partition's boot marker.

        The cursor is read first: what is written during the scan is also in the stream
        after it, and applying an entry twice is harmless. The boot markers are read last
        (set if missing, as every check does): a wipe during the scan then shows as the
        new marker, which denies every token the lost entries covered.
        """
        cursor = await self.position()
        client = self.store.client
        entries: list[dict[str, Any]] = []
        for p in range(self.partitions):
            # scan_iter walks every primary on a cluster; each GET/PTTL goes to its key's node.
            keys: list[Any] = []
            async for key in client.scan_iter(match=deny_pattern(p), count=1000):
                keys.append(key)
                if len(keys) >= 1000:
                    entries += await self._read_deny_keys(keys)
                    keys = []
            if keys:
                entries += await self._read_deny_keys(keys)
        boot = [await self.store.ensure_boot(p) for p in range(self.partitions)]
        return entries, cursor, boot

    async def _read_deny_keys(self, keys: list[Any]) -> list[dict[str, Any]]:
        async with self.store.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            values = await pipe.execute()
        now_ms = int(time.time() * 1000)
        out: list[dict[str, Any]] = []
        for i, key in enumerate(keys):
            value, pttl = values[2 * i], values[2 * i + 1]
            parsed = parse_deny_key(_text(key))
            if parsed is None or value is None or pttl is None or int(pttl) < 0:
                continue
            _, kind, ident = parsed
            until = deny_until(now_ms, int(pttl))
            before = int(value) if kind == "sub" else 0
            out.append({"kind": kind, "id": ident, "before": before, "until": until})
        return out

    async def since(self, cursor: Cursor, limit: int = 1000) -> tuple[list[Event], Cursor, bool]:
        """Events after ``cursor`` (at most ``limit`` per partition), the new cursor, and whether more wait.

        Raises CursorExpired when the stream no longer holds the event after the cursor.
        """
        events: list[Event] = []
        more = False
        for p, pos in enumerate(cursor.positions):
            async with self.store.client.pipeline(transaction=True) as pipe:
                pipe.xrange(stream_key(p), min=f"({pos.xid}", max="+", count=limit)
                pipe.get(seq_key(p))
                entries, raw_counter = await pipe.execute()
            if raw_counter is None and pos.seq > 0:
                # The counter lives as long as the stream: the log this cursor points into is gone,
                # wiped (the boot marker changed: only the snapshot brings it) or quiet past its
                # retention (a reload then costs one snapshot and misses nothing).
                raise CursorExpired(f"partition {p}: the event log after seq {pos.seq} is gone; reload the snapshot")
            batch = self._continuous(p, pos, entries)
            if len(entries) >= limit:
                more = True
            else:
                last = batch[-1].seq if batch else pos.seq
                if raw_counter is not None and int(raw_counter) > last:
                    raise CursorExpired(f"partition {p}: events after seq {last} were trimmed; reload the snapshot")
            events.extend(batch)
            for event in batch:
                cursor = cursor.after(event)
        events.sort(key=lambda e: e.at)
        return events, cursor, more

    def read_groups(self) -> list[tuple[int, ...]]:
        """Partitions whose streams one blocking XREAD may name together.

        A cluster refuses multi-key commands across slots (CROSSSLOT), and every partition
        is its own slot: one XREAD per partition there. Elsewhere one XREAD covers all.
        """
        if self.store.kind == "cluster":
            return [(p,) for p in range(self.partitions)]
        return [tuple(range(self.partitions))]

    async def wait(
        self,
        client: Any,
        cursor: Cursor,
        block_ms: int,
        count: int = 1000,
        partitions: tuple[int, ...] | None = None,
    ) -> tuple[list[Event], Cursor]:
        """Block (on ``client``, a dedicated connection) until events after ``cursor`` arrive, or ``block_ms``.

        ``partitions`` (default: all) are the streams read; on a cluster name one (see ``read_groups``).
        """
        names = range(len(cursor.positions)) if partitions is None else partitions
        streams = {stream_key(p): cursor.positions[p].xid for p in names}
        reply = await client.xread(streams, count=count, block=block_ms)
        events: list[Event] = []
        for key, entries in reply or []:
            name = _text(key)
            p = int(name[name.index("{") + 1 : name.index("}")])
            batch = self._continuous(p, cursor.positions[p], entries)
            for event in batch:
                cursor = cursor.after(event)
            events.extend(batch)
        return events, cursor

    def dedicated_client(self, block_seconds: float, partition: int = 0) -> Any:
        """A one-connection client for blocking reads of ``partition``'s stream (on a cluster,
        to the node that owns its slot; elsewhere, good for every partition), so they never
        hold the shared pool. Its socket timeout outlasts the block; the embedded store has no
        sockets and is shared.
        """
        client = self.store.client
        timeout = block_seconds + 5
        if self.store.kind == "embedded":
            return client
        if self.store.kind == "cluster":
            node = client.get_node_from_key(stream_key(partition))
            kwargs = {**node.connection_kwargs, "socket_timeout": timeout}
            pool = aioredis.ConnectionPool(connection_class=node.connection_class, max_connections=1, **kwargs)
        elif self.store.kind == "sentinel":
            # A Sentinel pool asks the sentinels for the primary on connect, as the shared one does.
            shared = client.connection_pool
            kwargs = {**shared.connection_kwargs, "socket_timeout": timeout}
            kwargs.pop("connection_pool", None)  # the new pool puts itself there
            pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
                shared.service_name,
                shared.sentinel_manager,
                connection_class=shared.connection_class,
                max_connections=1,
                **kwargs,
            )
        else:
            shared = client.connection_pool
            kwargs = {**shared.connection_kwargs, "socket_timeout": timeout}
            pool = aioredis.ConnectionPool(connection_class=shared.connection_class, max_connections=1, **kwargs)
        # from_pool: the client owns the pool, so aclose() closes its connection too.
        return aioredis.Redis.from_pool(pool)

    @staticmethod
    def _continuous(p: int, pos: Position, entries: Any) -> list[Event]:
        """Parse stream entries, requiring each seq to follow the previous one."""
        out: list[Event] = []
        expected = pos.seq + 1 if pos.seq else None
        for raw_xid, fields in entries or []:
            xid = _text(raw_xid)
            try:
                event = parse_event(fields.get(b"e", b""), xid)
            except EventFormatError:
                # The server writes only versions it reads itself: an unreadable entry is
                # corruption, and the seq check on the next one says whether it mattered.
                continue
            if expected is not None and event.seq != expected:
                raise CursorExpired(f"partition {p}: seq {expected} is no longer in the stream; reload the snapshot")
            expected = event.seq + 1
            out.append(event)
        return out
