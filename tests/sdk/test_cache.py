"""DenyCache: each kind matches exactly what it should, and entries drop at their expiry."""

from __future__ import annotations

import tracemalloc

from service.sdk.cache import DenyCache
from service.sdk.events import Event


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestDenyRule:
    def test_jti_denies_that_token_only(self) -> None:
        """A jti entry denies the token with that jti, whatever its sid, sub or iat."""
        clock = Clock()
        cache = DenyCache(clock)
        cache.deny_jti("00jti", until=int(clock.now) + 60)
        assert cache.is_denied("00jti", "00other-sid", "bob", 1)
        assert not cache.is_denied("00jti2", "00sid", "alice", int(clock.now))

    def test_sid_denies_every_token_of_the_session(self) -> None:
        """A sid entry denies any jti of that session and nothing of other sessions."""
        clock = Clock()
        cache = DenyCache(clock)
        cache.deny_sid("00sid", until=int(clock.now) + 60)
        assert cache.is_denied("00a", "00sid", "alice", int(clock.now) + 30)
        assert not cache.is_denied("00a", "00sid2", "alice", int(clock.now))

    def test_sub_cutoff_denies_iat_up_to_and_including_before(self) -> None:
        """Equal seconds deny: iat == before is denied, iat == before + 1 is not."""
        clock = Clock()
        cache = DenyCache(clock)
        before = int(clock.now)
        cache.cut_off("alice", before, until=before + 60)
        assert cache.is_denied("00a", "00s", "alice", before - 100)
        assert cache.is_denied("00a", "00s", "alice", before)
        assert not cache.is_denied("00a", "00s", "alice", before + 1)
        assert not cache.is_denied("00a", "00s", "bob", before)

    def test_later_cutoff_replaces_earlier(self) -> None:
        """The cut-off is overwritten, as the Redis key is."""
        clock = Clock()
        cache = DenyCache(clock)
        cache.cut_off("alice", 100, until=int(clock.now) + 60)
        cache.cut_off("alice", 200, until=int(clock.now) + 90)
        assert cache.is_denied("00a", "00s", "alice", 200)
        assert cache.entries() == {("sub", "alice"): 200}

    def test_apply_event(self) -> None:
        """Events of each kind land as the matching entry."""
        clock = Clock()
        cache = DenyCache(clock)
        u = int(clock.now) + 10
        for seq, (kind, ident, before) in enumerate([("jti", "00j", 0), ("sid", "00s", 0), ("sub", "bob", 5)], 1):
            cache.apply(Event(seq=seq, p=0, kind=kind, id=ident, before=before, until=u, at=0))  # type: ignore[arg-type]
        assert cache.entries() == {("jti", "00j"): u, ("sid", "00s"): u, ("sub", "bob"): 5}


class TestExpiry:
    def test_entries_drop_after_their_until_second(self) -> None:
        """Live through the until second (Redis expires within it), gone after."""
        clock = Clock()
        cache = DenyCache(clock)
        until = int(clock.now) + 10
        cache.deny_jti("00j", until)
        cache.deny_sid("00s", until)
        cache.cut_off("bob", int(clock.now), until)
        clock.now = until + 0.99
        assert cache.is_denied("00j", "x", "y", 0)
        assert cache.is_denied("x", "00s", "y", 0)
        assert cache.is_denied("x", "y", "bob", 0)
        clock.now = until + 1
        assert not cache.is_denied("00j", "00s", "bob", 0)
        assert len(cache) == 0  # lazily removed by the lookups

    def test_sweep_removes_without_lookups(self) -> None:
        """The periodic sweep frees expired entries nobody asks about; later ones stay."""
        clock = Clock()
        cache = DenyCache(clock)
        now = int(clock.now)
        for i in range(100):
            cache.deny_jti(f"00j{i}", now + (5 if i % 2 else 50))
        clock.now = now + 6
        assert cache.sweep() == 50
        assert len(cache) == 50

    def test_inserts_sweep_amortised(self) -> None:
        """Without any sweep call, inserting keeps the cache near the live count."""
        clock = Clock()
        cache = DenyCache(clock)
        for i in range(10_000):
            clock.now += 0.01
            cache.deny_jti(f"00j{i}", int(clock.now) + 2)
        # Only ~3 seconds' worth (300 entries) is live; expired ones got popped on insert.
        assert len(cache) < 600

    def test_renewed_entry_is_not_swept_by_its_old_expiry(self) -> None:
        """A cut-off renewed with a later until survives its first expiry."""
        clock = Clock()
        cache = DenyCache(clock)
        now = int(clock.now)
        cache.cut_off("bob", now, now + 5)
        cache.cut_off("bob", now + 1, now + 50)
        clock.now = now + 10
        cache.sweep()
        assert cache.is_denied("x", "y", "bob", now + 1)

    def test_replace_where_keeps_other_partitions(self) -> None:
        """A partition reload replaces only the entries it owns."""
        clock = Clock()
        cache = DenyCache(clock)
        u = int(clock.now) + 60
        cache.deny_jti("00old", u)
        cache.deny_jti("01keep", u)
        cache.replace_where(lambda kind, ident: ident.startswith("00"), [("jti", "00new", 0, u)])
        assert set(cache.entries()) == {("jti", "01keep"), ("jti", "00new")}


def test_memory_per_entry_is_bounded() -> None:
    """A sanity bound on bytes per entry (the benchmark prints the exact figure)."""
    cache = DenyCache()
    ids = [f"00{i:022d}" for i in range(20_000)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for ident in ids:
        cache.deny_jti(ident, 2_000_000_000)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert used / len(ids) < 400
