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
from ..fanout import SlowReader, unseen
from ..sdk.events import WIRE_VERSION, Event
from . import auth, observe, parsing
from .errors import answer_exception

#: Seconds between SSE heartbeat comments when nothing happens (proxies drop idle streams).
HEARTBEAT_SECONDS: Final = 15.0
#: How long a stream waits for a batch before it looks at its client again (gone? heartbeat due?).
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
    await auth.client(request, "events")
    log = _log(request)
    # Checked with or without since: a bad parameter is refused, never silently ignored.
    raw_limit = parsing.query(request, "limit")
    raw_limit = "1000" if raw_limit is None else raw_limit
    # isascii: str.isdigit is true of "²", which int() refuses.
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
    since = parsing.query(request, "since")
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


async def events(request: web.Request) -> web.StreamResponse:
    """GET /v1/revocations/events (scope events): the SSE feed; resumes from Last-Event-ID."""
    await auth.client(request, "events")
    log = _log(request)
    raw = request.headers.get("Last-Event-ID") or parsing.query(request, "since")
    cursor = Cursor.parse(raw, log.partitions) if raw else await log.position()
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if request.method == "HEAD":
        # aiohttp drops the body of a Response to HEAD, not what a StreamResponse writes: the
        # stream went out and held the connection, and a request pipelined behind it waited forever.
        return web.Response(headers=headers)
    resp = web.StreamResponse(headers=headers)
    observe.tag(request, resp.headers)
    # The process's one reader of the streams (``fanout.py``), whatever the number of streams.
    # Subscribed before the catch-up below reads Redis, so no event falls between the two;
    # one both see is skipped by its stream id.
    fanout = request.app[state.FANOUT]
    subscription = await fanout.subscribe()
    try:
        await resp.prepare(request)
        # The current position first, so a client that connected without one can resume.
        await resp.write(b"retry: 1000\nid: " + cursor.encode().encode() + b"\nevent: ready\ndata: {}\n\n")
        more = True
        while more:
            batch, cursor_after, more = await log.since(cursor, 1000)
            for event in batch:
                cursor = cursor.after(event)
                await resp.write(_frame(event, cursor))
            cursor = cursor_after
        beat = time.monotonic()
        while request.transport is not None and not request.transport.is_closing():
            try:
                item = await asyncio.wait_for(subscription.queue.get(), BLOCK_MS / 1000)
            except TimeoutError:
                item = []
            if isinstance(item, SlowReader):
                break  # the client resumes from its last id and catches up from Redis
            if isinstance(item, Exception):
                raise item
            fresh = unseen(item, cursor)
            for event in fresh:
                cursor = cursor.after(event)
                await resp.write(_frame(event, cursor))
            if fresh:
                beat = time.monotonic()
            elif time.monotonic() - beat >= HEARTBEAT_SECONDS:
                await resp.write(b": heartbeat\n\n")
                beat = time.monotonic()
    except CursorExpired as exc:
        # The exception's text already says to reload the snapshot.
        detail = orjson.dumps({"reason": str(exc)})
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
    finally:
        fanout.unsubscribe(subscription)
    return resp
