"""Test helpers for resource servers: sign tokens like the service, feed revocations without Redis.

``TokenFactory`` owns key pairs, publishes them as a JWKS (``jwks()``), serves them to a
:class:`~service.sdk.verifier.Verifier` without HTTP (``key_source()``) and signs access
tokens with the claims the service puts in them. ``FakeFeed`` applies revocation events
straight to a :class:`~service.sdk.cache.DenyCache` and stands in for the listener in
the middleware's stale policy (``feed.staleness = 60`` makes it stale).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from .cache import DenyCache
from .events import Event, Kind
from .jwks import VerificationKey, keys_from_jwks
from .verifier import ACCESS_TOKEN_TYPE

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def new_id(partition: int = 0) -> str:
    """A sid or jti in the service's shape: the partition as two hex digits, then 128 random bits."""
    return f"{partition:02x}{secrets.token_urlsafe(16)}"


def _generate(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown algorithm {alg!r}")


def _public_jwk(kid: str, alg: str, key: PrivateKey) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        raw = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        raw = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        raw = OKPAlgorithm.to_jwk(public, as_dict=True)
    public_parts = {k: v for k, v in raw.items() if k in {"kty", "n", "e", "crv", "x", "y"}}
    return {**public_parts, "kid": kid, "alg": alg, "use": "sig"}


class TokenFactory:
    """Key pairs, their JWKS, and access tokens shaped like the service's."""

    def __init__(
        self,
        *,
        issuer: str = "https://tokenward.test",
        audience: str = "api.test",
        alg: str = "RS256",
        kid: str = "test-1",
        ttl: int = 300,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self._keys: dict[str, tuple[str, PrivateKey]] = {}
        self._retired: dict[str, tuple[str, PrivateKey]] = {}
        self.signing_kid = kid
        self.add_key(kid, alg)

    def add_key(self, kid: str, alg: str = "RS256", *, sign: bool = True) -> None:
        """Add a key (and, by default, sign with it from now on): a rotation."""
        self._keys[kid] = (alg, _generate(alg))
        if sign:
            self.signing_kid = kid

    def retire_key(self, kid: str) -> None:
        """Remove a key from the JWKS (it can still sign, to test that such tokens fail)."""
        self._retired[kid] = self._keys.pop(kid)

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document."""
        return {"keys": [_public_jwk(kid, alg, key) for kid, (alg, key) in self._keys.items()]}

    def jwks_bytes(self) -> bytes:
        """The JWKS as JSON bytes (to serve from a fake endpoint)."""
        return orjson.dumps(self.jwks())

    def key_source(self) -> StaticKeys:
        """A KeySource that reads this factory's current keys, no HTTP involved."""
        return StaticKeys(self)

    def token(
        self,
        *,
        sub: str = "alice",
        sid: str | None = None,
        jti: str | None = None,
        iat: int | None = None,
        exp: int | None = None,
        scope: str = "",
        client_id: str = "test-client",
        extra: Mapping[str, Any] | None = None,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed access token; ``extra`` may override anything (to build bad tokens)."""
        kid = kid or self.signing_kid
        alg, key = self._keys.get(kid) or self._retired[kid]
        now = int(time.time()) if iat is None else iat
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": self.audience,
            "exp": now + self.ttl if exp is None else exp,
            "iat": now,
            "jti": jti or new_id(),
            "sid": sid or new_id(),
            "client_id": client_id,
        }
        if scope:
            claims["scope"] = scope
        claims.update(extra or {})
        header = {"typ": ACCESS_TOKEN_TYPE, "kid": kid, **(headers or {})}
        return jwt.encode(claims, key, algorithm=alg, headers=header)


class StaticKeys:
    """KeySource over a TokenFactory's keys (parsed through the real JWKS code)."""

    def __init__(self, factory: TokenFactory) -> None:
        self.factory = factory

    async def get_key(self, kid: str) -> VerificationKey | None:
        """The factory's current key for ``kid``."""
        return keys_from_jwks(self.factory.jwks()).get(kid)


class FakeFeed:
    """Revocations without Redis: each call builds an event and applies it to the cache."""

    def __init__(self, cache: DenyCache | None = None, *, partitions: int = 1, deny_ttl: int = 305) -> None:
        self.cache = cache if cache is not None else DenyCache()
        self.partitions = partitions
        self.deny_ttl = deny_ttl
        self.events: list[Event] = []
        #: Seconds since "last current": set it above the policy budget to simulate an outage.
        self.staleness = 0.0
        self.lag = 0.0
        self._seq: dict[int, int] = {}

    @property
    def healthy(self) -> bool:
        """True unless staleness was set."""
        return self.staleness == 0.0

    @property
    def last_seq(self) -> dict[int, int | None]:
        """Seq of the last event per partition."""
        return {p: self._seq.get(p) for p in range(self.partitions)}

    def revoke_jti(self, jti: str, until: int | None = None, *, reason: str = "test") -> Event:
        """Deny one token until ``until`` (default: the deny TTL from now)."""
        return self._emit("jti", jti, 0, until, reason)

    def revoke_sid(self, sid: str, until: int | None = None, *, reason: str = "test") -> Event:
        """Deny a session's tokens."""
        return self._emit("sid", sid, 0, until, reason)

    def cut_off(self, sub: str, before: int | None = None, until: int | None = None, *, reason: str = "test") -> Event:
        """Deny a user's tokens issued at or before ``before`` (default: now)."""
        return self._emit("sub", sub, int(time.time()) if before is None else before, until, reason)

    def emit(self, event: Event) -> None:
        """Apply an event built elsewhere."""
        self.events.append(event)
        self.cache.apply(event)

    def _emit(self, kind: Kind, ident: str, before: int, until: int | None, reason: str) -> Event:
        p = 0 if self.partitions == 1 or kind == "sub" else int(ident[:2], 16) % self.partitions
        seq = self._seq.get(p, 0) + 1
        self._seq[p] = seq
        now_ms = int(time.time() * 1000)
        event = Event(
            seq=seq,
            p=p,
            kind=kind,
            id=ident,
            before=before,
            until=until if until is not None else now_ms // 1000 + self.deny_ttl,
            at=now_ms,
            reason=reason,
            xid=f"{now_ms}-{seq}",
        )
        self.emit(event)
        return event


__all__ = ["FakeFeed", "StaticKeys", "TokenFactory", "new_id"]
