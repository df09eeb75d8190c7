"""Cached deny checks: the service answers from its own events-fed cache, read-your-writes kept.

Strict mode asks Redis for the three deny entries of every token. Cached mode keeps the
SDK's ``DenyCache``, fed by a ``RevocationListener``, and before it answers it makes sure
the cache holds every revocation that completed before the request arrived:

1. a request for partition ``p`` joins the next read of ``tw:{p}:seq`` that has not been
   sent yet (one GET serves every request that arrived before it left);
2. that counter is at least the seq of any revocation acknowledged before the request
   arrived, because the counter and the deny entry are written in one script;
3. the request waits until the listener has applied that seq, then asks the cache.

The same MGET reads the partition's boot marker (``store``), so a wiped store is noticed
by the very next check, as in strict mode: the cache may still hold the lost deny
entries, but a service restarted after the wipe would not.

So a revoke that returned on any replica is refused by every replica, as in strict
mode, while under load one Redis round trip is shared by all concurrent requests. If the
listener is unhealthy or does not catch up within ``CATCH_UP``, the request falls back
to the strict check: the cache can only ever save round trips, never change answers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from .config import Settings
from .metrics import Metrics
from .revocation import Revocations
from .sdk import DenyCache, RevocationListener
from .store import Store
from .tokens import AccessClaims

CATCH_UP: Final = 0.05  # seconds to wait for the listener before asking Redis instead


class _CounterReads:
    """Coalesces reads of one partition's event counter and boot marker: at most one waiting, one in flight.

    Each waiter has a future of its own, so a request that is cancelled (its client went
    away) cancels only itself; one shared future behind ``asyncio.shield`` would cost every
    request an extra future and an extra trip through the loop.
    """

    def __init__(self, client: Any, key: str, boot_key: str) -> None:
        self._client = client
        self._key = key
        self._boot_key = boot_key
        self._waiting: list[asyncio.Future[tuple[int, int | None]]] | None = None
        self._sending: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def read(self) -> tuple[int, int | None]:
        """The counter and the boot marker (None: missing), read after this call began."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, int | None]] = loop.create_future()
        if self._waiting is None:
            self._waiting = [future]
            task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        else:
            self._waiting.append(future)
        return await future

    async def _send(self) -> None:
        await asyncio.sleep(0)  # let requests already queued on the loop join this read
        waiting, self._waiting = self._waiting or [], None  # later arrivals need a read that leaves after them
        try:
            value, boot = await self._client.mget(self._key, self._boot_key)
        except Exception as exc:
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)
        else:
            result = (int(value) if value is not None else 0, int(boot) if boot is not None else None)
            for future in waiting:
                if not future.done():
                    future.set_result(result)


class CachedRevocations(Revocations):
    """``Revocations`` whose deny check is answered from the events-fed cache when it is fresh."""

    def __init__(
        self, store: Store, settings: Settings, listener: RevocationListener, *, metrics: Metrics | None = None
    ) -> None:
        super().__init__(store, settings, metrics=metrics)
        self.listener = listener
        self.cache: DenyCache = listener.cache
        self._reads = [
            _CounterReads(store.client, store.keys.seq(p), store.keys.boot(p)) for p in range(settings.partitions)
        ]
        #: How many checks fell back to Redis (for metrics and tests).
        self.fallbacks = 0

    async def is_denied(self, claims: AccessClaims) -> bool:
        """The same answer as the strict check, from the cache when it is provably current."""
        p = self.keys.partition_of_sub(claims.sub)
        counter, boot = await self._reads[p].read()
        if boot is None:
            boot = await self.store.ensure_boot(p)
        if claims.iat < boot:
            return True
        if self.listener.healthy and (self._applied(p, counter) or await self._catch_up(p, counter)):
            return self.cache.is_denied(claims.jti, claims.sid, claims.sub, claims.iat)
        self.fallbacks += 1
        return await super().is_denied(claims)

    def _applied(self, p: int, counter: int) -> bool:
        applied = self.listener.last_seq.get(p)
        return counter == 0 or (applied is not None and applied >= counter)

    async def _catch_up(self, p: int, counter: int) -> bool:
        """Wait (at most ``CATCH_UP``) for the listener to apply ``counter``; the common case never gets here."""
        deadline = time.monotonic() + CATCH_UP
        while not self._applied(p, counter):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.001)
        return True
