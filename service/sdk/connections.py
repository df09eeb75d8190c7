"""The listener's Redis connections on each topology: standalone, Sentinel or Cluster.

The SDK must not import the server, so this holds its own small parser of the URLs the
service accepts (``TOKENWARD_REDIS_URL``):

* ``redis://``, ``rediss://``, ``unix://``: one Redis;
* ``redis+sentinel://[user:pass@]h1:p1,h2:p2/<master>[/<db>]``: ask the sentinels for the
  primary on every new connection (reads and the subscription), so after a failover the
  listener's reconnect lands on the new primary;
* ``redis+cluster://[user:pass@]h1:p1,h2:p2``: reads through a ``RedisCluster`` client
  (every per-partition read touches only ``tw:{p}:…`` keys, one slot), the subscription on
  one node: a ``PUBLISH`` is broadcast to every node of a cluster, so any node will do.

(``rediss+sentinel://`` and ``rediss+cluster://`` use TLS.) A ready-made redis-py client
(``Redis``, a Sentinel ``master_for`` client, or ``RedisCluster``) is accepted too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

_SENTINEL = ("redis+sentinel", "rediss+sentinel")
_CLUSTER = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed Redis URL (only what the listener needs)."""

    kind: str  # "redis" | "sentinel" | "cluster"
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_url(url: str) -> Target:
    """Parse a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return Target("redis", url)
    if scheme not in _SENTINEL + _CLUSTER:
        raise ValueError(f"unsupported Redis URL scheme {scheme!r}")
    parts = urlsplit(url)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = item.rpartition(":")
        try:
            hosts.append((host.strip("[]") or "127.0.0.1", int(port)))
        except ValueError:
            raise ValueError(f"{item!r} in the Redis URL is not host:port") from None
    auth: dict[str, Any] = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }
    tls = scheme.startswith("rediss")
    if scheme in _CLUSTER:
        return Target("cluster", url, tuple(hosts), tls=tls, **auth)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a redis+sentinel:// URL needs /<master name>[/<db>]")
    db = int(path[1]) if len(path) > 1 else 0
    return Target("sentinel", url, tuple(hosts), service=path[0], db=db, tls=tls, **auth)


@dataclass(slots=True)
class Connections:
    """A client for reads, and a way to open a subscription on the right server."""

    reader: Any  # redis.asyncio.Redis or RedisCluster; Any because redis-py's replies are unions
    owned: bool
    sentinel: Any = None
    _next_node: int = field(default=0)

    @property
    def cluster(self) -> bool:
        return isinstance(self.reader, RedisCluster)

    async def pubsub(self) -> tuple[Any, Any]:
        """A fresh PubSub, and the extra client to close after it (None when there is none).

        On a cluster each call takes the next known node in turn, so a dead node is left
        behind by the next reconnect.
        """
        if not self.cluster:
            return self.reader.pubsub(), None
        await self.reader.initialize()
        nodes: list[ClusterNode] = sorted(self.reader.get_nodes(), key=lambda n: n.name)
        node = nodes[self._next_node % len(nodes)]
        self._next_node += 1
        pool = aioredis.ConnectionPool(
            connection_class=node.connection_class, max_connections=2, **node.connection_kwargs
        )
        client = aioredis.Redis.from_pool(pool)
        return client.pubsub(), client

    async def aclose(self) -> None:
        if not self.owned:
            return
        await self.reader.aclose()
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                with contextlib.suppress(Exception):
                    await client.aclose()


def connect(source: Any, socket_timeout: float, options: dict[str, Any] | None) -> Connections:
    """Connections for a URL (clients the listener owns) or a ready-made client (the caller's)."""
    if not isinstance(source, str):
        if options:
            raise ValueError("redis_options apply only when the listener is given a URL")
        if not isinstance(source, aioredis.Redis | RedisCluster):
            raise TypeError("expected a Redis URL, a redis.asyncio.Redis or a redis.asyncio.cluster.RedisCluster")
        return Connections(source, owned=False)
    target = parse_url(source)
    # Silent retries would reconnect the subscription behind the listener's back and lose
    # whatever was published meanwhile: every failure must surface.
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        **(options or {}),
    }
    if target.kind == "redis":
        return Connections(aioredis.Redis.from_url(target.url, **common), owned=True)
    # The URL's credentials, unless redis_options name their own (a URL from configuration,
    # a password from a secret store).
    params: dict[str, Any] = {"username": target.username, "password": target.password, **common}
    if target.kind == "sentinel":
        sentinel = Sentinel(
            list(target.hosts),
            sentinel_kwargs={k: v for k, v in common.items() if k != "client_name"} | {"ssl": target.tls},
            ssl=target.tls,
            **params,
        )
        return Connections(sentinel.master_for(target.service, db=target.db), owned=True, sentinel=sentinel)
    nodes = [ClusterNode(host, port) for host, port in target.hosts]
    cluster = RedisCluster(startup_nodes=nodes, ssl=target.tls, require_full_coverage=True, **params)
    return Connections(cluster, owned=True)
