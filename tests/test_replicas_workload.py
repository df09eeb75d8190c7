"""Three service processes on one Redis under a mixed workload, watched by SDK listeners."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from service.keys import KeyRing
from service.sdk import DenyCache, Event, RevocationListener
from tests.conftest import CLIENT_SECRETS, basic
from tests.support.processes import ServiceProcess, write_config
from tests.support.redis_servers import RedisServer


async def test_mixed_workload_across_three_replicas(tmp_path: Path, keyring: KeyRing) -> None:
    """Rotation stays single-use across replicas, a revoke on one is refused by the others at
    once, and every listener sees exactly one event per revocation."""
    redis = RedisServer().start()
    env = {**write_config(tmp_path, keyring, CLIENT_SECRETS), "TOKENWARD_REDIS_URL": redis.url}
    procs = [ServiceProcess(env) for _ in range(3)]
    seen: list[Counter[int]] = [Counter() for _ in range(3)]

    def counter(i: int) -> Any:
        def on_apply(event: Event) -> None:
            seen[i][event.seq] += 1

        return on_apply

    listeners = [RevocationListener(redis.url, DenyCache(), on_apply=counter(i)) for i in range(3)]
    try:
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs))
        for listener in listeners:
            await listener.start()
        revocations = 0
        rng = random.Random(7)
        async with aiohttp.ClientSession() as http:

            async def call(method: str, path: str, **kw: Any) -> tuple[int, Any]:
                proc = rng.choice(procs)
                async with http.request(method, proc.url + path, **kw) as resp:
                    body = await resp.read()
                    return resp.status, body

            for n in range(60):
                status, body = await call("POST", "/v1/sessions", json={"sub": f"mix{n % 7}"}, headers=basic("login"))
                assert status == 201
                s = orjson.loads(body)
                # Single-use rotation across replicas: the same token, three replicas at once.
                results = await asyncio.gather(
                    *(
                        call(
                            "POST",
                            "/oauth/token",
                            data={"grant_type": "refresh_token", "refresh_token": s["refresh_token"]},
                        )
                        for _ in range(3)
                    )
                )
                successors = {orjson.loads(b)["refresh_token"] for st, b in results if st == 200}
                assert len(successors) == 1
                action = n % 4
                if action == 0:
                    assert (await call("POST", "/oauth/revoke", data={"token": successors.pop()}))[0] == 200
                elif action == 1:
                    assert (await call("POST", "/oauth/revoke", data={"token": s["access_token"]}))[0] == 200
                elif action == 2:
                    assert (await call("DELETE", f"/v1/users/mix{n % 7}/sessions", headers=basic("admin")))[0] == 200
                else:
                    continue
                revocations += 1
                for proc in procs:  # refused by every replica at once
                    async with http.get(
                        proc.url + "/v1/authz", headers={"Authorization": f"Bearer {s['access_token']}"}
                    ) as resp:
                        assert resp.status == 401
        for _ in range(200):
            if all(sum(c.values()) >= revocations for c in seen):
                break
            await asyncio.sleep(0.02)
        for c in seen:
            assert sum(c.values()) == revocations, "one event per revocation"
            assert all(v == 1 for v in c.values()), "no event applied twice"
    finally:
        for listener in listeners:
            await listener.aclose()
        for p in procs:
            p.stop()
        redis.close()
