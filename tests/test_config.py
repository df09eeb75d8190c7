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
        ({"TOKENWARD_DENY_MODE": "cached"}, "TOKENWARD_DENY_MODE"),
        ({"TOKENWARD_LOG_FORMAT": "yaml"}, "TOKENWARD_LOG_FORMAT"),
        ({"TOKENWARD_ACCESS_LOG": "some"}, "TOKENWARD_ACCESS_LOG"),
        ({"TOKENWARD_METRICS_INTERVAL": "0"}, "TOKENWARD_METRICS_INTERVAL"),
        ({"TOKENWARD_METRICS_INTERVAL": "soon"}, "TOKENWARD_METRICS_INTERVAL"),
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


@pytest.mark.parametrize(
    "url", ["redis://r:6379/0", "redis+sentinel://s0:26379,s1:26379/mymaster/0", "redis+cluster://n0:7000,n1:7001"]
)
def test_cached_deny_mode_on_every_topology(url: str) -> None:
    env = {"TOKENWARD_REDIS_URL": url, "TOKENWARD_KEYS_DIR": "/k", "TOKENWARD_CLIENTS_FILE": "/c"}
    assert Settings.from_env({**env, "TOKENWARD_DENY_MODE": "cached"}).deny_mode == "cached"


@pytest.mark.parametrize(
    ("url", "kind", "hosts"),
    [
        ("redis://r:6379/0", "redis", ()),
        ("redis+sentinel://:pw@s0:26379,s1:26380/mymaster/2", "sentinel", (("s0", 26379), ("s1", 26380))),
        ("rediss+cluster://u:pw@n0:7000,n1:7001", "cluster", (("n0", 7000), ("n1", 7001))),
    ],
)
def test_redis_urls_parse_into_their_parts(url: str, kind: str, hosts: tuple[object, ...]) -> None:
    """One parser (the SDK's) for the service and its resource servers."""
    from service.config import parse_redis_url

    target = parse_redis_url(url)
    assert (target.kind, target.hosts) == (kind, hosts)


def test_log_format_defaults_text_embedded_json_with_redis() -> None:
    assert Settings.from_env({}).log_format == "text"
    real = {"TOKENWARD_REDIS_URL": "redis://r:6379/0", "TOKENWARD_KEYS_DIR": "/k", "TOKENWARD_CLIENTS_FILE": "/c"}
    assert Settings.from_env(real).log_format == "json"
    assert Settings.from_env({**real, "TOKENWARD_LOG_FORMAT": "text"}).log_format == "text"
    assert Settings.from_env({"TOKENWARD_LOG_FORMAT": "JSON"}).log_format == "json"
