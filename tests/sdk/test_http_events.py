"""The HTTP event feed: snapshot, events since a cursor, and SSE resume with Last-Event-ID."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from service import state
from tests.conftest import basic
from tests.sdk.conftest import redis_deny_set

# On the cluster (16 partitions) the revocations below spread over every partition, so the
# SSE feed there runs one XREAD per partition (a cluster refuses one across slots).
pytestmark = pytest.mark.topologies("standalone", "cluster")


async def revoke(client: TestClient[Any, Any], tag: str, n: int) -> list[str]:
    """n jti revocations, spread over the partitions; returns the jtis."""
    exp = int(time.time()) + 300
    partitions = client.app[state.SETTINGS].partitions
    jtis = [f"{i % partitions:02x}{tag}{i:04d}" for i in range(n)]
    for jti in jtis:
        await client.app[state.REVOCATIONS].revoke_jti(jti, exp, tag)
    return jtis


async def trim_all(client: TestClient[Any, Any], redis_client: aioredis.Redis) -> None:
    """Empty every partition's stream (as if trimmed past every cursor)."""
    for p in range(client.app[state.SETTINGS].partitions):
        await redis_client.xtrim(f"tw:{{{p}}}:ev", maxlen=0, approximate=False)


async def read_frames(resp: ClientResponse, count: int) -> list[dict[str, str]]:
    """Read ``count`` SSE messages (comments skipped) as dicts of their fields."""
    frames: list[dict[str, str]] = []
    current: dict[str, str] = {}
    while len(frames) < count:
        line = (await resp.content.readline()).decode().rstrip("\n")
        if not line:
            if current:
                frames.append(current)
                current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        current[name] = value
    return frames


class TestSnapshot:
    async def test_snapshot_equals_redis_and_needs_events_scope(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis
    ) -> None:
        """GET /v1/revocations lists every deny entry; other callers get 401/403."""
        await revoke(client, "snap", 5)
        await client.delete("/v1/users/dora/sessions", headers=basic("admin"))
        resp = await client.get("/v1/revocations", headers=basic("admin"))
        assert resp.status == 200
        body = await resp.json()
        got = {(e["kind"], e["id"]): (e["before"] if e["kind"] == "sub" else e["until"]) for e in body["deny"]}
        assert got == await redis_deny_set(redis_client)
        assert body["cursor"].startswith("1.0_")
        assert (await client.get("/v1/revocations")).status == 401
        assert (await client.get("/v1/revocations", headers=basic("gateway"))).status == 403

    async def test_snapshot_carries_boot_markers_and_a_wipe_changes_them(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis, node_clients: list[aioredis.Redis]
    ) -> None:
        """HTTP followers learn each partition's boot marker from the snapshot, a new one after a wipe."""
        partitions = client.app[state.SETTINGS].partitions

        async def snapshot_boot() -> list[int]:
            resp = await client.get("/v1/revocations", headers=basic("admin"))
            assert resp.status == 200
            boot: list[int] = (await resp.json())["boot"]
            return boot

        before = await snapshot_boot()
        assert len(before) == partitions
        assert before == [int(await redis_client.get(f"tw:{{{p}}}:boot") or -1) for p in range(partitions)]
        await asyncio.sleep(1.1)  # markers are whole seconds
        for node in node_clients:
            await node.flushall()
        after = await snapshot_boot()
        # The snapshot set the missing markers, as the service's checks do: later than before.
        assert all(a > b for a, b in zip(after, before, strict=True))
        assert after == [int(await redis_client.get(f"tw:{{{p}}}:boot") or -1) for p in range(partitions)]

    async def test_since_returns_the_rest_or_410_when_trimmed(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis
    ) -> None:
        """Events after a cursor, exactly; a trimmed resume point answers 410 reset."""
        await revoke(client, "a", 3)
        cursor = (await (await client.get("/v1/revocations", headers=basic("admin"))).json())["cursor"]
        later = await revoke(client, "b", 4)
        resp = await client.get("/v1/revocations", params={"since": cursor}, headers=basic("admin"))
        body = await resp.json()
        assert sorted(e["id"] for e in body["events"]) == sorted(later) and body["more"] is False
        await revoke(client, "c", 2)
        await trim_all(client, redis_client)
        resp = await client.get("/v1/revocations", params={"since": body["cursor"]}, headers=basic("admin"))
        assert resp.status == 410 and (await resp.json())["code"] == "reset"

    async def test_a_wipe_answers_410_at_once_not_after_the_next_revocation(
        self, client: TestClient[Any, Any], node_clients: list[aioredis.Redis]
    ) -> None:
        """After a wipe the follower must reload (the snapshot brings the new boot marker) before any
        new revocation: red team pass 2 saw 200 and no events until one was written."""
        await revoke(client, "w", 2)
        cursor = (await (await client.get("/v1/revocations", headers=basic("admin"))).json())["cursor"]
        for node in node_clients:
            await node.flushall()
        resp = await client.get("/v1/revocations", params={"since": cursor}, headers=basic("admin"))
        assert resp.status == 410 and (await resp.json())["code"] == "reset"
        fresh = (await (await client.get("/v1/revocations", headers=basic("admin"))).json())["cursor"]
        resp = await client.get("/v1/revocations", params={"since": fresh}, headers=basic("admin"))
        assert resp.status == 200, "a cursor of the new log is fine"


class TestSSE:
    async def test_resume_with_last_event_id_misses_nothing(self, client: TestClient[Any, Any]) -> None:
        """Connect, read some, disconnect, revoke more, reconnect with the last id: exactly the rest."""
        first = await revoke(client, "pre", 2)
        cursor = (await (await client.get("/v1/revocations", headers=basic("admin"))).json())["cursor"]
        resp = await client.get("/v1/revocations/events", headers={**basic("admin"), "Last-Event-ID": cursor})
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        assert (await read_frames(resp, 1))[0]["event"] == "ready"
        batch1 = await revoke(client, "one", 3)
        frames = await read_frames(resp, 3)
        # One partition's events arrive in order; across partitions in any order.
        assert sorted(orjson.loads(f["data"])["id"] for f in frames) == sorted(batch1)
        assert {f["event"] for f in frames} == {"revocation"}
        last_id = frames[-1]["id"]
        resp.close()
        batch2 = await revoke(client, "two", 5)
        resp = await client.get("/v1/revocations/events", headers={**basic("admin"), "Last-Event-ID": last_id})
        frames = await read_frames(resp, 6)
        assert frames[0]["event"] == "ready"
        ids = [orjson.loads(f["data"])["id"] for f in frames[1:]]
        assert sorted(ids) == sorted(batch2) and not set(ids) & set(first + batch1)
        resp.close()

    async def test_trimmed_resume_point_gets_reset(
        self, client: TestClient[Any, Any], redis_client: aioredis.Redis
    ) -> None:
        """A Last-Event-ID whose next event was trimmed gets event: reset."""
        await revoke(client, "x", 2)
        cursor = (await (await client.get("/v1/revocations", headers=basic("admin"))).json())["cursor"]
        await revoke(client, "y", 2)
        await trim_all(client, redis_client)
        resp = await client.get("/v1/revocations/events", headers={**basic("admin"), "Last-Event-ID": cursor})
        frames = await read_frames(resp, 2)
        assert [f["event"] for f in frames] == ["ready", "reset"]
        # Said once: the reason used to read "...; reload the snapshot; reload the snapshot".
        assert orjson.loads(frames[1]["data"])["reason"].count("reload the snapshot") == 1
        resp.close()
