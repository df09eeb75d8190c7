"""Rate limits shared by every replica: GCRA buckets in Redis (``lua/ratelimit.lua``).

A limit is a :class:`~service.config.Rate` (requests per second, burst) on one identity of
one kind (client address, client id, refresh-token family, failed authentications per
address); which limits a request meets is the HTTP layer's choice (``http/limits.py``).
The keys a request charges go to Redis in one script call per partition they fall in
(always one call with one partition), concurrently; within a call they are all or nothing.

A refused key is also remembered in this process until its wait is over, so a flood that
is already being refused costs no Redis round trip, and a throttled address is refused
before its credentials are even checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from .config import Rate
from .errors import RateLimited
from .store import Store

ADDRESS: Final = "a"
CLIENT: Final = "c"
FAMILY: Final = "f"
AUTH_FAILURES: Final = "x"
# Remembered refusals per process: bounded, so a flood from many addresses cannot grow it.
BOX_SIZE: Final = 10_000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Hit:
    """One limit a request meets: ``cost`` 1 charges it, 0 only checks that one more would pass."""

    kind: str
    ident: str
    rate: Rate
    cost: int = 1


def address_ident(address: IPAddress) -> str:
    """The identity an address is limited under: IPv4 as is, IPv6 per /64.

    One IPv6 subscriber usually holds a whole /64, so per-address IPv6 limits would be free
    to escape.
    """
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def interval_ms(rate: Rate) -> int:
    """GCRA's emission interval: milliseconds between requests at the sustained rate."""
    return max(1, round(1000 / rate.per_second))


class RateLimiter:
    """Charges hits against the shared buckets; raises RateLimited when one is over."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._box: dict[str, float] = {}

    def _key(self, hit: Hit) -> tuple[int, str]:
        keys = self._store.keys
        p = keys.partition_of_limit(hit.kind, hit.ident)
        return p, keys.ratelimit(p, hit.kind, hit.ident)

    def known_wait(self, hits: Sequence[Hit]) -> int:
        """Seconds left when this process already saw one of the hits refused, else 0 (no Redis)."""
        now = self._clock()
        worst = 0.0
        for hit in hits:
            if not hit.rate.enabled:
                continue
            key = self._key(hit)[1]
            until = self._box.get(key)
            if until is None:
                continue
            if until <= now:
                del self._box[key]
            else:
                worst = max(worst, until - now)
        return max(1, math.ceil(worst)) if worst else 0

    async def charge(self, hits: Sequence[Hit]) -> None:
        """Charge every enabled hit, or none of those sharing a partition; RateLimited if one is over."""
        live = [h for h in hits if h.rate.enabled]
        if not live:
            return
        wait = self.known_wait(live)
        if wait:
            raise RateLimited(wait)
        groups: dict[int, list[tuple[str, Hit]]] = {}
        for hit in live:
            p, key = self._key(hit)
            groups.setdefault(p, []).append((key, hit))
        calls = [self._call(group) for group in groups.values()]
        # return_exceptions: a failing partition must not leave the others' errors unretrieved.
        results = await asyncio.gather(*calls, return_exceptions=True)
        waits: dict[str, int] = {}
        for result in results:
            if isinstance(result, BaseException):
                raise result
            waits.update(result)
        worst = max(waits.values())
        if worst > 0:
            now = self._clock()
            self._remember({k: now + w / 1000 for k, w in waits.items() if w > 0})
            raise RateLimited(max(1, math.ceil(worst / 1000)))

    async def _call(self, group: list[tuple[str, Hit]]) -> dict[str, int]:
        args: list[int] = []
        for _, hit in group:
            args += [interval_ms(hit.rate), hit.rate.burst, hit.cost]
        keys = [key for key, _ in group]
        waits = await self._store.scripts.ratelimit(keys=keys, args=args)
        return {key: int(w) for key, w in zip(keys, waits, strict=True)}

    def _remember(self, refused: dict[str, float]) -> None:
        if len(self._box) + len(refused) > BOX_SIZE:
            now = self._clock()
            self._box = {k: v for k, v in self._box.items() if v > now}
            while self._box and len(self._box) + len(refused) > BOX_SIZE:
                del self._box[next(iter(self._box))]
        self._box.update(refused)
