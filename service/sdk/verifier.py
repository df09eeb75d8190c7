"""Verify a Tokenward access token exactly as the service does, then check the deny cache.

The rules (mirroring ``AccessTokens.verify`` in the service):

* at most ``max_token_bytes`` (4096) and three dot-separated parts, before any parsing;
* ``kid`` required and known; the algorithm is the key's, never the token's;
* headers ``jku``, ``x5u``, ``jwk``, ``x5c`` and ``crit`` are refused;
* ``typ`` is ``at+jwt`` (case-insensitive, ``application/`` prefix allowed; RFC 9068);
* ``iss``, ``aud``, ``exp``, ``iat``, ``jti``, ``sid``, ``sub`` required; ``iss`` and
  ``aud`` must match; ``exp`` and ``iat`` checked with ``leeway`` seconds;
* then the deny rule over the cache (``DenyCache.is_denied``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt

from .cache import DenyCache
from .jwks import KeySource, VerificationKey

ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - a media type, not a secret
MAX_TOKEN_BYTES: Final = 4096
REQUIRED_CLAIMS: Final = ("iss", "sub", "aud", "exp", "iat", "jti", "sid")
_FORBIDDEN_HEADERS: Final = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
#: A sid or jti: the partition as two hex digits, then the random part (docs/events.md).
ID_RE: Final = re.compile(r"^[0-9a-f]{2}[A-Za-z0-9_-]{1,62}\Z")  # \Z: "$" also matches before a final newline


class InvalidToken(Exception):
    """The token is malformed, not ours, expired, or otherwise unacceptable (answer 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RevokedToken(InvalidToken):
    """The token verifies but a revocation denies it (answer 401)."""


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims a resource server acts on; ``raw`` holds all of them."""

    sub: str
    sid: str
    jti: str
    iat: int
    exp: int
    scope: str
    client_id: str
    raw: Mapping[str, Any]

    @property
    def scopes(self) -> frozenset[str]:
        """``scope`` split on spaces."""
        return frozenset(self.scope.split())


class Verifier:
    """Signature, claims, then revocation."""

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        cache: DenyCache | None = None,
        leeway: int = 5,
        max_token_bytes: int = MAX_TOKEN_BYTES,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.cache = cache
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self._jwt = jwt.PyJWT()

    async def verify(self, token: str) -> Claims:
        """Verify a token; raise :class:`InvalidToken` (or :class:`RevokedToken`)."""
        header = self.header(token)
        kid = header.get("kid")
        key = await self.keys.get_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown key")
        claims = self.verify_with(token, header, key)
        if self.cache is not None and self.cache.is_denied(claims.jti, claims.sid, claims.sub, claims.iat):
            raise RevokedToken("the token has been revoked")
        return claims

    def header(self, token: str) -> dict[str, Any]:
        """The unverified header, after the size and shape checks."""
        if len(token) > self.max_token_bytes or token.count(".") != 2:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        return header

    def verify_with(self, token: str, header: Mapping[str, Any], key: VerificationKey) -> Claims:
        """Check header rules, signature and claims against one key (no deny check)."""
        if header.get("alg") != key.alg or _FORBIDDEN_HEADERS & header.keys():
            raise InvalidToken("unacceptable header")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") != ACCESS_TOKEN_TYPE:
            raise InvalidToken("not an access token")
        try:
            claims = self._jwt.decode(
                token,
                key.key,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_iat": True},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidToken("invalid token") from None
        return parse_claims(claims)


def parse_claims(claims: Mapping[str, Any]) -> Claims:
    """The typed claims of a signature-checked payload; InvalidToken when any is malformed.

    The service applies this same function, so both sides refuse the same tokens.
    """
    sub, sid, jti = claims.get("sub"), claims.get("sid"), claims.get("jti")
    iat, exp = claims.get("iat"), claims.get("exp")
    scope, client_id = claims.get("scope", ""), claims.get("client_id", "")
    if not (isinstance(sub, str) and isinstance(sid, str) and isinstance(jti, str)):
        raise InvalidToken("invalid claims")
    if not (isinstance(iat, int) and isinstance(exp, int)) or isinstance(iat, bool) or isinstance(exp, bool):
        raise InvalidToken("invalid claims")
    if not (isinstance(scope, str) and isinstance(client_id, str)):
        raise InvalidToken("invalid claims")
    if not (ID_RE.match(sid) and ID_RE.match(jti)) or not 0 < len(sub) <= 255:
        raise InvalidToken("invalid claims")
    return Claims(sub=sub, sid=sid, jti=jti, iat=iat, exp=exp, scope=scope, client_id=client_id, raw=claims)


__all__ = [
    "ACCESS_TOKEN_TYPE",
    "ID_RE",
    "MAX_TOKEN_BYTES",
    "Claims",
    "InvalidToken",
    "RevokedToken",
    "Verifier",
    "parse_claims",
]
