"""The browser-test stack: Debian's Chromium driven by Playwright, and the example resource server."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Browser, Playwright

from tests.support.processes import start_until_healthy
from tests.support.redis_servers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str:
    """Debian's Chromium; the browser tests fail (never skip) without it."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/install-system-deps (Debian package chromium)")
    return str(CHROMIUM)


async def launch_chromium(playwright: Playwright) -> Browser:
    """The system Chromium (never a downloaded one). Playwright starts it on a new, empty
    user-data-dir of its own and deletes it on close; every context is a fresh cookie jar."""
    return await playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)


class ResourceServerProcess:
    """``python -m examples.resource_server`` as a real process on loopback."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, "PORT": str(self.port), **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="tw-resource-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ResourceServerProcess:
        self.proc = start_until_healthy(
            [sys.executable, "-m", "examples.resource_server"], self.env, self.log, self.url, timeout
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
