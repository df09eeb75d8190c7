"""Fixtures: a real redis-server per test session, the app built on it, and factories."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from service.app import create_app
from service.clients import SCOPES, Client, ClientRegistry, hash_secret
from service.config import Secret, Settings
from service.keys import KeyRing, generate, make_key
from service.store import Keyspace
from tests.support.redis_servers import RedisCluster, RedisServer

CLIENT_SECRETS = {
    "login": ("login-secret-0123456789abcdef", {"sessions:write"}),
    "gateway": ("gateway-secret-0123456789abcdef", {"introspect"}),
    "revoker": ("revoker-secret-0123456789abcdef", {"revoke"}),
    "admin": ("admin-secret-0123456789abcdef", set(SCOPES)),
    "nobody": ("nobody-secret-0123456789abcdef", set()),
}


def basic(client_id: str, secret: str | None = None) -> dict[str, str]:
    """An Authorization header for a test client."""
    secret = secret if secret is not None else CLIENT_SECRETS[client_id][0]
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked ``topologies("standalone", "cluster")`` run once per topology."""
    if "topology" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("topologies")
        metafunc.parametrize("topology", marker.args if marker else ("standalone",), scope="session")


@pytest.fixture(scope="session")
def standalone_redis() -> Iterator[RedisServer]:
    """One real redis-server for the whole run; tests flush it."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def cluster_redis() -> Iterator[RedisCluster]:
    """A real three-primary Redis Cluster for the whole run."""
    cluster = RedisCluster(3).start()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def redis_server(topology: str, request: pytest.FixtureRequest) -> RedisServer | RedisCluster:
    """The Redis of the test's topology (standalone unless the module asks for more)."""
    server: RedisServer | RedisCluster = request.getfixturevalue(f"{topology}_redis")
    return server


@pytest.fixture(scope="session")
def partitions(topology: str) -> int:
    """Key partitions: 16 on a cluster so sessions spread over its primaries."""
    return 16 if topology == "cluster" else 1


@pytest.fixture(name="keys")
def _keys(partitions: int) -> Keyspace:
    return Keyspace(partitions)


@pytest.fixture(scope="session")
def keyring() -> KeyRing:
    key = make_key("test-1", generate("RS256"))
    return KeyRing({key.kid: key}, key.kid)


@pytest.fixture(scope="session")
def clients() -> ClientRegistry:
    return ClientRegistry(
        {cid: Client(cid, hash_secret(sec), frozenset(sc)) for cid, (sec, sc) in CLIENT_SECRETS.items()}
    )


@pytest.fixture
async def redis_client(redis_server: RedisServer | RedisCluster) -> AsyncIterator[aioredis.Redis]:
    """A client on the test Redis, flushed before the test."""
    client: Any
    if isinstance(redis_server, RedisCluster):
        client = AsyncRedisCluster(host="127.0.0.1", port=redis_server.nodes[0].port)
    else:
        client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def settings(redis_server: RedisServer | RedisCluster, partitions: int, tmp_path: Any) -> Settings:
    """Settings pointing at the test Redis.

    Rate limits off: many tests make bursts on one family or address no real client would
    make; tests/test_ratelimit.py and tests/http/test_hostile.py turn them on.
    """
    return Settings(
        ratelimit=False,
        redis_url=Secret(redis_server.url),
        partitions=partitions,
        issuer="https://tokenward.test",
        audience="api.test",
        keys_dir=tmp_path,
        clients_file=tmp_path / "clients.toml",
    )


AppFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_client(
    aiohttp_client: Any, redis_client: aioredis.Redis, settings: Settings, keyring: KeyRing, clients: ClientRegistry
) -> AppFactory:
    """Build the real app (optionally with changed settings) and an HTTP client for it."""

    async def factory(**overrides: Any) -> TestClient[Any, Any]:
        app: web.Application = create_app(dataclasses.replace(settings, **overrides), keyring=keyring, clients=clients)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return factory


@pytest.fixture
async def client(make_client: AppFactory) -> TestClient[Any, Any]:
    """The app with default test settings."""
    return await make_client()
