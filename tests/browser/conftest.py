"""A real stack for the browser tests: Redis, Tokenward in cookie mode with 2-second access
tokens, the example resource server serving the demo, and Debian's Chromium."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, async_playwright

from service.keys import KeyRing
from tests.conftest import CLIENT_SECRETS, basic
from tests.support.browser import ResourceServerProcess, launch_chromium
from tests.support.processes import ServiceProcess, write_config
from tests.support.redis_servers import RedisServer, free_port

ACCESS_TTL = 2


@dataclass(frozen=True)
class Stack:
    """Where everything listens."""

    redis: RedisServer
    tokenward: ServiceProcess
    resource: ResourceServerProcess

    @property
    def tw(self) -> str:
        return self.tokenward.url

    @property
    def app(self) -> str:
        """The demo's origin (also its base URL)."""
        return self.resource.url


def demo_app_env(tokenward_url: str, redis_url: str) -> dict[str, str]:
    """The example resource server's settings: the demo's login backend signs in as client ``login``."""
    return {
        "TOKENWARD_URL": tokenward_url,
        "REDIS_URL": redis_url,
        "ISSUER": "https://tokenward.test",
        "AUDIENCE": "api.test",
        "DEMO_CLIENT_ID": "login",
        "DEMO_CLIENT_SECRET": CLIENT_SECRETS["login"][0],
    }


@pytest.fixture(scope="session")
def stack(keyring: KeyRing) -> Iterator[Stack]:
    """One stack for the browser tests; each test signs in a user of its own device(s)."""
    redis = RedisServer().start()
    directory = Path(tempfile.mkdtemp(prefix="tw-browser-"))
    app_port = free_port()
    env = {
        "TOKENWARD_REDIS_URL": redis.url,
        **write_config(directory, keyring, CLIENT_SECRETS),
        "TOKENWARD_ACCESS_TTL": str(ACCESS_TTL),
        "TOKENWARD_COOKIE_ORIGINS": f"http://127.0.0.1:{app_port}",
        "TOKENWARD_COOKIE_INSECURE_DEV": "1",
    }
    tokenward = ServiceProcess(env).start()
    resource = ResourceServerProcess(
        demo_app_env(tokenward.url, redis.url),
        port=app_port,
    )
    try:
        resource.start()
        yield Stack(redis, tokenward, resource)
    finally:
        resource.stop()
        tokenward.stop()
        redis.close()


@pytest.fixture(name="browser")
async def _browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(name="http")
async def _http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for the test's own calls (no cookie jar: it sends what it is told)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture(autouse=True)
async def _fresh_demo_user(stack: Stack, http: aiohttp.ClientSession) -> None:
    """Every test starts with the demo user signed out everywhere (the demo has one fixed user)."""
    async with http.delete(f"{stack.tw}/v1/users/demo/sessions", headers=basic("admin")) as resp:
        assert resp.status == 200, await resp.text()
