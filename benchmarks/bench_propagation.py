"""Revocation propagation with subscribers spread over processes, as resource servers are.

Run: ``.venv/bin/python -m benchmarks.bench_propagation``. Starts its own redis-server;
for each layout (processes x listeners per process) the parent revokes 50 tokens, 20 ms
apart, and every listener records when its cache applied each one. Delay = apply time minus
the moment the revoke call returned (CLOCK_MONOTONIC is shared by all processes on Linux).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time

import orjson
import redis.asyncio as aioredis

from service.sdk.cache import DenyCache
from service.sdk.events import Event
from service.sdk.listener import RevocationListener
from service.store import load_script_source
from tests.support.redis_servers import RedisServer

EVENTS = 50
LAYOUTS = ((1, 1), (1, 20), (20, 1), (1, 100), (10, 10), (100, 1))


async def worker(url: str, count: int) -> None:
    """Child process: ``count`` listeners; prints arrivals as JSON when stdin closes."""
    arrivals: list[tuple[str, float]] = []

    def record(event: Event) -> None:
        arrivals.append((event.id, time.monotonic()))

    listeners = [RevocationListener(url, DenyCache(), on_apply=record) for _ in range(count)]
    await asyncio.gather(*(x.start() for x in listeners))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(x.aclose() for x in listeners))
    sys.stdout.write(orjson.dumps(arrivals).decode() + "\n")


def spawn(url: str, processes: int, per_process: int) -> list[subprocess.Popen[str]]:
    """Start the worker processes and wait until each has its listeners running."""
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_propagation", "--worker", url, str(per_process)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    return children


async def layout(url: str, processes: int, per_process: int) -> list[float]:
    children = await asyncio.to_thread(spawn, url, processes, per_process)
    client = aioredis.Redis.from_url(url)
    revoke = client.register_script(load_script_source("revoke"))
    returned: dict[str, float] = {}
    for i in range(EVENTS):
        jti = f"00prop{processes}x{per_process}x{i}"
        now = int(time.time() * 1000)
        await revoke(
            keys=["tw:{0}:dj:" + jti, "tw:{0}:seq", "tw:{0}:ev"],
            args=[now, "jti", jti, 0, now + 300_000, "bench", 900_000, "tw:events", 0],
        )
        returned[jti] = time.monotonic()
        await asyncio.sleep(0.02)
    await client.aclose()
    await asyncio.sleep(1.0)  # let the last events land everywhere before the children stop
    delays: list[float] = []
    for child in children:
        out, _ = await asyncio.to_thread(child.communicate, "", 30)
        delays += [at - returned[jti] for jti, at in orjson.loads(out.splitlines()[-1]) if jti in returned]
    expected = EVENTS * processes * per_process
    assert len(delays) == expected, f"{expected - len(delays)} applications missing"
    return delays


async def main() -> None:
    server = RedisServer().start()
    try:
        print(f"propagation from the revoke call returning to each cache applying it, {EVENTS} events")
        for processes, per_process in LAYOUTS:
            ordered = sorted(await layout(server.url, processes, per_process))
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            print(
                f"  {processes * per_process:>3} subscribers = {processes:>3} processes x {per_process:>3}: "
                f"p50 {statistics.median(ordered) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, max {ordered[-1] * 1e3:.2f} ms"
            )
    finally:
        server.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], int(sys.argv[3])))
    else:
        asyncio.run(main())
