"""A TCP proxy on loopback that delays or stalls traffic to Redis, and counts connections.

It runs its own event loop in a thread, so the test's HTTP load cannot slow it down and a
stalled proxy never blocks the test. Each chunk read is forwarded ``latency`` seconds
after it arrived (order kept, pipelining kept: a delay, not a bandwidth limit); while
stalled nothing is forwarded in either direction, but connections are accepted and kept
open, which is what a hung Redis or a dead network path looks like to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Self


class LatencyProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port>."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.latency = 0.0
        #: Connections open right now, the most ever open at once, and accepted in total.
        self.open = 0
        self.peak = 0
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stall(self) -> None:
        """Forward nothing from now on (connections stay open and are still accepted)."""
        self._call(lambda: self._event().clear())

    def resume(self) -> None:
        """Forward again, delivering what was held back."""
        self._call(lambda: self._event().set())

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.open

    def close(self) -> None:
        async def stop() -> None:
            for writer in list(self._writers):
                writer.close()
            if self._server is not None:
                self._server.close()
            self._event().set()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, fn: object) -> None:
        async def run() -> None:
            fn()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _event(self) -> asyncio.Event:
        assert self._flowing is not None
        return self._flowing

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Counted from the client's side: open from accept until the client closes (or the
        # connection fails), so a client that replaces a closed connection is not counted twice
        # while the proxy is still tearing down the upstream half.
        with self._lock:
            self.accepted += 1
            self.open += 1
            self.peak = max(self.peak, self.open)
        closed = False

        def client_gone() -> None:
            nonlocal closed
            if not closed:
                closed = True
                with self._lock:
                    self.open -= 1

        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            self._writers.update((writer, up_writer))
            await asyncio.gather(self._pipe(reader, up_writer, client_gone), self._pipe(up_reader, writer))
        finally:
            client_gone()
            writer.close()

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, on_eof: Callable[[], None] | None = None
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                await asyncio.sleep(max(due - time.monotonic(), 0))
                await self._event().wait()
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(deliver())
        try:
            while data := await src.read(65536):
                queue.put_nowait((time.monotonic() + self.latency, data))
            if on_eof is not None:
                on_eof()
            if self._event().is_set():  # flush what is in flight; when stalled it is lost with the peer
                queue.put_nowait((0.0, b""))
                await sender
        except (OSError, asyncio.IncompleteReadError):
            if on_eof is not None:
                on_eof()
        finally:
            sender.cancel()
            with contextlib.suppress(Exception):
                dst.close()
            self._writers.discard(dst)
