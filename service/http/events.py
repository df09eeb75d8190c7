"""Revocation events over HTTP (scope ``events``): a snapshot, and a Server-Sent Events feed.

``GET /v1/revocations``: every live deny entry plus the cursor to resume from.
``GET /v1/revocations?since=<cursor>``: the events after a cursor (410 ``reset`` when
they were trimmed). ``GET /v1/revocations/events``: SSE; ``Last-Event-ID`` (or
``?since=``) resumes. The formats are in ``docs/events.md``; Redis logic lives in
``service/events.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import orjson
from aiohttp import web

from .. import state
from ..errors import CursorExpired, InvalidRequest
from ..events import Cursor, EventLog
from ..sdk.events import WIRE_VERSION, Event
from . import auth, observe
from .errors import answer_exception

#: Seconds between SSE heartbeat comments when nothing happens (proxies drop idle streams).
HEARTBEAT_SECONDS: Final = 15.0
#: How long one XREAD blocks; short, so a vanished client is noticed soon after.
BLOCK_MS: Final = 2000
MAX_LIMIT: Final = 10_000


def _log(request: web.Request) -> EventLog:
    return EventLog(request.app[state.STORE], request.app[state.SETTINGS])


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(data), content_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def revocations(request: web.Request) -> web.Response:
    """GET /v1/revocations[?since=<cursor>&limit=N] (scope events): snapshot or events since."""
    auth.client(request, "events")
    log = _log(request)
    # Checked with or without since: a bad parameter is refused, never silently ignored.
    raw_limit = request.query.get("limit", "1000")
    # isascii: str.isdigit is true of "²", which int() refuses.
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    since = request.query.get("since")
    if since is None:
        entries, cursor, boot = await log.snapshot()
        return _json({"v": WIRE_VERSION, "cursor": cursor.encode(), "deny": entries, "boot": boot})
    # A trimmed cursor raises CursorExpired: 410 with code "reset" (the error table).
    events, cursor, more = await log.since(Cursor.parse(since, log.partitions), int(raw_limit))
    return _json(
        {
            "v": WIRE_VERSION,
            "cursor": cursor.encode(),
            "more": more,
            "events": [orjson.Fragment(e.to_json()) for e in events],
        }
    )


def _frame(event: Event, cursor: Cursor) -> bytes:
    return b"id: " + cursor.encode().encode() + b"\nevent: revocation\ndata: " + event.to_json() + b"\n\n"


async def _follow(
    request: web.Request,
    log: EventLog,
    partitions: tuple[int, ...],
    cursor: Cursor,
    queue: asyncio.Queue[list[Event] | Exception],
    stop: asyncio.Event,
) -> None:
    """XREAD ``partitions``' streams after ``cursor`` until cancelled; batches (or the error) go to ``queue``."""
    client = log.dedicated_client(BLOCK_MS / 1000, partitions[0])
    try:
        while not stop.is_set():
            batch, cursor = await log.wait(client, cursor, BLOCK_MS, partitions=partitions)
            if batch and not stop.is_set():
                await queue.put(batch)
    except Exception as exc:
        await queue.put(exc)
    finally:
        if client is not request.app[state.STORE].client:
            await client.aclose()


async def events(request: web.Request) -> web.StreamResponse:
    """GET /v1/revocations/events (scope events): the SSE feed; resumes from Last-Event-ID."""
    auth.client(request, "events")
    log = _log(request)
    raw = request.headers.get("Last-Event-ID") or request.query.get("since")
    cursor = Cursor.parse(raw, log.partitions) if raw else await log.position()
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    observe.tag(request, resp.headers)
    await resp.prepare(request)
    try:
        # The current position first, so a client that connected without one can resume.
        await resp.write(b"retry: 1000\nid: " + cursor.encode().encode() + b"\nevent: ready\ndata: {}\n\n")
        more = True
        while more:
            batch, cursor_after, more = await log.since(cursor, 1000)
            for event in batch:
                cursor = cursor.after(event)
                await resp.write(_frame(event, cursor))
            cursor = cursor_after
        # One blocking reader per group of partitions (one per partition on a cluster, where
        # an XREAD must not span slots), each on its own connection, feeding one queue; a
        # small queue keeps the readers from running ahead of a slow client.
        queue: asyncio.Queue[list[Event] | Exception] = asyncio.Queue(maxsize=16)
        stop = asyncio.Event()
        readers = [
            asyncio.create_task(_follow(request, log, group, cursor, queue, stop), name=f"sse-xread-{group[0]}")
            for group in log.read_groups()
        ]
        try:
            beat = time.monotonic()
            while request.transport is not None and not request.transport.is_closing():
                try:
                    item = await asyncio.wait_for(queue.get(), BLOCK_MS / 1000)
                except TimeoutError:
                    item = []
                if isinstance(item, Exception):
                    raise item
                for event in item:
                    cursor = cursor.after(event)
                    await resp.write(_frame(event, cursor))
                if item:
                    beat = time.monotonic()
                elif time.monotonic() - beat >= HEARTBEAT_SECONDS:
                    await resp.write(b": heartbeat\n\n")
                    beat = time.monotonic()
        finally:
            # Readers stop after their current XREAD (at most BLOCK_MS); a cancelled blocking
            # read does not always give up its connection at once.
            stop.set()
            _, pending = await asyncio.wait(readers, timeout=BLOCK_MS / 1000 + 1)
            for task in pending:
                task.cancel()
    except CursorExpired as exc:
        detail = orjson.dumps({"reason": f"{exc}; reload the snapshot"})
        await resp.write(b"event: reset\ndata: " + detail + b"\n\n")
    except ConnectionResetError:
        # The client went away mid-write: nothing left to say.
        pass
    except Exception as exc:
        # The 200 and part of the stream are already out: an error answer now would be a
        # second response written into the body. The error is logged as the error table logs
        # it (its answer is dropped) and the stream ends cleanly; the client reconnects after
        # ``retry`` and resumes from its Last-Event-ID.
        answer_exception(request, exc)
    return resp
