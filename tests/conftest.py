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

from service.app import create_app
from service.clients import SCOPES, Client, ClientRegistry, hash_secret
from service.config import Secret, Settings
from service.keys import KeyRing, generate, make_key
from tests.support.redis_servers import RedisServer

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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole run; tests flush it."""
    server = RedisServer().start()
    yield server
    server.close()


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
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client on the test Redis, flushed before the test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Any) -> Settings:
    """Settings pointing at the test Redis."""
    return Settings(
        redis_url=Secret(redis_server.url),
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
