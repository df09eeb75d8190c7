"""Edges between checks, against a real service process on a real Redis (issue 15).

The failed-client-authentication budget on every endpoint that takes client credentials;
every sub that login accepts is addressable by the admin endpoints that take a sub.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service import state
from service.fanout import QUEUE_BATCHES, SlowReader
from service.keys import KeyRing
from service.sdk.identity import MAX_SUB_BYTES, is_safe_sub
from tests.conftest import CLIENT_SECRETS, AppFactory, basic
from tests.support.processes import ServiceProcess, service_on_own_redis


@pytest.fixture(name="service", scope="module")
def _service(tmp_path_factory: pytest.TempPathFactory, keyring: KeyRing) -> Iterator[ServiceProcess]:
    # Rate limits on, as deployed: the default failed-authentication budget (burst 10).
    directory = Path(tmp_path_factory.mktemp("edges"))
    with service_on_own_redis(directory, keyring, CLIENT_SECRETS, {"TOKENWARD_RATELIMIT": "on"}) as service:
        yield service


async def session_from(address: str) -> aiohttp.ClientSession:
    """An HTTP client whose connections leave from ``address`` (any of 127/8 is loopback): its own budget."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


# Every endpoint that takes client credentials, except /oauth/token and /oauth/revoke (which
# charge failures with their other limits: tests/http/test_hostile.py).
CREDENTIALED = [
    ("GET", "/metrics"),
    ("GET", "/v1/users/x/sessions"),
    ("DELETE", "/v1/users/x/sessions"),
    ("DELETE", "/v1/sessions/00abc"),
    ("POST", "/v1/sessions"),
    ("POST", "/v1/revocations"),
    ("GET", "/v1/revocations"),
    ("GET", "/v1/revocations/events"),
    ("POST", "/oauth/introspect"),
]


@pytest.mark.parametrize(("index", "method", "path"), [(i, *e) for i, e in enumerate(CREDENTIALED)])
async def test_failed_client_authentication_is_limited_everywhere(
    service: ServiceProcess, index: int, method: str, path: str
) -> None:
    """30 wrong secrets from one address: 429 after the burst, then even the right secret is 429
    (the address learns nothing about its guesses), while another address is not affected."""
    address = f"127.0.15.{index + 1}"
    async with await session_from(address) as http:
        statuses = []
        for i in range(30):
            async with http.request(method, service.url + path, headers=basic("admin", f"guess-{i}")) as resp:
                statuses.append(resp.status)
        assert set(statuses) <= {401, 429} and 429 in statuses, statuses
        assert statuses.index(429) <= 11, statuses
        async with http.request(method, service.url + path, headers=basic("admin")) as resp:
            assert resp.status == 429
    async with (
        await session_from(f"127.0.16.{index + 1}") as other,
        other.get(service.url + "/metrics", headers=basic("admin")) as resp,
    ):
        assert resp.status == 200


def call(service: ServiceProcess, method: str, path: str, client: str, body: Any = None) -> tuple[int, Any]:
    """One request as ``client`` (blocking: hypothesis drives it); the status and JSON body."""
    data = None if body is None else json.dumps(body).encode()
    headers = {**basic(client), "Content-Type": "application/json"}
    request = urllib.request.Request(service.url + path, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


# Every character class login may meet: path syntax, braces, percent, spaces, non-ASCII, and the
# characters the sub rule refuses (control, format, separators), which the filter then drops.
SUBS = st.text(
    st.one_of(
        st.sampled_from("/%{}?#;+&= .~-_:@!$'()*,[]\\\"<>|^`"),
        st.characters(codec="utf-8"),
    ),
    min_size=1,
    max_size=40,
).filter(is_safe_sub)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sub=SUBS)
@example(sub="{admin}")
@example(sub="a/b")
@example(sub="50%")
@example(sub="%2F")
@example(sub="a b")
@example(sub="...")
@example(sub="ü" * (MAX_SUB_BYTES // 2))
def test_every_sub_login_accepts_is_addressable(service: ServiceProcess, sub: str) -> None:
    """Login, then find and end the user's sessions by the sub, percent-encoded in the path."""
    status, _ = call(service, "POST", "/v1/sessions", "login", {"sub": sub})
    assert status == 201
    path = f"/v1/users/{quote(sub, safe='')}/sessions"
    status, listed = call(service, "GET", path, "admin")
    assert status == 200 and len(listed["sessions"]) >= 1, (status, listed)
    status, ended = call(service, "DELETE", path, "admin")
    assert status == 200 and ended["ended"] >= 1, (status, ended)
    status, listed = call(service, "GET", path, "admin")
    assert (status, listed["sessions"]) == (200, [])


@pytest.mark.parametrize(
    "sub",
    [" admin", "admin ", "\tadmin", "ad\u0085min", "ad\u202emin", "ad\u200bmin", "\ufeffadmin", "e\u0301", ".", "..",
     "a\u2028b", "ü" * (MAX_SUB_BYTES // 2 + 1)],
)  # fmt: skip
def test_login_refuses_a_sub_that_is_not_a_safe_identifier(service: ServiceProcess, sub: str) -> None:
    status, body = call(service, "POST", "/v1/sessions", "login", {"sub": sub})
    assert (status, body["code"]) == (400, "invalid_request")


async def test_event_streams_share_one_redis_connection(tmp_path: Path, keyring: KeyRing) -> None:
    """More SSE streams than the pool has connections: the service's connections stay within the
    pool plus the one fan-out reader, and every stream still receives a revocation."""
    max_connections, streams = 4, 12
    env = {"TOKENWARD_REDIS_MAX_CONNECTIONS": str(max_connections)}
    with service_on_own_redis(tmp_path, keyring, CLIENT_SECRETS, env) as service:
        redis = aioredis.Redis.from_url(service.env["TOKENWARD_REDIS_URL"])
        own = await redis.client_id()
        async with aiohttp.ClientSession() as http:
            responses = [
                await http.get(service.url + "/v1/revocations/events", headers=basic("admin")) for _ in range(streams)
            ]
            try:
                for resp in responses:
                    assert resp.status == 200
                    assert (await read_event(resp)) == "ready"
                connections = [c for c in await redis.client_list() if int(c["id"]) != own]
                assert len(connections) <= max_connections + 1, connections
                async with http.post(
                    service.url + "/v1/revocations", json={"sub": "everyone"}, headers=basic("admin")
                ) as resp:
                    assert resp.status == 200
                for resp in responses:
                    assert await asyncio.wait_for(read_event(resp), 10) == "revocation"
            finally:
                for resp in responses:
                    resp.close()
        await redis.aclose()


async def read_event(resp: aiohttp.ClientResponse) -> str:
    """The name of the next SSE event (comments and other fields skipped)."""
    while True:
        line = (await resp.content.readline()).decode()
        if line.startswith("event: "):
            return line.removeprefix("event: ").strip()


async def test_a_slow_stream_is_dropped_not_waited_for(make_client: AppFactory) -> None:
    """A subscriber that reads nothing is dropped after QUEUE_BATCHES batches; the others go on."""
    client = await make_client()
    fanout = client.app[state.FANOUT]
    reader, sleeper = await fanout.subscribe(), await fanout.subscribe()
    exp = int(time.time()) + 300
    for i in range(QUEUE_BATCHES + 1):
        await client.app[state.REVOCATIONS].revoke_jti(f"00slow{i:04d}", exp, "test")
        # Wait for it: one revocation per fan-out batch.
        batch = await asyncio.wait_for(reader.queue.get(), 10)
        assert isinstance(batch, list) and batch[0].id == f"00slow{i:04d}"
    assert fanout.subscribers == 1
    assert sleeper.queue.qsize() == 1 and isinstance(sleeper.queue.get_nowait(), SlowReader)
    fanout.unsubscribe(reader)
