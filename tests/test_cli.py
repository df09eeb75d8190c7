"""The ``tokenward`` command's key and client helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service.clients import hash_secret


def tokenward(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_key_rotation_commands(tmp_path: Path) -> None:
    """The runbook's steps: generate, list (the pinned signer), retire (never the signer)."""
    assert tokenward("keys", "generate", "--dir", str(tmp_path), "--kid", "2026-11-01").returncode == 0
    assert (
        tokenward("keys", "generate", "--dir", str(tmp_path), "--kid", "2026-12-01", "--alg", "ES256").returncode == 0
    )
    assert (tmp_path / "2026-12-01.pem").stat().st_mode & 0o777 == 0o600
    pinned = {"TOKENWARD_SIGNING_KID": "2026-11-01"}
    listing = tokenward("keys", "list", "--dir", str(tmp_path), env=pinned).stdout
    assert "2026-11-01\tRS256  <- signs" in listing and "2026-12-01\tES256\n" in listing
    refused = tokenward("keys", "retire", "--dir", str(tmp_path), "--kid", "2026-11-01", env=pinned)
    assert refused.returncode == 2 and "signing key" in refused.stderr
    assert (
        tokenward(
            "keys", "retire", "--dir", str(tmp_path), "--kid", "2026-11-01", env={"TOKENWARD_SIGNING_KID": "2026-12-01"}
        ).returncode
        == 0
    )
    assert not (tmp_path / "2026-11-01.pem").exists()
    assert tokenward("keys", "generate", "--dir", str(tmp_path), "--kid", "2026-12-01").returncode == 2


def test_hash_secret() -> None:
    out = tokenward("clients", "hash-secret").stdout.splitlines()
    secret = out[0].removeprefix("secret = ")
    assert out[1] == f'secret_hash = "{hash_secret(secret)}"'
    assert tokenward("clients", "hash-secret", "--secret", "short").returncode == 2
