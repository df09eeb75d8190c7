"""Configuration: validated at start-up, errors name the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.config import Settings
from service.errors import ConfigError
from service.keys import generate, to_pem


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
        ({"TOKENWARD_REDIS_MAX_CONNECTIONS": "0"}, "TOKENWARD_REDIS_MAX_CONNECTIONS"),
        ({"TOKENWARD_LOG_LEVEL": "LOUD"}, "TOKENWARD_LOG_LEVEL"),
        ({"TOKENWARD_HOST": "0.0.0.0"}, "TOKENWARD_REDIS_URL"),
        ({"TOKENWARD_REDIS_URL": "redis://127.0.0.1:1/0"}, "TOKENWARD_KEYS_DIR"),
        ({"TOKENWARD_REDIS_URL": "redis://x", "TOKENWARD_KEYS_DIR": "/k"}, "TOKENWARD_CLIENTS_FILE"),
        ({"TOKENWARD_DENY_MODE": "cached"}, "TOKENWARD_DENY_MODE"),
        ({"TOKENWARD_REFRESH_ANOMALY": "ignore"}, "TOKENWARD_REFRESH_ANOMALY"),
        ({"TOKENWARD_REFRESH_BURST": "1"}, "TOKENWARD_REFRESH_BURST"),
        ({"TOKENWARD_COOKIE_ORIGINS": "https://app.example.com/login"}, "TOKENWARD_COOKIE_ORIGINS"),
        ({"TOKENWARD_COOKIE_ORIGINS": "*"}, "TOKENWARD_COOKIE_ORIGINS"),
        ({"TOKENWARD_COOKIE_ORIGINS": "null"}, "TOKENWARD_COOKIE_ORIGINS"),
        ({"TOKENWARD_COOKIE_ORIGINS": "app.example.com"}, "TOKENWARD_COOKIE_ORIGINS"),
        ({"TOKENWARD_COOKIE_ORIGINS": "https://user@app.example.com"}, "TOKENWARD_COOKIE_ORIGINS"),
        ({"TOKENWARD_COOKIE_ORIGINS": "https://app.example.com:99999"}, "TOKENWARD_COOKIE_ORIGINS"),
        ({"TOKENWARD_COOKIE_ORIGINS": "http://app.example.com"}, "TOKENWARD_COOKIE_ORIGINS"),
        ({"TOKENWARD_COOKIE_ORIGINS": "http://127.0.0.1:8000"}, "TOKENWARD_COOKIE_INSECURE_DEV"),
        (
            {
                "TOKENWARD_COOKIE_ORIGINS": "http://127.0.0.1:8000,https://app.example.com",
                "TOKENWARD_COOKIE_INSECURE_DEV": "1",
            },
            "TOKENWARD_COOKIE_INSECURE_DEV",
        ),
        (
            {
                "TOKENWARD_COOKIE_ORIGINS": "http://127.0.0.1:8000",
                "TOKENWARD_COOKIE_INSECURE_DEV": "1",
                "TOKENWARD_HOST": "0.0.0.0",
                "TOKENWARD_REDIS_URL": "redis://x",
                "TOKENWARD_KEYS_DIR": "/k",
                "TOKENWARD_CLIENTS_FILE": "/c",
            },
            "TOKENWARD_COOKIE_INSECURE_DEV",
        ),
        ({"TOKENWARD_COOKIE_INSECURE_DEV": "1"}, "TOKENWARD_COOKIE_ORIGINS"),
        ({"TOKENWARD_COOKIE_INSECURE_DEV": "maybe"}, "TOKENWARD_COOKIE_INSECURE_DEV"),
        ({"TOKENWARD_COOKIE_SAMESITE": "None"}, "TOKENWARD_COOKIE_SAMESITE"),
        ({"TOKENWARD_LOG_FORMAT": "yaml"}, "TOKENWARD_LOG_FORMAT"),
        ({"TOKENWARD_ACCESS_LOG": "some"}, "TOKENWARD_ACCESS_LOG"),
        ({"TOKENWARD_METRICS_INTERVAL": "0"}, "TOKENWARD_METRICS_INTERVAL"),
        ({"TOKENWARD_METRICS_INTERVAL": "soon"}, "TOKENWARD_METRICS_INTERVAL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_cookie_mode_is_off_unless_origins_are_set() -> None:
    s = Settings.from_env({})
    assert not s.cookie_mode and s.cookie_origins == () and s.cookie_samesite == "Strict"


def test_cookie_origins_are_read_as_browsers_send_them() -> None:
    """Scheme and host lower-cased, default ports dropped: what a browser puts in Origin."""
    s = Settings.from_env(
        {
            "TOKENWARD_COOKIE_ORIGINS": " https://App.Example.com:443 ,https://b.example.com:8443,,https://app.example.com",
            "TOKENWARD_COOKIE_SAMESITE": "lax",
        }
    )
    assert s.cookie_mode and s.cookie_origins == ("https://app.example.com", "https://b.example.com:8443")
    assert s.cookie_samesite == "Lax"


def test_plain_http_only_on_loopback_in_dev_mode() -> None:
    s = Settings.from_env(
        {
            "TOKENWARD_COOKIE_ORIGINS": "http://127.0.0.1:8000,http://localhost:8000,http://[::1]:8000",
            "TOKENWARD_COOKIE_INSECURE_DEV": "1",
        }
    )
    assert s.cookie_insecure_dev
    assert s.cookie_origins == ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000")


def test_cookie_mode_over_http_refused_at_start() -> None:
    """Anything but loopback needs https: the service exits 2 naming the variable."""
    proc = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env={"TOKENWARD_COOKIE_ORIGINS": "http://app.example.com", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "TOKENWARD_COOKIE_ORIGINS" in proc.stderr and "https" in proc.stderr


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


def test_real_keys_refused_with_the_dev_client_at_start(tmp_path: Path) -> None:
    """Embedded mode with a keys directory but no clients file would sign real keys for dev/dev-secret."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "prod-1.pem").write_bytes(to_pem(generate("ES256")))
    proc = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env={"TOKENWARD_KEYS_DIR": str(keys), "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "TOKENWARD_KEYS_DIR" in proc.stderr and "TOKENWARD_CLIENTS_FILE" in proc.stderr
    # With a clients file the same keys are fine: the dev client is never created then.
    (tmp_path / "clients.toml").write_text("")
    ok = Settings.from_env({"TOKENWARD_KEYS_DIR": str(keys), "TOKENWARD_CLIENTS_FILE": str(tmp_path / "clients.toml")})
    assert ok.embedded and ok.keys_dir == keys


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


@pytest.mark.parametrize(
    "env",
    [
        {"TOKENWARD_RATELIMIT": "maybe"},
        {"TOKENWARD_RATELIMIT_ADDRESS": "20"},
        {"TOKENWARD_RATELIMIT_ADDRESS": "fast,10"},
        {"TOKENWARD_RATELIMIT_CLIENT": "-1,10"},
        {"TOKENWARD_RATELIMIT_CLIENT": "5000,10"},
        {"TOKENWARD_RATELIMIT_FAMILY": "1,0"},
        {"TOKENWARD_RATELIMIT_FAMILY": "nan,5"},
        {"TOKENWARD_RATELIMIT_AUTH_FAILURES": "1,2,3"},
        {"TOKENWARD_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"},
        {"TOKENWARD_TRUSTED_PROXIES": "10.0.0.1/8"},
        {"TOKENWARD_CLIENT_TIMEOUT": "0"},
    ],
)
def test_bad_hostile_input_settings_name_the_variable(env: dict[str, str]) -> None:
    (name,) = env
    with pytest.raises(ConfigError, match=name + r"\b"):
        Settings.from_env(env)


def test_rate_limit_settings() -> None:
    s = Settings.from_env(
        {
            "TOKENWARD_RATELIMIT": "off",
            "TOKENWARD_RATELIMIT_ADDRESS": "0.5, 7",
            "TOKENWARD_RATELIMIT_FAMILY": "0,1",
            "TOKENWARD_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1 ,2001:db8::/32",
            "TOKENWARD_CLIENT_TIMEOUT": "2.5",
        }
    )
    assert not s.ratelimit and s.client_timeout == 2.5
    assert (s.ratelimit_address.per_second, s.ratelimit_address.burst) == (0.5, 7)
    assert not s.ratelimit_family.enabled and s.ratelimit_client == Settings().ratelimit_client
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]
    d = Settings.from_env({})
    assert d.ratelimit and d.trusted_proxies == () and d.ratelimit_family.enabled


def test_log_format_defaults_text_embedded_json_with_redis() -> None:
    assert Settings.from_env({}).log_format == "text"
    real = {"TOKENWARD_REDIS_URL": "redis://r:6379/0", "TOKENWARD_KEYS_DIR": "/k", "TOKENWARD_CLIENTS_FILE": "/c"}
    assert Settings.from_env(real).log_format == "json"
    assert Settings.from_env({**real, "TOKENWARD_LOG_FORMAT": "text"}).log_format == "text"
    assert Settings.from_env({"TOKENWARD_LOG_FORMAT": "JSON"}).log_format == "json"
