"""DenyCache: the resource server's in-memory copy of the deny entries.

The rule is the service's, applied to local data: a token is denied when its ``jti``
or its ``sid`` has a live entry, or when its ``sub`` has a cut-off and the token's
``iat`` is at or before the cut-off second (equal seconds deny: a cut-off means
"everything issued up to now").

Every entry carries ``until`` (epoch seconds, the whole second in which its Redis key
expires) and is dropped once the wall clock passes that second, so it never drops
earlier than Redis does and memory is bounded by what the TTLs keep alive. Expired
entries are removed lazily on lookup and by a sweep over a min-heap of expiries: a
few steps on every insert (amortised) plus :meth:`DenyCache.sweep`, which the listener
calls periodically. Checks are three dict look-ups, O(1). No I/O, no locks: use it
from one event loop.

Boot markers (:meth:`DenyCache.set_boot`): a token whose ``iat`` is before its
partition's marker is denied, as the service does, because a wiped Redis took every
deny entry with it. The token's partition is ``crc32(sub) % partitions``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable
from typing import Final

from .events import Event, Kind, partition_of_sub

_JTI: Final = 0
_SID: Final = 1
_SUB: Final = 2

# Amortised sweeping: each insert pops at most this many expired heap items, so the
# heap shrinks at least as fast as it grows once entries start expiring.
_SWEEP_PER_INSERT: Final = 2


class DenyCache:
    """jti, sid and sub cut-off entries, each dropped at its expiry."""

    __slots__ = ("_boot", "_clock", "_heap", "_jti", "_partitions", "_sid", "_sub")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        #: Wall clock (epoch seconds): expiries are absolute times shared with Redis.
        self._clock = clock
        self._jti: dict[str, int] = {}
        self._sid: dict[str, int] = {}
        self._sub: dict[str, tuple[int, int]] = {}
        self._heap: list[tuple[int, int, str]] = []
        #: partition -> boot marker (epoch s); tokens with ``iat`` before it are denied.
        self._boot: dict[int, int] = {}
        self._partitions = 1

    def __len__(self) -> int:
        return len(self._jti) + len(self._sid) + len(self._sub)

    def is_denied(self, jti: str, sid: str, sub: str, iat: int) -> bool:
        """Apply the deny rule to a token's claims."""
        if self._boot:
            p = 0 if self._partitions == 1 else partition_of_sub(sub, self._partitions)
            if iat < self._boot.get(p, 0):
                return True
        now = int(self._clock())
        until = self._jti.get(jti)
        if until is not None:
            if now <= until:
                return True
            del self._jti[jti]
        until = self._sid.get(sid)
        if until is not None:
            if now <= until:
                return True
            del self._sid[sid]
        cut = self._sub.get(sub)
        if cut is not None:
            if now <= cut[1]:
                return iat <= cut[0]
            del self._sub[sub]
        return False

    def set_boot(self, p: int, marker: int, partitions: int) -> None:
        """Record partition ``p``'s boot marker (of ``partitions``): older tokens are denied."""
        self._partitions = partitions
        self._boot[p] = marker

    def boot(self, p: int) -> int | None:
        """Partition ``p``'s boot marker as last recorded (None: never recorded)."""
        return self._boot.get(p)

    def deny_jti(self, jti: str, until: int) -> None:
        """Deny one access token until ``until`` (epoch s, inclusive)."""
        self._jti[jti] = until
        self._schedule(until, _JTI, jti)

    def deny_sid(self, sid: str, until: int) -> None:
        """Deny every token of a session until ``until``."""
        self._sid[sid] = until
        self._schedule(until, _SID, sid)

    def cut_off(self, sub: str, before: int, until: int) -> None:
        """Deny the user's tokens with ``iat <= before``; the entry lives until ``until``.

        A later cut-off replaces an earlier one, as the Redis key is overwritten.
        """
        self._sub[sub] = (before, until)
        self._schedule(until, _SUB, sub)

    def add(self, kind: Kind, ident: str, before: int, until: int) -> None:
        """Add an entry of any kind (``before`` matters for ``sub`` only)."""
        if kind == "jti":
            self.deny_jti(ident, until)
        elif kind == "sid":
            self.deny_sid(ident, until)
        else:
            self.cut_off(ident, before, until)

    def apply(self, event: Event) -> None:
        """Apply one revocation event."""
        self.add(event.kind, event.id, event.before, event.until)

    def replace_where(
        self, belongs: Callable[[Kind, str], bool], entries: Iterable[tuple[Kind, str, int, int]]
    ) -> None:
        """Drop every entry for which ``belongs(kind, id)`` holds, then add ``entries``.

        Used by a snapshot reload of one partition: entries of other partitions stay.
        O(size of the cache); reloads are rare.
        """
        for kind, table in (("jti", self._jti), ("sid", self._sid), ("sub", self._sub)):
            doomed = [ident for ident in table if belongs(kind, ident)]  # type: ignore[arg-type]
            for ident in doomed:
                del table[ident]
        self._heap = [item for item in self._heap if self._current(item)]
        heapq.heapify(self._heap)
        for kind, ident, before, until in entries:
            self.add(kind, ident, before, until)

    def sweep(self) -> int:
        """Remove every expired entry now; returns how many went."""
        return self._sweep(int(self._clock()), limit=None)

    def entries(self) -> dict[tuple[Kind, str], int]:
        """Live entries as ``{(kind, id): value}``: ``until`` for jti/sid, ``before`` for sub.

        The same values the Redis deny keys hold, so the two sets compare directly.
        """
        now = int(self._clock())
        out: dict[tuple[Kind, str], int] = {}
        out.update((("jti", k), u) for k, u in self._jti.items() if now <= u)
        out.update((("sid", k), u) for k, u in self._sid.items() if now <= u)
        out.update((("sub", k), c[0]) for k, c in self._sub.items() if now <= c[1])
        return out

    def _schedule(self, until: int, code: int, ident: str) -> None:
        heapq.heappush(self._heap, (until, code, ident))
        if self._heap[0][0] < until:
            self._sweep(int(self._clock()), limit=_SWEEP_PER_INSERT)

    def _current(self, item: tuple[int, int, str]) -> bool:
        """True when a heap item still describes the entry in its table (not replaced or gone)."""
        until, code, ident = item
        if code == _JTI:
            return self._jti.get(ident) == until
        if code == _SID:
            return self._sid.get(ident) == until
        cut = self._sub.get(ident)
        return cut is not None and cut[1] == until

    def _sweep(self, now: int, limit: int | None) -> int:
        removed = 0
        steps = 0
        heap = self._heap
        while heap and heap[0][0] < now and (limit is None or steps < limit):
            item = heapq.heappop(heap)
            steps += 1
            # A replaced entry left its old heap item behind: only the current one deletes.
            if self._current(item):
                code, ident = item[1], item[2]
                table: dict[str, int] | dict[str, tuple[int, int]] = (
                    self._jti if code == _JTI else self._sid if code == _SID else self._sub
                )
                del table[ident]
                removed += 1
        return removed


__all__ = ["DenyCache"]
