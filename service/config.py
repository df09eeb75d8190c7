"""Settings, read once from ``TOKENWARD_*`` environment variables and validated at start-up.

Every error names the variable that is wrong, so a typo in a container spec fails
the pod at start instead of surfacing as odd behaviour later.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from .errors import ConfigError
from .sdk.connections import Target as RedisTarget
from .sdk.connections import parse_url

PREFIX: Final = "TOKENWARD_"


@dataclass(frozen=True, slots=True)
class Secret:
    """A string that never shows itself in a repr or a log line."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit: ``per_second`` sustained, ``burst`` at once; ``per_second == 0`` turns it off."""

    per_second: float
    burst: int

    @property
    def enabled(self) -> bool:
        """False when this limit is switched off."""
        return self.per_second > 0


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service reads from its environment. Durations are seconds."""

    redis_url: Secret | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    issuer: str = "http://127.0.0.1:8080"
    audience: str = "tokenward"
    access_ttl: int = 300
    refresh_idle_ttl: int = 24 * 3600
    refresh_max_ttl: int = 7 * 24 * 3600
    remember_idle_ttl: int = 30 * 24 * 3600
    remember_max_ttl: int = 90 * 24 * 3600
    refresh_grace: int = 15
    refresh_grace_uses: int = 10
    # What a refresh from a new network or agent, or a burst of refreshes, does: see anomalies.py.
    refresh_anomaly: str = "flag"
    refresh_burst: int = 30
    leeway: int = 5
    keys_dir: Path | None = None
    signing_kid: str | None = None
    clients_file: Path | None = None
    partitions: int = 1
    wait_replicas: int = 0
    wait_timeout_ms: int = 500
    redis_timeout: float = 1.0
    redis_max_connections: int = 256
    shutdown_timeout: float = 20.0
    max_body_bytes: int = 16 * 1024
    log_level: str = "INFO"
    deny_mode: str = "strict"
    # Hostile callers (service/ratelimit.py, service/http/parsing.py): see the README's Rate limits.
    client_timeout: float = 10.0
    ratelimit: bool = True
    ratelimit_address: Rate = Rate(50, 300)
    ratelimit_client: Rate = Rate(100, 500)
    ratelimit_family: Rate = Rate(1, 20)
    ratelimit_auth_failures: Rate = Rate(0.2, 10)
    trusted_proxies: tuple[Network, ...] = ()
    #: Browser origins allowed to use cookie mode (and CORS); empty = cookie mode off.
    cookie_origins: tuple[str, ...] = ()
    cookie_samesite: str = "Strict"
    #: Development only: allow plain-http loopback origins.
    cookie_insecure_dev: bool = False

    log_format: str = "json"
    access_log: str = "all"
    metrics_interval: float = 30.0

    @property
    def cookie_mode(self) -> bool:
        """True when browser sessions may keep their refresh token in a cookie."""
        return bool(self.cookie_origins)

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured and the in-process store is used."""
        return self.redis_url is None

    @property
    def deny_ttl(self) -> int:
        """How long a sid or sub deny entry must live: the longest access token plus leeway."""
        return self.access_ttl + self.leeway

    @property
    def event_retention(self) -> int:
        """How far back the replay log reaches: the deny TTL plus a margin for outages."""
        return self.deny_ttl + 600

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from a mapping such as ``os.environ``; raise ConfigError naming the bad variable."""
        env = _Env(environ)
        d = cls()
        redis_url = env.get_str("REDIS_URL", "")
        settings = cls(
            redis_url=Secret(redis_url) if redis_url else None,
            host=env.get_str("HOST", d.host),
            port=env.get_int("PORT", d.port, lo=1, hi=65535),
            issuer=env.get_str("ISSUER", ""),
            audience=env.get_str("AUDIENCE", d.audience),
            access_ttl=env.get_int("ACCESS_TTL", d.access_ttl, lo=1, hi=24 * 3600),
            refresh_idle_ttl=env.get_int("REFRESH_IDLE_TTL", d.refresh_idle_ttl, lo=1),
            refresh_max_ttl=env.get_int("REFRESH_MAX_TTL", d.refresh_max_ttl, lo=1),
            remember_idle_ttl=env.get_int("REMEMBER_IDLE_TTL", d.remember_idle_ttl, lo=1),
            remember_max_ttl=env.get_int("REMEMBER_MAX_TTL", d.remember_max_ttl, lo=1),
            refresh_grace=env.get_int("REFRESH_GRACE", d.refresh_grace, lo=0, hi=300),
            refresh_grace_uses=env.get_int("REFRESH_GRACE_USES", d.refresh_grace_uses, lo=1, hi=1000),
            refresh_anomaly=env.get_choice("REFRESH_ANOMALY", "FLAG", ("ALLOW", "FLAG", "REVOKE")).lower(),
            refresh_burst=env.get_int("REFRESH_BURST", d.refresh_burst, lo=2, hi=100_000),
            leeway=env.get_int("LEEWAY", d.leeway, lo=0, hi=300),
            keys_dir=env.get_path("KEYS_DIR"),
            signing_kid=env.get_str("SIGNING_KID", "") or None,
            clients_file=env.get_path("CLIENTS_FILE"),
            partitions=env.get_int("PARTITIONS", d.partitions, lo=1, hi=256),
            wait_replicas=env.get_int("WAIT_REPLICAS", d.wait_replicas, lo=0, hi=16),
            wait_timeout_ms=env.get_int("WAIT_TIMEOUT_MS", d.wait_timeout_ms, lo=1, hi=60_000),
            redis_timeout=env.get_float("REDIS_TIMEOUT", d.redis_timeout, lo=0.05, hi=30),
            redis_max_connections=env.get_int("REDIS_MAX_CONNECTIONS", d.redis_max_connections, lo=1, hi=10_000),
            shutdown_timeout=env.get_float("SHUTDOWN_TIMEOUT", d.shutdown_timeout, lo=0, hi=600),
            max_body_bytes=env.get_int("MAX_BODY_BYTES", d.max_body_bytes, lo=1024, hi=1 << 20),
            log_level=env.get_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            deny_mode=env.get_choice("DENY_MODE", "STRICT", ("STRICT", "CACHED")).lower(),
            client_timeout=env.get_float("CLIENT_TIMEOUT", d.client_timeout, lo=0.5, hi=600),
            ratelimit=env.get_choice("RATELIMIT", "ON", ("ON", "OFF")) == "ON",
            ratelimit_address=env.get_rate("RATELIMIT_ADDRESS", d.ratelimit_address),
            ratelimit_client=env.get_rate("RATELIMIT_CLIENT", d.ratelimit_client),
            ratelimit_family=env.get_rate("RATELIMIT_FAMILY", d.ratelimit_family),
            ratelimit_auth_failures=env.get_rate("RATELIMIT_AUTH_FAILURES", d.ratelimit_auth_failures),
            trusted_proxies=env.get_networks("TRUSTED_PROXIES"),
            cookie_origins=env.get_origins("COOKIE_ORIGINS"),
            cookie_samesite=env.get_choice("COOKIE_SAMESITE", "STRICT", ("STRICT", "LAX")).title(),
            cookie_insecure_dev=env.get_bool("COOKIE_INSECURE_DEV"),
            # JSON for anything real (log collectors parse it); text for the embedded dev mode, read by people.
            log_format=env.get_choice("LOG_FORMAT", "JSON" if redis_url else "TEXT", ("JSON", "TEXT")).lower(),
            access_log=env.get_choice("ACCESS_LOG", "ALL", ("ALL", "ERRORS", "OFF")).lower(),
            metrics_interval=env.get_float("METRICS_INTERVAL", d.metrics_interval, lo=1, hi=3600),
        )
        if not settings.issuer:
            settings = replace(settings, issuer=f"http://{settings.host}:{settings.port}")
        settings.validate()
        return settings

    def validate(self) -> None:
        """Cross-field checks; each message names the variables involved."""
        if self.refresh_idle_ttl > self.refresh_max_ttl:
            raise ConfigError(
                f"{PREFIX}REFRESH_IDLE_TTL ({self.refresh_idle_ttl}) must not exceed "
                f"{PREFIX}REFRESH_MAX_TTL ({self.refresh_max_ttl})"
            )
        if self.remember_idle_ttl > self.remember_max_ttl:
            raise ConfigError(
                f"{PREFIX}REMEMBER_IDLE_TTL ({self.remember_idle_ttl}) must not exceed "
                f"{PREFIX}REMEMBER_MAX_TTL ({self.remember_max_ttl})"
            )
        if self.embedded and not _is_loopback(self.host):
            raise ConfigError(
                f"{PREFIX}REDIS_URL is not set, so the embedded development store would be used, "
                f"but {PREFIX}HOST={self.host!r} is not a loopback address: every replica would "
                f"keep private state. Set {PREFIX}REDIS_URL (or bind to 127.0.0.1 for development)."
            )
        if self.redis_url is not None:
            parse_redis_url(self.redis_url.value)
        if self.deny_mode == "cached" and self.redis_url is None:
            raise ConfigError(
                f"{PREFIX}DENY_MODE=cached needs {PREFIX}REDIS_URL: the deny cache is fed by the events in Redis"
            )
        if self.wait_replicas and self.wait_timeout_ms >= self.redis_timeout * 1000:
            raise ConfigError(
                f"{PREFIX}WAIT_TIMEOUT_MS ({self.wait_timeout_ms}) must be shorter than "
                f"{PREFIX}REDIS_TIMEOUT ({self.redis_timeout}s), or every slow WAIT becomes a broken connection"
            )
        if not self.embedded and self.keys_dir is None:
            raise ConfigError(f"{PREFIX}KEYS_DIR must be set when {PREFIX}REDIS_URL is set")
        if not self.embedded and self.clients_file is None:
            raise ConfigError(f"{PREFIX}CLIENTS_FILE must be set when {PREFIX}REDIS_URL is set")
        if self.keys_dir is not None and self.clients_file is None:
            # Without a clients file the embedded store serves the publicly known all-scopes
            # dev client; with real keys its tokens would verify wherever those keys are trusted.
            raise ConfigError(
                f"{PREFIX}KEYS_DIR is set without {PREFIX}CLIENTS_FILE: the embedded development "
                f"client (dev/dev-secret) must never sign with real keys. Set {PREFIX}CLIENTS_FILE "
                f"(or unset {PREFIX}KEYS_DIR for an ephemeral development key)."
            )
        self._validate_cookie_mode()

    def _validate_cookie_mode(self) -> None:
        # A refresh-token cookie over plain http is readable by anyone on the path, so
        # http is allowed only where the path is the loopback interface, and only on request.
        if self.cookie_insecure_dev and not self.cookie_mode:
            raise ConfigError(f"{PREFIX}COOKIE_INSECURE_DEV=1 needs {PREFIX}COOKIE_ORIGINS")
        if self.cookie_insecure_dev and not _is_loopback(self.host):
            raise ConfigError(
                f"{PREFIX}COOKIE_INSECURE_DEV=1 is for development on loopback, but "
                f"{PREFIX}HOST={self.host!r} is not a loopback address"
            )
        for origin in self.cookie_origins:
            parts = urlsplit(origin)
            scheme, host = parts.scheme, parts.hostname or ""
            if self.cookie_insecure_dev and not _is_loopback(host):
                raise ConfigError(
                    f"{PREFIX}COOKIE_ORIGINS: {origin} is not a loopback origin, and "
                    f"{PREFIX}COOKIE_INSECURE_DEV=1 allows only loopback origins"
                )
            if scheme == "http" and not self.cookie_insecure_dev:
                hint = f" (for development on loopback set {PREFIX}COOKIE_INSECURE_DEV=1)" if _is_loopback(host) else ""
                raise ConfigError(f"{PREFIX}COOKIE_ORIGINS: {origin} must be https{hint}")


def parse_redis_url(url: str) -> RedisTarget:
    """Parse ``TOKENWARD_REDIS_URL`` (redis://, rediss://, unix://, redis+sentinel://, redis+cluster://).

    The parser is the SDK's, so the service and its resource servers read a URL alike.
    """
    if "://" not in url:
        raise ConfigError(f"{PREFIX}REDIS_URL must look like redis://host:port/db")
    try:
        return parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}REDIS_URL: {exc}") from None


def parse_origin(raw: str) -> str:
    """An origin (``scheme://host[:port]``) in the form browsers send in ``Origin``; ValueError if not one."""
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ValueError(f"{raw!r} is not an origin") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{raw!r} is not an origin: it needs http:// or https:// and a host")
    if parts.path or parts.query or parts.fragment or parts.username is not None or parts.password is not None:
        raise ValueError(f"{raw!r} is not an origin: no path, query or credentials (e.g. https://app.example.com)")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Env:
    """Typed reads of ``TOKENWARD_*`` variables; errors name the full variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(PREFIX + name)
        return None if value is None else value.strip()

    def get_str(self, name: str, default: str) -> str:
        raw = self._raw(name)
        return default if raw is None or raw == "" else raw

    def get_int(self, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name}={raw!r} is not an integer") from None
        self._bounds(name, value, lo, hi)
        return value

    def get_float(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self._raw(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name}={raw!r} is not a number") from None
        self._bounds(name, value, lo, hi)
        return value

    def get_choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get_str(name, default).upper()
        if value not in choices:
            raise ConfigError(f"{PREFIX}{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def get_bool(self, name: str) -> bool:
        value = self.get_str(name, "0").lower()
        if value not in ("0", "1", "true", "false", "yes", "no"):
            raise ConfigError(f"{PREFIX}{name}={value!r} must be 1 or 0")
        return value in ("1", "true", "yes")

    def get_origins(self, name: str) -> tuple[str, ...]:
        out: list[str] = []
        for raw in self.get_str(name, "").split(","):
            if raw.strip():
                try:
                    out.append(parse_origin(raw.strip()))
                except ValueError as exc:
                    raise ConfigError(f"{PREFIX}{name}: {exc}") from None
        return tuple(dict.fromkeys(out))

    def get_path(self, name: str) -> Path | None:
        raw = self._raw(name)
        return Path(raw) if raw else None

    def get_rate(self, name: str, default: Rate) -> Rate:
        """``RATE,BURST``: requests per second (0 = off, at most 1000) and how many at once."""
        raw = self._raw(name)
        if raw is None or raw == "":
            return default
        rate, sep, burst = raw.partition(",")
        try:
            value = Rate(float(rate), int(burst))
        except ValueError:
            raise ConfigError(
                f"{PREFIX}{name}={raw!r} must look like RATE,BURST (requests per second, bucket size), e.g. 20,100"
            ) from None
        if not sep or not 0 <= value.per_second <= 1000 or not 1 <= value.burst <= 100_000:
            raise ConfigError(f"{PREFIX}{name}={raw!r}: RATE must be 0 (off) to 1000 and BURST 1 to 100000")
        return value

    def get_networks(self, name: str) -> tuple[Network, ...]:
        """A comma-separated list of CIDR networks (a bare address is its /32 or /128)."""
        raw = self._raw(name)
        if not raw:
            return ()
        out: list[Network] = []
        for item in raw.split(","):
            try:
                out.append(ipaddress.ip_network(item.strip()))
            except ValueError as exc:
                raise ConfigError(f"{PREFIX}{name}: {item.strip()!r} is not a CIDR network ({exc})") from None
        return tuple(out)

    @staticmethod
    def _bounds(name: str, value: float, lo: float | None, hi: float | None) -> None:
        if lo is not None and value < lo:
            raise ConfigError(f"{PREFIX}{name}={value} must be at least {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{PREFIX}{name}={value} must be at most {hi}")
