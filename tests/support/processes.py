"""Real service processes (``python -m service serve``) and a real nginx, on loopback."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from service.clients import hash_secret
from service.keys import KeyRing, to_pem
from tests.support.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def write_config(directory: Path, ring: KeyRing, clients: dict[str, tuple[str, set[str]]]) -> dict[str, str]:
    """Key files and a clients file in ``directory``; the environment that points at them."""
    keys = directory / "keys"
    keys.mkdir(exist_ok=True)
    for kid, key in ring.keys.items():
        (keys / f"{kid}.pem").write_bytes(to_pem(key.private))
    lines = []
    for cid, (secret, scopes) in clients.items():
        scope_list = ", ".join(f'"{s}"' for s in sorted(scopes))
        lines.append(f'[[clients]]\nid = "{cid}"\nsecret_hash = "{hash_secret(secret)}"\nscopes = [{scope_list}]\n')
    (directory / "clients.toml").write_text("\n".join(lines))
    return {"TOKENWARD_KEYS_DIR": str(keys), "TOKENWARD_CLIENTS_FILE": str(directory / "clients.toml")}


def start_until_healthy(
    command: list[str], env: dict[str, str], log: Path, url: str, timeout: float, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start ``command`` from ``cwd`` (the repository root), logging to ``log``; return once
    ``url``/healthz answers 200."""
    with log.open("ab") as out:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=out)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{command[2]} exited {proc.returncode}: {log.read_text()[-3000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url + "/healthz", timeout=1) as resp,  # noqa: S310 - loopback
        ):
            if resp.status == 200:
                return proc
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise RuntimeError(f"{command[2]} did not start: {log.read_text()[-3000:]}")
        time.sleep(0.05)


class ServiceProcess:
    """One ``tokenward serve`` process."""

    def __init__(self, env: dict[str, str], port: int | None = None, root: Path = ROOT) -> None:
        self.port = port or free_port()
        # Another checkout's service code (``git archive`` of an older commit) to compare against.
        self.root = root
        self.env = {
            **os.environ,
            "TOKENWARD_HOST": "127.0.0.1",
            "TOKENWARD_PORT": str(self.port),
            "TOKENWARD_ISSUER": "https://tokenward.test",
            "TOKENWARD_AUDIENCE": "api.test",
            "TOKENWARD_LOG_LEVEL": "WARNING",
            # As in tests/conftest.settings: load and workload tests are not clients to limit.
            "TOKENWARD_RATELIMIT": "off",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="tw-service-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServiceProcess:
        command = [sys.executable, "-m", "service", "serve"]
        self.proc = start_until_healthy(command, self.env, self.log, self.url, timeout, self.root)
        return self

    def terminate(self) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.proc = None
        return code

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def find_nginx() -> str:
    """Debian's nginx; the suite installs it (scripts/install-system-deps)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not found:
        raise RuntimeError("nginx is not installed: run scripts/install-system-deps (Debian package nginx)")
    return found


class Nginx:
    """nginx running a file of deploy/nginx/ (tokenward.conf unless told), pointed at loopback ports.

    The upstream (resource server, login backend) is ``upstream_url``. TLS lines are dropped,
    unless ``tls`` (certificate and key files) is given: then the server listens with TLS and
    HTTP/2, as browsers reach a real deployment (HTTP/2 needs TLS in every browser).
    """

    def __init__(
        self,
        tokenward_url: str,
        upstream_url: str,
        conf: str = "tokenward.conf",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tw-nginx-"))
        snippet = (ROOT / "deploy" / "nginx" / conf).read_text()
        snippet = snippet.replace("http://tokenward:8080", tokenward_url)
        snippet = snippet.replace("http://resource-server:8081", upstream_url)
        snippet = snippet.replace("http://login-backend:8000", upstream_url)
        snippet = snippet.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        if tls is None:
            snippet = snippet.replace("listen 443 ssl;", f"listen 127.0.0.1:{self.port};")
            snippet = "\n".join(line for line in snippet.splitlines() if not line.strip().startswith("ssl_certificate"))
        else:
            # nginx 1.22 (Debian 12) spells HTTP/2 as a listen parameter.
            snippet = snippet.replace("listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl http2;")
            snippet = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {tls[0]};", snippet)
            snippet = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tls[1]};", snippet)
        d = self.dir
        (d / "nginx.conf").write_text(
            f"worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n"
            f" fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n"
            f"{snippet}\n}}\n"
        )
        self.scheme = "http" if tls is None else "https"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.proc = subprocess.Popen(
            [find_nginx(), "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited: {err}")
            with contextlib.suppress(OSError), socket_connect(self.port):
                return self
            time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def service_on_own_redis(
    directory: Path, ring: KeyRing, clients: dict[str, tuple[str, set[str]]], env: dict[str, str]
) -> Iterator[ServiceProcess]:
    """A started service process (config in ``directory``, ``env`` on top) on a Redis of its own."""
    from tests.support.redis_servers import RedisServer

    redis = RedisServer().start()
    service = ServiceProcess({**write_config(directory, ring, clients), "TOKENWARD_REDIS_URL": redis.url, **env})
    try:
        service.start()
        yield service
    finally:
        service.stop()
        redis.close()


@contextlib.contextmanager
def socket_connect(port: int):  # type: ignore[no-untyped-def]
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        yield s
