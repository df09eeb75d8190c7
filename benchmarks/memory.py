"""Figure 5: Redis bytes per session and per deny entry, from ``INFO memory`` deltas.

Everything goes through the real scripts on a fresh redis-server of our own: sessions
through create_session.lua (session hash + user index entry, each session its own user,
which is the costly case: one zset per user), rotations through rotate.lua, deny entries
through revoke.lua (the deny key plus its event in the partition's replay stream) and,
for comparison, bare deny keys written with SET PXAT.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from service.anomalies import SIGNALS_CHANNEL
from service.config import Settings
from service.store import EVENTS_CHANNEL, load_script_source
from service.tokens import RefreshToken, new_jti, new_secret, seal, secret_hash
from tests.support.redis_servers import RedisServer

from . import harness as h


def used(client: redis.Redis) -> int:
    """used_memory, after Redis has had a moment to settle."""
    time.sleep(0.2)
    return int(client.info("memory")["used_memory"])


def rotate_all(client: redis.Redis, tokens: list[RefreshToken], settings: Settings) -> list[RefreshToken]:
    """Rotate every session once through rotate.lua; the successors."""
    sha = client.script_load(load_script_source("rotate"))
    out: list[RefreshToken] = []
    batch = 2000
    for start in range(0, len(tokens), batch):
        pipe = client.pipeline(transaction=False)
        now = int(time.time() * 1000)
        part = tokens[start : start + batch]
        succ = []
        for tok in part:
            nxt = new_secret()
            succ.append(nxt)
            pipe.evalsha(
                sha, 5, f"tw:{{0}}:s:{tok.sid}", f"tw:{{0}}:ds:{tok.sid}", "tw:{0}:seq", "tw:{0}:ev", "tw:{0}:sg",
                now, tok.gen, tok.hash, h.bench_tag_key(tok.sid), secret_hash(nxt), seal(nxt, tok.secret),
                settings.refresh_grace * 1000, settings.refresh_grace_uses, "", "",
                now + settings.deny_ttl * 1000, settings.event_retention * 1000, EVENTS_CHANNEL, 0, tok.sid,
                # The device refreshes from where it logged in (the common case: nothing flagged).
                h.TYPICAL_DEVICE.ip, "203.0.113.0/24", h.TYPICAL_DEVICE.user_agent,
                settings.refresh_anomaly, settings.access_ttl, settings.refresh_burst, SIGNALS_CHANNEL,
            )  # fmt: skip
        for tok, nxt, res in zip(part, succ, pipe.execute(), strict=True):
            if int(res[0]) != 1:
                raise RuntimeError(f"rotation refused: {res}")
            out.append(RefreshToken.issue(tok.sid, int(res[1]), bytes(res[2]), nxt))
    return out


def measure(n: int, settings: Settings) -> dict[str, Any]:
    """Bytes per session (0, 1 and 10 rotations) and per deny entry, over ``n`` of each."""
    server = RedisServer().start()
    try:
        client = server.client()
        client.config_set("lazyfree-lazy-user-del", "no")
        base_s = used(client)
        raw = h.create_sessions(client, n, "mem-user-", settings)
        after_create = used(client)
        tokens = [t for t in (RefreshToken.parse(x) for x in raw) if t is not None]
        rotated = rotate_all(client, tokens, settings)
        after_1 = used(client)
        for _ in range(9):
            rotated = rotate_all(client, rotated, settings)
        after_10 = used(client)
        assert all(t.gen == 10 for t in rotated[:10])
        client.flushall()
        base = used(client)
        sha = client.script_load(load_script_source("revoke"))
        now = int(time.time() * 1000)
        for start in range(0, n, 5000):
            pipe = client.pipeline(transaction=False)
            for _ in range(start, min(start + 5000, n)):
                jti = new_jti(0)
                pipe.evalsha(
                    sha, 3, f"tw:{{0}}:dj:{jti}", "tw:{0}:seq", "tw:{0}:ev",
                    now, "jti", jti, 0, now + 600_000, "revoked", settings.event_retention * 1000, EVENTS_CHANNEL, 0,
                )  # fmt: skip
            pipe.execute()
        after_revoke = used(client)
        client.flushall()
        base2 = used(client)
        for start in range(0, n, 5000):
            pipe = client.pipeline(transaction=False)
            for _ in range(start, min(start + 5000, n)):
                pipe.set(f"tw:{{0}}:dj:{new_jti(0)}", 1, pxat=(now // 1000 + 600) * 1000)
            pipe.execute()
        after_keys = used(client)
        return {
            "n": n,
            "bytes": {
                "session (hash + user index entry), new": (after_create - base_s) / n,
                "session after 1 rotation": (after_1 - base_s) / n,
                "session after 10 rotations": (after_10 - base_s) / n,
                "deny entry via revoke.lua (key + replay-stream event)": (after_revoke - base) / n,
                "deny key alone (SET PXAT)": (after_keys - base2) / n,
            },
            "used_memory": {"empty": base_s, "sessions": after_create, "after_1": after_1, "after_10": after_10},
        }
    finally:
        server.close()
