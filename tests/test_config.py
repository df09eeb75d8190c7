"""Configuration: validated at start-up, errors name the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.config import Settings
from service.errors import ConfigError


def test_defaults_are_embedded_on_loopback() -> None:
    s = Settings.from_env({})
    assert s.embedded and s.host == "127.0.0.1" and s.port == 8080
    assert s.issuer == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"TOKENWARD_PORT": "eighty"}, "TOKENWARD_PORT"),
        ({"TOKENWARD_PORT": "70000"}, "TOKENWARD_PORT"),
        ({"TOKENWARD_ACCESS_TTL": "0"}, "TOKENWARD_ACCESS_TTL"),
        ({"TOKENWARD_REFRESH_GRACE": "-1"}, "TOKENWARD_REFRESH_GRACE"),
        ({"TOKENWARD_REFRESH_IDLE_TTL": "100", "TOKENWARD_REFRESH_MAX_TTL": "10"}, "TOKENWARD_REFRESH_IDLE_TTL"),
        ({"TOKENWARD_REMEMBER_IDLE_TTL": "100", "TOKENWARD_REMEMBER_MAX_TTL": "10"}, "TOKENWARD_REMEMBER_IDLE_TTL"),
        ({"TOKENWARD_PARTITIONS": "0"}, "TOKENWARD_PARTITIONS"),
        ({"TOKENWARD_LOG_LEVEL": "LOUD"}, "TOKENWARD_LOG_LEVEL"),
        ({"TOKENWARD_HOST": "0.0.0.0"}, "TOKENWARD_REDIS_URL"),
        ({"TOKENWARD_REDIS_URL": "redis://127.0.0.1:1/0"}, "TOKENWARD_KEYS_DIR"),
        ({"TOKENWARD_REDIS_URL": "redis://x", "TOKENWARD_KEYS_DIR": "/k"}, "TOKENWARD_CLIENTS_FILE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_embedded_store_refused_off_loopback_at_start() -> None:
    """A mistyped variable in a container fails at start with a clear message and exit 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env={"TOKENWARD_HOST": "0.0.0.0", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "TOKENWARD_REDIS_URL" in proc.stderr and "loopback" in proc.stderr


def test_redis_url_is_never_printed() -> None:
    s = Settings.from_env(
        {"TOKENWARD_REDIS_URL": "redis://:hunter2@host/0", "TOKENWARD_KEYS_DIR": "/k", "TOKENWARD_CLIENTS_FILE": "/c"}
    )
    assert "hunter2" not in repr(s)
