"""One reader of the revocation streams per process, feeding every SSE stream (``http/events.py``).

A blocking XREAD holds its connection for as long as it blocks, so a reader per SSE stream
would hold one Redis connection per stream, outside ``TOKENWARD_REDIS_MAX_CONNECTIONS``: 40
followers, 40 more connections. Here one task per read group (one on a single Redis, one per
partition on a cluster, where an XREAD must not span slots) reads on a dedicated connection
and hands each batch to every subscribed stream, whatever their number.

Each subscriber has a bounded queue. A subscriber that falls ``QUEUE_BATCHES`` batches behind
is dropped (its stream ends; the client resumes from its ``Last-Event-ID`` and catches up from
the stream in Redis), so a slow reader never holds the others back nor grows memory. A
subscriber may see events it already has (the fan-out reads from where it is, not from where
the subscriber is): it skips those by their seq. An error of a reader (Redis away, a trimmed
position) goes to every subscriber, which ends its stream as before; the next subscription
starts the readers again, from the streams' current end (each stream catches up by itself).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Final

from .errors import CursorExpired
from .events import Cursor, EventLog
from .sdk.events import Event

log = logging.getLogger(__name__)

#: Batches a subscriber may have waiting before it is dropped as too slow.
QUEUE_BATCHES: Final = 64
#: How long one XREAD blocks: the readers notice "no subscribers left" within this.
BLOCK_MS: Final = 2000


def _xid(xid: str) -> tuple[int, int]:
    ms, _, seq = xid.partition("-")
    return int(ms), int(seq or 0)


def unseen(batch: list[Event], cursor: Cursor) -> list[Event]:
    """The events of a fan-out batch after ``cursor``, in order; CursorExpired on a gap.

    Stream ids tell a repeat (at or before the cursor's) from a new event; a new event must
    carry the next seq, as ``EventLog`` requires of every read: anything else means events
    were trimmed or the counter restarted (a wiped Redis), and the client must reload.
    """
    out: list[Event] = []
    for event in batch:
        pos = cursor.positions[event.p]
        if _xid(event.xid or "0-0") <= _xid(pos.xid):
            continue
        if pos.seq and event.seq != pos.seq + 1:
            raise CursorExpired(
                f"partition {event.p}: seq {pos.seq + 1} is no longer in the stream; reload the snapshot"
            )
        out.append(event)
        cursor = cursor.after(event)
    return out


class SlowReader(Exception):
    """The subscriber fell too far behind and was dropped; it resumes from its last event id."""


@dataclass(eq=False)
class Subscription:
    """One stream's place in the fan-out: batches (or the error that ended them) arrive in ``queue``."""

    queue: asyncio.Queue[list[Event] | Exception] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_BATCHES + 1)
    )


class Fanout:
    """The process's readers of the event streams and the streams subscribed to them.

    The readers start with the first subscription and then keep reading (an XREAD per
    ``BLOCK_MS`` when nothing happens) until one fails or the process stops: stopping when
    the last stream leaves would race with the next one arriving.
    """

    def __init__(self, log_: EventLog) -> None:
        self._log = log_
        self._subscribers: set[Subscription] = set()
        #: The current readers (empty: none running, or they failed); ``_tasks``: every one not finished.
        self._readers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = asyncio.Lock()
        self._closing = False

    @property
    def subscribers(self) -> int:
        """Streams subscribed now."""
        return len(self._subscribers)

    async def subscribe(self) -> Subscription:
        """A new subscription; it receives every batch read after this call returns."""
        sub = Subscription()
        async with self._starting:
            self._subscribers.add(sub)
            if not self._readers:
                try:
                    cursor = await self._log.position()
                except BaseException:
                    self._subscribers.discard(sub)
                    raise
                self._readers = [
                    asyncio.create_task(self._read(group, cursor), name=f"sse-fanout-{group[0]}")
                    for group in self._log.read_groups()
                ]
                for task in self._readers:
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to ``sub`` (idempotent)."""
        self._subscribers.discard(sub)

    async def _read(self, partitions: tuple[int, ...], cursor: Any) -> None:
        client = self._log.dedicated_client(BLOCK_MS / 1000, partitions[0])
        try:
            while not self._closing:
                batch, cursor = await self._log.wait(client, cursor, BLOCK_MS, partitions=partitions)
                if batch:
                    self._deliver(batch)
        except Exception as exc:
            self._fail(exc)
        finally:
            if client is not self._log.store.client:
                await client.aclose()

    def _fail(self, exc: Exception) -> None:
        """A reader failed: stop its siblings, end every subscription; the next one starts afresh.

        No await here, so no subscription can slip in between and wait on readers that stopped.
        """
        current = asyncio.current_task()
        if current not in self._readers:
            return  # a sibling already failed and cancelled this generation
        for task in self._readers:
            if task is not current:
                task.cancel()
        self._readers = []
        log.warning("revocation fan-out stopped: %s: %s", type(exc).__name__, exc)
        for sub in list(self._subscribers):
            self._drop(sub, exc)

    def _deliver(self, batch: list[Event]) -> None:
        for sub in list(self._subscribers):
            if sub.queue.qsize() >= QUEUE_BATCHES:
                self._drop(sub, SlowReader(f"more than {QUEUE_BATCHES} batches behind"))
            else:
                sub.queue.put_nowait(batch)

    def _drop(self, sub: Subscription, reason: Exception) -> None:
        """End ``sub``: what it has not read is discarded (it resumes from its last id), then ``reason``."""
        self._subscribers.discard(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(reason)

    async def aclose(self) -> None:
        """Stop the readers (at shutdown): each after its current XREAD, at most ``BLOCK_MS``.

        Not by cancelling first: a cancelled blocking read does not always give up its
        connection at once.
        """
        self._closing = True
        self._subscribers.clear()
        self._readers = []
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=BLOCK_MS / 1000 + 1)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
