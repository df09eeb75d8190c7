"""What SREs rely on: the start-up self-check, SIGTERM draining, Sentinel failover."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.config import Secret, Settings
from service.errors import StoreUnavailable
from service.keys import KeyRing
from service.revocation import Revocations
from service.store import open_store
from service.tokens import new_id
from tests.conftest import CLIENT_SECRETS, basic
from tests.support.processes import ROOT, ServiceProcess, write_config
from tests.support.redis_servers import RedisServer, SentinelGroup


@pytest.fixture(name="config_env")
def _config_env(tmp_path: Path, keyring: KeyRing) -> dict[str, str]:
    return write_config(tmp_path, keyring, CLIENT_SECRETS)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestSelfCheck:
    def test_refuses_an_evicting_redis(self, config_env: dict[str, str]) -> None:
        server = RedisServer("--maxmemory", "100mb").start()
        try:
            with server.client() as c:
                c.config_set("maxmemory-policy", "volatile-lru")
            env = {**config_env, "TOKENWARD_REDIS_URL": server.url}
            proc = run_cli(env, "check")
            assert proc.returncode == 1
            assert "maxmemory-policy is 'volatile-lru'" in proc.stderr and "noeviction" in proc.stderr
            serve = run_cli({**env, "TOKENWARD_PORT": "1"}, "serve")
            assert serve.returncode == 1, "serve runs the same check and refuses to start"
        finally:
            server.close()

    def test_warns_when_persistence_is_off(self, config_env: dict[str, str]) -> None:
        server = RedisServer().start()
        try:
            proc = run_cli({**config_env, "TOKENWARD_REDIS_URL": server.url}, "check")
            assert proc.returncode == 0, proc.stderr
            assert "appendonly is off" in proc.stderr
            assert "boot marker" in proc.stderr, "it says what a restart without data does"
        finally:
            server.close()

    @pytest.mark.parametrize("wait_replicas", ["0", "1"])
    def test_a_replicated_primary_that_writes_alone_is_flagged(
        self, config_env: dict[str, str], wait_replicas: str
    ) -> None:
        """Without min-replicas-to-write a primary cut off by a failover keeps acknowledging
        writes it will lose: a warning, a refusal when WAIT promises revocations survive."""
        primary = RedisServer(appendonly=True).start()
        replica = RedisServer("--replicaof", "127.0.0.1", str(primary.port), appendonly=True).start()
        try:
            wait_for_replicas(primary, 1)
            env = {**config_env, "TOKENWARD_REDIS_URL": primary.url, "TOKENWARD_WAIT_REPLICAS": wait_replicas}
            proc = run_cli(env, "check")
            assert "min-replicas-to-write" in proc.stderr and "consistency.md" in proc.stderr
            if wait_replicas == "1":
                assert proc.returncode == 1 and "refusing this Redis" in proc.stderr
            else:
                assert proc.returncode == 0 and "warning:" in proc.stderr
            with primary.client() as c:
                c.config_set("min-replicas-to-write", 1)
                c.config_set("min-replicas-max-lag", 2)
            proc = run_cli(env, "check")
            assert proc.returncode == 0 and "min-replicas" not in proc.stderr, proc.stderr
        finally:
            replica.close()
            primary.close()

    def test_a_primary_without_replicas_needs_no_min_replicas(self, config_env: dict[str, str]) -> None:
        server = RedisServer(appendonly=True).start()
        try:
            proc = run_cli({**config_env, "TOKENWARD_REDIS_URL": server.url}, "check")
            assert proc.returncode == 0 and "min-replicas" not in proc.stderr, proc.stderr
        finally:
            server.close()

    def test_unreachable_redis_is_a_clear_failure(self, config_env: dict[str, str]) -> None:
        proc = run_cli({**config_env, "TOKENWARD_REDIS_URL": "redis://127.0.0.1:1/0"}, "check")
        assert proc.returncode == 1 and "cannot reach Redis" in proc.stderr


async def test_sigterm_drains_in_flight_requests(config_env: dict[str, str]) -> None:
    """SIGTERM: requests already in flight finish, then the process exits 0 within the bound."""
    server = RedisServer(appendonly=True).start()
    service = ServiceProcess(
        {
            **config_env,
            "TOKENWARD_REDIS_URL": server.url,
            "TOKENWARD_REDIS_TIMEOUT": "5",
            "TOKENWARD_SHUTDOWN_TIMEOUT": "10",
        }
    )
    try:
        await asyncio.to_thread(service.start)
        async with aiohttp.ClientSession() as http:

            async def create(i: int) -> int:
                async with http.post(
                    f"{service.url}/v1/sessions", json={"sub": f"drain{i}"}, headers=basic("login")
                ) as resp:
                    await resp.read()
                    return resp.status

            with server.client() as c:
                c.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
            in_flight = [asyncio.create_task(create(i)) for i in range(10)]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            assert service.proc is not None
            service.proc.terminate()
            statuses = await asyncio.gather(*in_flight)
            code = await asyncio.to_thread(service.proc.wait, 15)
            assert statuses == [201] * 10, "in-flight requests were finished, not dropped"
            assert code == 0
            assert time.monotonic() - started < 12
            with pytest.raises(aiohttp.ClientConnectionError):
                await create(99)
    finally:
        service.stop()
        server.close()


def wait_for_replicas(primary: RedisServer, count: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        with primary.client() as c:
            info = c.info("replication")
        if sum(isinstance(v, dict) and v.get("state") == "online" for v in info.values()) >= count:
            return
        assert time.monotonic() < deadline, f"replicas not online: {info}"
        time.sleep(0.05)


@pytest.fixture(name="sentinel_group")
def _sentinel_group() -> Iterator[SentinelGroup]:
    group = SentinelGroup().start()
    yield group
    group.close()


async def test_sentinel_failover_loses_no_acknowledged_revocation(
    sentinel_group: SentinelGroup, config_env: dict[str, str]
) -> None:
    """Kill the primary under a revocation load: every acknowledged revocation survives on the
    promoted replica, the service comes back by itself, and failures meanwhile are fast 503s."""
    service = ServiceProcess(
        {
            **config_env,
            "TOKENWARD_REDIS_URL": sentinel_group.url,
            "TOKENWARD_WAIT_REPLICAS": "1",
            "TOKENWARD_WAIT_TIMEOUT_MS": "300",
            "TOKENWARD_REDIS_TIMEOUT": "1",
        }
    )
    await asyncio.to_thread(service.start)
    acknowledged: list[dict[str, Any]] = []
    failures: list[tuple[int, float]] = []
    latencies: list[float] = []
    killed_at: float | None = None
    first_success_after_kill: float | None = None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def one(i: int) -> None:
                nonlocal first_success_after_kill
                try:
                    async with http.post(
                        f"{service.url}/v1/sessions", json={"sub": f"fo{i}"}, headers=basic("login")
                    ) as resp:
                        if resp.status != 201:
                            failures.append((resp.status, 0.0))
                            return
                        s = await resp.json()
                    t0 = time.monotonic()
                    async with http.post(f"{service.url}/oauth/revoke", data={"token": s["refresh_token"]}) as resp:
                        took = time.monotonic() - t0
                        if resp.status == 200:
                            acknowledged.append(s)
                            latencies.append(took)
                            if killed_at is not None and first_success_after_kill is None:
                                first_success_after_kill = time.monotonic()
                        else:
                            assert resp.status == 503, await resp.text()
                            failures.append((resp.status, took))
                except aiohttp.ClientError:
                    failures.append((0, 0.0))

            i = 0
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline:
                await asyncio.gather(*(one(i + k) for k in range(4)))
                i += 4
                if i == 40:
                    sentinel_group.master().kill()
                    killed_at = time.monotonic()
                if first_success_after_kill is not None and time.monotonic() - first_success_after_kill > 2:
                    break
        assert killed_at is not None and first_success_after_kill is not None, "the service never came back"
        recovery = first_success_after_kill - killed_at
        print(
            f"\nfailover: recovered {recovery:.2f}s after the kill; {len(acknowledged)} acknowledged, "
            f"{len(failures)} refused; revoke p50 {statistics.median(latencies) * 1000:.1f} ms with WAIT 1"
        )
        assert recovery < 15
        assert all(took < 3 for _, took in failures), "failures are fast"
        # Every acknowledged logout holds on the new primary: its access token is inactive.
        async with aiohttp.ClientSession() as http:
            for s in acknowledged:
                async with http.post(
                    f"{service.url}/oauth/introspect", data={"token": s["access_token"]}, headers=basic("gateway")
                ) as resp:
                    assert await resp.read() == b'{"active":false}', "an acknowledged revocation was lost"
    finally:
        service.stop()


async def test_a_revocation_is_fenced_by_the_sentinels_newest_configuration(
    sentinel_group: SentinelGroup, settings: Settings
) -> None:
    """After WAIT, the server a revocation was written to must be the primary the sentinels'
    newest configuration names; a confirmed write on any other server (a primary left behind
    by a failover, still confirmed by a replica about to be moved) answers 503."""
    configured = dataclasses.replace(settings, redis_url=Secret(sentinel_group.url), wait_replicas=1)
    store = open_store(configured)
    try:
        primary = sentinel_group.master()
        await store._check_still_primary(store.client.connection_pool, ("127.0.0.1", primary.port))
        for replica in sentinel_group.replicas:
            with pytest.raises(StoreUnavailable, match="primary changed"):
                await store._check_still_primary(store.client.connection_pool, ("127.0.0.1", replica.port))
        # And through the revoking path: the pinned connection is the one the sentinels name.
        revocations = Revocations(store, configured)
        assert await revocations.revoke_sid(new_id(0), "test") > 0
    finally:
        await store.aclose()
