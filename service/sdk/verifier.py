"""Verify a Tokenward access token, then check the deny cache: the one rule set.

The service verifies its own tokens with these same functions (:func:`read_header`,
:func:`verify_token`; the server imports the SDK, never the reverse), so a token is
accepted by both or by neither. The rules:

* at most ``max_token_bytes`` (4096) and three dot-separated parts of unpadded base64url,
  before any parsing; the header a JSON object;
* ``kid`` required and known; the algorithm is the key's, never the token's;
* headers ``jku``, ``x5u``, ``jwk``, ``x5c``, ``crit`` and ``b64`` are refused (``b64``:
  RFC 7797 unencoded payloads are never minted);
* ``typ`` is ``at+jwt`` (case-insensitive, ``application/`` prefix allowed; RFC 9068);
* the payload a JSON object; ``iss``, ``aud``, ``exp``, ``iat``, ``jti``, ``sid``, ``sub``
  required; ``iss`` and ``aud`` must match; ``exp``, ``iat`` and ``nbf`` integers,
  checked with ``leeway`` seconds;
* a lifetime (``exp - iat``) no longer than ``access_ttl``: deny entries last the access
  TTL, so a longer-lived token would outlive its own revocation;
* then the deny rule over the cache (``DenyCache.is_denied``).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from jwt.algorithms import get_default_algorithms

from .cache import DenyCache
from .jwks import KeySource, VerificationKey

ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - a media type, not a secret
MAX_TOKEN_BYTES: Final = 4096
REQUIRED_CLAIMS: Final = ("iss", "sub", "aud", "exp", "iat", "jti", "sid")
#: The service's default TOKENWARD_ACCESS_TTL: the longest lifetime a token may claim.
DEFAULT_ACCESS_TTL: Final = 300
_FORBIDDEN_HEADERS: Final = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64"})
# Three parts of unpadded base64url, as JWS compact serialisation requires (RFC 7515 §2);
# fullmatch-anchored with \Z, which unlike $ refuses a trailing newline.
_COMPACT_RE: Final = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\Z")
_ALGORITHMS: Final = get_default_algorithms()
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
        access_ttl: int = DEFAULT_ACCESS_TTL,
    ) -> None:
        """``access_ttl``: the service's TOKENWARD_ACCESS_TTL (tokens claiming longer lives are refused)."""
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.cache = cache
        self.leeway = leeway
        self.max_token_bytes = max_token_bytes
        self.access_ttl = access_ttl

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
        return read_header(token, self.max_token_bytes)

    def verify_with(self, token: str, header: Mapping[str, Any], key: VerificationKey) -> Claims:
        """Check header rules, signature and claims against one key (no deny check)."""
        return verify_token(
            token,
            header,
            key,
            issuer=self.issuer,
            audience=self.audience,
            leeway=self.leeway,
            access_ttl=self.access_ttl,
        )


def _b64decode(segment: str) -> bytes:
    """Unpadded base64url (already checked against the alphabet); ValueError if malformed."""
    if len(segment) % 4 == 1:
        raise ValueError("impossible base64 length")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _segments(token: str, max_token_bytes: int = MAX_TOKEN_BYTES) -> list[str]:
    if len(token) > max_token_bytes or _COMPACT_RE.match(token) is None:
        raise InvalidToken("malformed token")
    return token.split(".")


def _json_object(segment: str, reason: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_b64decode(segment))
    except (ValueError, orjson.JSONDecodeError):
        raise InvalidToken(reason) from None
    if not isinstance(value, dict):
        raise InvalidToken(reason)
    return value


def read_header(token: str, max_token_bytes: int = MAX_TOKEN_BYTES) -> dict[str, Any]:
    """The unverified JOSE header of a compact JWS, after the size and shape checks; InvalidToken if malformed."""
    return _json_object(_segments(token, max_token_bytes)[0], "malformed token")


def verify_token(
    token: str,
    header: Mapping[str, Any],
    key: VerificationKey,
    *,
    issuer: str,
    audience: str,
    leeway: int,
    access_ttl: int,
    now: float | None = None,
) -> Claims:
    """Every rule of the module docstring but the key lookup and the deny check; InvalidToken if one fails.

    ``header`` is :func:`read_header`'s answer for ``token``, ``key`` the one its ``kid`` names.
    """
    head_b64, payload_b64, sig_b64 = _segments(token)
    if header.get("alg") != key.alg or _FORBIDDEN_HEADERS & header.keys():
        raise InvalidToken("unacceptable header")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != ACCESS_TOKEN_TYPE:
        raise InvalidToken("not an access token")
    # By hand with PyJWT's algorithm object: PyJWT's decode costs ~3x the RSA verification
    # itself (it parses the header twice and checks base64 one character at a time in Python).
    try:
        ok = _ALGORITHMS[key.alg].verify(f"{head_b64}.{payload_b64}".encode(), key.key, _b64decode(sig_b64))
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise InvalidToken("invalid token")
    claims = _json_object(payload_b64, "invalid token")
    _check_registered(claims, issuer, audience, leeway, time.time() if now is None else now)
    found = parse_claims(claims)
    if found.exp - found.iat > access_ttl:
        raise InvalidToken("lifetime longer than the issuer grants")
    return found


def _check_registered(claims: Mapping[str, Any], issuer: str, audience: str, leeway: int, now: float) -> None:
    """Presence, iss, aud, and the times (integers, within ``leeway``)."""
    for name in REQUIRED_CLAIMS:
        if claims.get(name) is None:
            raise InvalidToken("invalid token")
    if claims["iss"] != issuer:
        raise InvalidToken("invalid token")
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences) or audience not in audiences:
        raise InvalidToken("invalid token")
    iat, exp, nbf = claims["iat"], claims["exp"], claims.get("nbf")
    for value in (iat, exp) if nbf is None else (iat, exp, nbf):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidToken("invalid token")
    if iat > now + leeway or (nbf is not None and nbf > now + leeway) or exp <= now - leeway:
        raise InvalidToken("invalid token")


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
    "DEFAULT_ACCESS_TTL",
    "ID_RE",
    "MAX_TOKEN_BYTES",
    "Claims",
    "InvalidToken",
    "RevokedToken",
    "Verifier",
    "parse_claims",
    "read_header",
    "verify_token",
]
