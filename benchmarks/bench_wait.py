"""What WAIT costs per revocation: logout latency with TOKENWARD_WAIT_REPLICAS=0 and =1.

Run: ``.venv/bin/python -m benchmarks.bench_wait``. Starts a primary with one replica (AOF on
both, loopback) and two service processes on it, one per setting, and interleaves rounds of
sequential logouts (create a session, then time ``POST /oauth/revoke``).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from service.keys import KeyRing, generate, make_key
from tests.conftest import CLIENT_SECRETS, basic
from tests.support.processes import ServiceProcess, write_config
from tests.support.redis_servers import RedisServer

ROUNDS = 5
PER_ROUND = 200


async def logouts(http: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    """Seconds per logout, n sequential ones."""
    out = []
    for i in range(n):
        async with http.post(f"{url}/v1/sessions", json={"sub": f"w{i}"}, headers=basic("login")) as resp:
            token = (await resp.json())["refresh_token"]
        started = time.perf_counter()
        async with http.post(f"{url}/oauth/revoke", data={"token": token}) as resp:
            assert resp.status == 200, await resp.text()
        out.append(time.perf_counter() - started)
    return out


async def main() -> None:
    primary = RedisServer(appendonly=True).start()
    replica = RedisServer("--replicaof", "127.0.0.1", str(primary.port), appendonly=True).start()
    deadline = time.monotonic() + 10
    while True:
        with primary.client() as c:
            if c.info("replication").get("slave0", {}).get("state") == "online":
                break
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not attach")
        await asyncio.sleep(0.05)
    key = make_key("bench", generate("RS256"))
    env = write_config(Path(tempfile.mkdtemp()), KeyRing({key.kid: key}, key.kid), CLIENT_SECRETS)
    env["TOKENWARD_REDIS_URL"] = primary.url
    services = {
        wait: ServiceProcess({**env, "TOKENWARD_WAIT_REPLICAS": str(wait), "TOKENWARD_LOG_LEVEL": "ERROR"})
        for wait in (0, 1)
    }
    try:
        for service in services.values():
            service.start()
        samples: dict[int, list[float]] = {0: [], 1: []}
        medians: dict[int, list[float]] = {0: [], 1: []}
        async with aiohttp.ClientSession() as http:
            for _ in range(ROUNDS):
                for wait, service in services.items():  # interleaved: A, B, A, B, ...
                    took = await logouts(http, service.url, PER_ROUND)
                    samples[wait] += took
                    medians[wait].append(statistics.median(took))
        print(f"logout latency over {ROUNDS} interleaved rounds of {PER_ROUND} (loopback, AOF everysec)")
        for wait in (0, 1):
            q = statistics.quantiles(samples[wait], n=100)
            print(f"  WAIT {wait}: p50 {statistics.median(samples[wait]) * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms")
        ratios = [b / a for a, b in zip(medians[0], medians[1], strict=True)]
        extra = statistics.median(samples[1]) - statistics.median(samples[0])
        print(
            f"  WAIT 1 / WAIT 0 median: {statistics.median(ratios):.2f}x (per-round {min(ratios):.2f}-"
            f"{max(ratios):.2f}); cost per revocation {extra * 1e3:.2f} ms"
        )
    finally:
        for service in services.values():
            service.stop()
        replica.close()
        primary.close()


if __name__ == "__main__":
    asyncio.run(main())
