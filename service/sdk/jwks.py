"""Signing keys from the service's JWKS, fetched over aiohttp and cached.

The algorithm of each key comes from the key itself (RSA: RS256, EC P-256: ES256,
Ed25519: EdDSA), never from a token; a JWK whose ``alg`` disagrees is skipped.

Caching: the key set is kept for ``ttl`` seconds (the service sends ``max-age=300``).
An unknown ``kid`` triggers one refetch, but fetch attempts (successful or not) are at
least ``min_refetch_interval`` apart, so a stream of tokens with random kids costs at
most one request per interval. Concurrent callers share one in-flight fetch. A failed
fetch keeps the previous keys (a JWKS outage must not log everybody out).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import jwt
import orjson

log = logging.getLogger("tokenward.sdk.jwks")


class JWKSUnavailable(Exception):
    """No key set has ever been fetched, so nothing can be verified."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key with the one algorithm it may verify."""

    kid: str
    alg: str
    key: Any


class KeySource(Protocol):
    """Anything that maps a kid to a verification key (the JWKS client, or a test double)."""

    async def get_key(self, kid: str) -> VerificationKey | None:
        """The key for ``kid``, or None when it is unknown."""
        ...


def algorithm_of(jwk: Mapping[str, Any]) -> str | None:
    """The single algorithm a JWK may be used with, from its type; None if unsupported."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        alg = "RS256"
    elif kty == "EC" and crv == "P-256":
        alg = "ES256"
    elif kty == "OKP" and crv == "Ed25519":
        alg = "EdDSA"
    else:
        return None
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        return None
    return alg


def keys_from_jwks(document: Any) -> dict[str, VerificationKey]:
    """Parse a JWKS document; keys that are unusable or not for signatures are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    out: dict[str, VerificationKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or jwk.get("use", "sig") != "sig":
            continue
        alg = algorithm_of(jwk)
        if alg is None:
            log.warning("skipping JWK %r: unsupported key type or mismatched alg", kid)
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except (jwt.PyJWKError, ValueError, TypeError) as exc:
            log.warning("skipping JWK %r: %s", kid, exc)
            continue
        out[kid] = VerificationKey(kid=kid, alg=alg, key=key)
    return out


class JWKSClient:
    """Async, cached, rate-limited JWKS fetcher."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        ttl: float = 300.0,
        min_refetch_interval: float = 30.0,
        timeout: float = 5.0,
        max_bytes: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refetch_interval = min_refetch_interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._clock = clock
        self._session = session
        self._own_session = session is None
        self._keys: dict[str, VerificationKey] | None = None
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._lock = asyncio.Lock()
        #: Fetch attempts made, for monitoring and tests.
        self.fetches = 0

    async def get_key(self, kid: str) -> VerificationKey | None:
        """The key for ``kid``; refetches when the set is old or the kid unknown (rate-limited)."""
        keys = self._keys
        now = self._clock()
        if keys is not None and now - self._fetched_at < self.ttl:
            found = keys.get(kid)
            if found is not None or now - self._attempted_at < self.min_refetch_interval:
                return found
        async with self._lock:
            # Another caller may have fetched while this one waited for the lock.
            keys = self._keys
            now = self._clock()
            stale = keys is None or now - self._fetched_at >= self.ttl
            if (stale or kid not in (keys or {})) and now - self._attempted_at >= self.min_refetch_interval:
                await self._fetch()
            if self._keys is None:
                raise JWKSUnavailable(f"could not fetch {self.url}")
            return self._keys.get(kid)

    async def refresh(self) -> None:
        """Fetch now, ignoring the rate limit (e.g. at start-up)."""
        async with self._lock:
            await self._fetch()
        if self._keys is None:
            raise JWKSUnavailable(f"could not fetch {self.url}")

    @property
    def kids(self) -> frozenset[str]:
        """The kids currently cached."""
        return frozenset(self._keys or ())

    async def aclose(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        self.fetches += 1
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.get(
                self.url, timeout=aiohttp.ClientTimeout(total=self.timeout), headers={"Accept": "application/json"}
            ) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                body = await resp.content.read(self.max_bytes + 1)
            if len(body) > self.max_bytes:
                raise ValueError("JWKS document too large")
            keys = keys_from_jwks(orjson.loads(body))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # orjson.JSONDecodeError is a ValueError. Keep the old keys: see the module doc.
            log.warning("JWKS fetch from %s failed: %s", self.url, exc)
            return
        self._keys = keys
        self._fetched_at = self._clock()


__all__ = ["JWKSClient", "JWKSUnavailable", "KeySource", "VerificationKey", "algorithm_of", "keys_from_jwks"]
