"""Processes, data and the load generator for the suite: everything but the figures.

The server under test is always a separate process (``python -m service serve``), the
load generator is wrk (another process, one thread), Redis is our own redis-server on a
free loopback port (never the shared 6379).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from service.config import Settings
from service.keys import KeyRing, SigningKey, make_key
from service.sessions import Device
from service.sessions import session_fields as build_session_fields
from service.store import EVENTS_CHANNEL, load_script_source
from service.tokens import AccessTokens, RefreshToken, new_id, new_jti, new_secret
from tests.support.processes import ServiceProcess, write_config
from tests.support.redis_servers import RedisServer, free_port

RedisClient = redis.Redis  # the Stack has a field named redis
ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).resolve().parent / "wrk" / "tokenward.lua"
ISSUER = "https://tokenward.test"
AUDIENCE = "api.test"
# Long enough that pre-minted tokens outlive the whole suite (the default 300 s would not).
ACCESS_TTL = 3600
SECRETS = {"login": "login-secret-0123456789abcdef", "gateway": "gateway-secret-0123456789abcdef"}
CLIENTS = {"login": (SECRETS["login"], {"sessions:write"}), "gateway": (SECRETS["gateway"], {"introspect"})}


def basic(client: str) -> str:
    """An ``Authorization`` header value for one of the bench clients."""
    import base64

    return "Basic " + base64.b64encode(f"{client}:{SECRETS[client]}".encode()).decode()


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare numbers across machines."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    for name, cmd in (("wrk", ["wrk", "-v"]), ("redis-server", ["redis-server", "--version"])):
        with contextlib.suppress(OSError):
            out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
            versions[name] = out.split("[")[0].strip() if name == "wrk" else out.split()[2]
    import importlib.metadata as md

    for pkg in ("aiohttp", "uvloop", "redis", "hiredis", "PyJWT", "cryptography"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


# --------------------------------------------------------------------------- processes


@dataclass
class Stack:
    """Redis, Tokenward and the ceiling app, all on loopback, started once per suite."""

    workdir: Path
    redis: RedisServer
    ring: KeyRing
    env: dict[str, str]
    service: ServiceProcess
    ceiling: subprocess.Popen[bytes] | None = None
    ceiling_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, extra_env: dict[str, str] | None = None) -> Stack:
        workdir = Path(tempfile.mkdtemp(prefix="tw-bench-"))
        server = RedisServer().start()
        ring = KeyRing({"bench": make_key("bench", _rsa())}, "bench")
        env = write_config(workdir, ring, CLIENTS)
        env.update(
            TOKENWARD_REDIS_URL=server.url,
            TOKENWARD_ACCESS_TTL=str(ACCESS_TTL),
            TOKENWARD_ISSUER=ISSUER,
            TOKENWARD_AUDIENCE=AUDIENCE,
            TOKENWARD_LOG_LEVEL="WARNING",
            # One load generator on one address would be (rightly) throttled by the per-address
            # and per-family limits: the figures measure the service, limits off.
            TOKENWARD_RATELIMIT="off",
            **(extra_env or {}),
        )
        stack = cls(workdir, server, ring, env, ServiceProcess(env))
        stack.extra_env = dict(extra_env or {})
        stack.service.start()
        stack.start_ceiling()
        return stack

    @property
    def settings(self) -> Settings:
        return Settings.from_env({**self.env, "TOKENWARD_PORT": str(self.service.port)})

    def start_ceiling(self) -> None:
        self.ceiling_port = free_port()
        env = {**os.environ, **self.env, "CEILING_PORT": str(self.ceiling_port)}
        log = (self.workdir / "ceiling.log").open("ab")
        self.ceiling = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ceiling"], env=env, cwd=ROOT, stdout=log, stderr=log
        )
        wait_http(f"http://127.0.0.1:{self.ceiling_port}/const", self.ceiling)

    def restart_service(self, extra_env: dict[str, str]) -> None:
        """A fresh service process with more settings (another deny mode, say)."""
        self.service.stop()
        self.service = ServiceProcess({**self.env, **extra_env})
        self.service.start()

    @property
    def tw(self) -> str:
        return self.service.url

    @property
    def ceil(self) -> str:
        return f"http://127.0.0.1:{self.ceiling_port}"

    def client(self) -> RedisClient:
        return RedisClient(host="127.0.0.1", port=self.redis.port, socket_timeout=60)

    def close(self) -> None:
        self.service.stop()
        if self.ceiling is not None:
            self.ceiling.terminate()
            self.ceiling.wait(10)
        self.redis.close()
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)

    def pids(self) -> dict[str, int]:
        """Process ids, for a profiler."""
        out = {}
        if self.service.proc is not None:
            out["tokenward"] = self.service.proc.pid
        if self.ceiling is not None:
            out["ceiling"] = self.ceiling.pid
        return out


def _rsa() -> Any:
    from service.keys import generate

    return generate("RS256")


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Until the URL answers 200, or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


# --------------------------------------------------------------------------- data


def _mint_chunk(args: tuple[bytes, str, int, int]) -> list[str]:
    from cryptography.hazmat.primitives import serialization

    pem, kid, n, seed = args
    private = serialization.load_pem_private_key(pem, password=None)
    ring = KeyRing({kid: make_key(kid, private)}, kid)  # type: ignore[arg-type]
    tokens = AccessTokens(ring, ISSUER, AUDIENCE, ACCESS_TTL, 5)
    iat = int(time.time())
    return [
        tokens.mint(
            sub=f"user-{seed + i}",
            sid=new_id(0),
            jti=new_jti(0),
            iat=iat,
            scope="read write",
            client_id="login",
        )
        for i in range(n)
    ]


def mint_access_tokens(key: SigningKey, n: int, workers: int = 2) -> list[str]:
    """``n`` distinct access tokens signed with the service's key, on every core (RSA signing is the cost)."""
    from service.keys import to_pem

    pem = to_pem(key.private)
    chunk = 5000
    jobs = [(pem, key.kid, min(chunk, n - i), i) for i in range(0, n, chunk)]
    with ProcessPoolExecutor(workers) as pool:
        return [t for part in pool.map(_mint_chunk, jobs) for t in part]


def create_sessions(client: redis.Redis, n: int, sub_prefix: str, settings: Settings) -> list[str]:
    """``n`` sessions through the real create_session.lua (pipelined); their refresh tokens."""
    sha = client.script_load(load_script_source("create_session"))
    out: list[str] = []
    batch = 2000
    for start in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        now = int(time.time() * 1000)
        for i in range(start, min(start + batch, n)):
            sub = f"{sub_prefix}{i}"
            sid = new_id(0)
            secret = new_secret()
            tok = RefreshToken.issue(sid, 0, bench_tag_key(sid), secret)
            absolute = now + settings.refresh_max_ttl * 1000
            expires = min(now + settings.refresh_idle_ttl * 1000, absolute)
            fields = session_fields(sub, tok.hash, bench_tag_key(sid), now, absolute, settings.refresh_idle_ttl)
            pipe.evalsha(
                sha,
                4,
                f"tw:{{0}}:s:{sid}",
                f"tw:{{0}}:u:{sub}",
                f"tw:{{0}}:dc:{sub}",
                "tw:{0}:boot",
                now,
                expires,
                absolute,
                sid,
                *fields,
            )
            out.append(str(tok))
        pipe.execute()
    return out


TYPICAL_DEVICE = Device(name="laptop", user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", ip="203.0.113.7")


def bench_tag_key(sid: str) -> bytes:
    """A session's tag key, 16 bytes as random as the service's, but recomputable by the benchmarks."""
    return hashlib.sha256(b"tokenward-bench:" + sid.encode()).digest()[:16]


def session_fields(sub: str, h: bytes, tag_key: bytes, now: int, absolute: int, idle_s: int) -> list[str | int | bytes]:
    """The session hash exactly as ``Sessions.create`` writes it (its own builder), with a typical device."""
    return build_session_fields(
        sub=sub, client_id="login", scope="read write", secret_hash=h, tag_key=tag_key,
        now=now, absolute=absolute, idle=idle_s, device=TYPICAL_DEVICE,
    )  # fmt: skip


BULK_SESSIONS_LUA = """
-- Filler sessions in the real layout (session hash + user index), n per call.
-- ARGV: 1 first index, 2 count, 3 now ms, 4 absolute ms, 5 idle ms, 6 expires ms
local first, n = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = first, first + n - 1 do
  local sid = string.format('00fill%018d', i)
  local sub = 'fill-' .. i
  local s = 'tw:{0}:s:' .. sid
  local u = 'tw:{0}:u:' .. sub
  -- Same shape as session_fields(): 16-byte h and K (la, nw derived), ca/it in s, ax in ms, no p* yet.
  local now_s = math.floor(tonumber(ARGV[3]) / 1000)
  redis.call('HSET', s, 'u', sub, 'c', 'login', 'sc', 'read write', 'g', 0,
    'h', string.format('%016x', i), 'K', string.format('%016x', i + 1), 'ca', now_s, 'ax', ARGV[4],
    'it', math.floor(tonumber(ARGV[5]) / 1000), 'dn', 'laptop',
    'ua', 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0', 'ip', '203.0.113.7')
  redis.call('PEXPIREAT', s, ARGV[6])
  redis.call('ZADD', u, ARGV[4], sid)
  redis.call('PEXPIREAT', u, ARGV[4])
end
return n
"""

BULK_DENY_LUA = """
-- Filler deny entries (jti), n per call. ARGV: 1 first index, 2 count, 3 until s, 4 until ms
local first, n = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = first, first + n - 1 do
  redis.call('SET', string.format('tw:{0}:dj:00deny%018d', i), ARGV[3], 'PXAT', ARGV[4])
end
return n
"""


def bulk_load(client: redis.Redis, script: str, first: int, n: int, args: Sequence[int], chunk: int = 20000) -> None:
    """Run a filler script in chunks, so Redis never blocks for long in one call."""
    sha = client.script_load(script)
    for start in range(first, first + n, chunk):
        client.evalsha(sha, 0, start, min(chunk, first + n - start), *args)


def fill_sessions(client: redis.Redis, first: int, n: int, settings: Settings) -> None:
    """``n`` filler sessions (index ``first``..), each with its own user index entry."""
    now = int(time.time() * 1000)
    absolute = now + settings.refresh_max_ttl * 1000
    idle = settings.refresh_idle_ttl * 1000
    bulk_load(client, BULK_SESSIONS_LUA, first, n, [now, absolute, idle, min(now + idle, absolute)])


def fill_denies(client: redis.Redis, first: int, n: int, until_s: int) -> None:
    """``n`` live jti deny entries."""
    bulk_load(client, BULK_DENY_LUA, first, n, [until_s, until_s * 1000])


def revocation_args(settings: Settings, now: int) -> tuple[int, int, str]:
    return now + settings.deny_ttl * 1000, settings.event_retention * 1000, EVENTS_CHANNEL


def login(base: str) -> dict[str, Any]:
    """One session through the API (what the repeated-token figures present)."""
    req = urllib.request.Request(  # noqa: S310 - loopback
        base + "/v1/sessions",
        data=json.dumps({"sub": "alice", "scope": "read write", "device": {"name": "laptop"}}).encode(),
        headers={"Content-Type": "application/json", "Authorization": basic("login")},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
        data: dict[str, Any] = json.loads(resp.read())
        return data


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    exhausted: int
    first_err: str
    raw: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.exhausted == 0 and self.requests > 0


def wrk(
    url: str,
    *,
    method: str = "GET",
    where: str = "none",
    value: str = "-",
    headers: Sequence[str] = (),
    connections: int = 32,
    duration: float = 5,
    timeout: int = 5,
) -> WrkResult:
    """One wrk run (1 thread, fixed connections, bounded duration)."""
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", f"{timeout}s", "--latency",
        "-s", str(LUA), url, "--", method, where, value, *headers,
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((x for x in r.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({url}): rc={r.returncode}\n{r.stdout}\n{r.stderr}")
    data = json.loads(line[len("WRKJSON ") :])
    secs = data["duration_us"] / 1e6
    e = data["errors"]
    socket_errors = e["connect"] + e["read"] + e["write"] + e["timeout"]
    lat = data["latency_us"]
    return WrkResult(
        rps=data["requests"] / secs if secs else 0.0,
        p50_ms=lat["p50"] / 1000,
        p99_ms=lat["p99"] / 1000,
        requests=data["requests"],
        errors=data["non2xx"] + socket_errors,
        exhausted=data["exhausted"],
        first_err=data["first_err"],
        raw=data,
    )


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    """A token file for wrk (one a line)."""
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- stats


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max over rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    """Print how long a step took (the suite is bounded in time; show where it goes)."""
    t0 = time.monotonic()
    print(f"  .. {label}", file=sys.stderr, flush=True)
    yield
    print(f"  .. {label}: {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
