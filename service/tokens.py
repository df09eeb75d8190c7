"""Access tokens (JWT, RFC 9068) and opaque refresh tokens.

Refresh token: ``twr_<sid>.<gen>.<secret>.<tag>``. The sid routes to the session; the
generation counts rotations; the secret (192 random bits) is stored only as a hash;
the tag is an HMAC of the rest under the session's tag key, so a rotated token can be
told apart from a forged one without keeping a marker per rotation. The prefix lets
secret scanners recognise a leaked token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt
import orjson

from .errors import InvalidToken
from .keys import KeyRing

ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - a media type, not a secret
MAX_TOKEN_BYTES: Final = 4096
REQUIRED_CLAIMS: Final = ("iss", "sub", "aud", "exp", "iat", "jti", "sid")
REFRESH_PREFIX: Final = "twr_"
RESERVED_CLAIMS: Final = frozenset(
    {
        "iss",
        "sub",
        "aud",
        "exp",
        "nbf",
        "iat",
        "jti",
        "sid",
        "scope",
        "client_id",
        "typ",
        "cnf",
        "azp",
        "auth_time",
        "acr",
        "amr",
    }
)
_FORBIDDEN_HEADERS: Final = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
ID_RE: Final = re.compile(r"^[0-9a-f]{2}[A-Za-z0-9_-]{1,62}$")
_REFRESH_RE: Final = re.compile(
    r"^twr_([0-9a-f]{2}[A-Za-z0-9_-]{22})\.(0|[1-9][0-9]{0,8})\.([A-Za-z0-9_-]{32})\.([0-9a-f]{16})$"
)


def new_id(partition: int) -> str:
    """A sid or jti: the partition in two hex digits, then 128 random bits."""
    return f"{partition:02x}{secrets.token_urlsafe(16)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A parsed refresh token."""

    sid: str
    gen: int
    secret: str
    tag: str

    @property
    def hash(self) -> str:
        """What Redis stores instead of the secret."""
        return secret_hash(self.secret)

    def __str__(self) -> str:
        return f"{REFRESH_PREFIX}{self.sid}.{self.gen}.{self.secret}.{self.tag}"

    def __repr__(self) -> str:
        return f"RefreshToken(sid={self.sid!r}, gen={self.gen})"

    @classmethod
    def parse(cls, raw: str) -> RefreshToken | None:
        """Parse strictly; None for anything that is not one of ours."""
        m = _REFRESH_RE.match(raw)
        if m is None:
            return None
        return cls(sid=m[1], gen=int(m[2]), secret=m[3], tag=m[4])

    @classmethod
    def issue(cls, sid: str, gen: int, tag_key: str, secret: str | None = None) -> RefreshToken:
        """A token for a generation, tagged under the session's tag key."""
        secret = secret or new_secret()
        return cls(sid=sid, gen=gen, secret=secret, tag=tag(tag_key, sid, gen, secret))

    def authentic(self, tag_key: str) -> bool:
        """True when the session's tag key issued this token (constant-time)."""
        return hmac.compare_digest(self.tag, tag(tag_key, self.sid, self.gen, self.secret))


def new_secret() -> str:
    """192 random bits, URL-safe."""
    return _b64(secrets.token_bytes(24))


def secret_hash(secret: str) -> str:
    """SHA-256 of a refresh secret, 128 bits kept: preimage resistance is what matters."""
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def tag(tag_key: str, sid: str, gen: int, secret: str) -> str:
    """HMAC-SHA256 over the token's parts, 64 bits kept."""
    mac = hmac.new(bytes.fromhex(tag_key), f"{sid}.{gen}.{secret}".encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


def seal(successor: str, presented: str) -> str:
    """Hide the successor secret so only the holder of the presented secret can open it.

    Grace answers must return the same successor again, but Redis keeps no token in the
    clear: the successor is XORed with a pad derived from the previous secret.
    """
    pad = hashlib.sha256(b"tokenward-grace:" + presented.encode()).digest()
    raw = base64.urlsafe_b64decode(successor + "=" * (-len(successor) % 4))
    return bytes(a ^ b for a, b in zip(raw, pad, strict=False)).hex()


def unseal(sealed: str, presented: str) -> str:
    """Inverse of ``seal``."""
    pad = hashlib.sha256(b"tokenward-grace:" + presented.encode()).digest()
    raw = bytes(a ^ b for a, b in zip(bytes.fromhex(sealed), pad, strict=False))
    return _b64(raw)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified claims of an access token that the service acts on."""

    sub: str
    sid: str
    jti: str
    iat: int
    exp: int
    scope: str
    client_id: str
    raw: Mapping[str, Any]


class AccessTokens:
    """Signs access tokens with the ring's signer and verifies them against the ring."""

    def __init__(self, ring: KeyRing, issuer: str, audience: str, ttl: int, leeway: int) -> None:
        self.ring = ring
        # One options dict, built once: PyJWT's defaults check neither iss nor typ nor presence.
        self._options: dict[str, Any] = {"require": list(REQUIRED_CLAIMS), "verify_iat": True}
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.leeway = leeway

    def mint(
        self,
        *,
        sub: str,
        sid: str,
        jti: str,
        iat: int,
        scope: str,
        client_id: str,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed access token; ``extra`` never overrides reserved claims."""
        claims: dict[str, Any] = dict(extra or {})
        claims.update(
            iss=self.issuer,
            sub=sub,
            aud=self.audience,
            exp=iat + self.ttl,
            iat=iat,
            jti=jti,
            sid=sid,
            client_id=client_id,
        )
        if scope:
            claims["scope"] = scope
        signer = self.ring.signer
        return jwt.encode(
            claims,
            signer.private,
            algorithm=signer.alg,
            headers={"typ": ACCESS_TOKEN_TYPE, "kid": signer.kid},
        )

    def verify(self, token: str) -> AccessClaims:
        """Verify signature and claims; raise InvalidToken for anything wrong.

        The algorithm comes from the key named by ``kid``, never from the token; the size
        is capped before any parsing; a token whose lifetime exceeds ours is refused,
        because deny entries for its session would expire before it does.
        """
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        kid = header.get("kid")
        key = self.ring.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown key")
        if header.get("alg") != key.alg or _FORBIDDEN_HEADERS & header.keys():
            raise InvalidToken("unacceptable header")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower().removeprefix("application/") != ACCESS_TOKEN_TYPE:
            raise InvalidToken("not an access token")
        try:
            claims = jwt.decode(
                token,
                key.public,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=self._options,  # type: ignore[arg-type]
            )
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, orjson.JSONDecodeError):
            raise InvalidToken("invalid token") from None
        found = _claims(claims)
        if found.exp - found.iat > self.ttl:
            raise InvalidToken("lifetime longer than this issuer grants")
        return found


def _claims(claims: Mapping[str, Any]) -> AccessClaims:
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
    return AccessClaims(sub=sub, sid=sid, jti=jti, iat=iat, exp=exp, scope=scope, client_id=client_id, raw=claims)
