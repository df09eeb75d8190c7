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
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt

from .errors import InvalidToken
from .keys import KeyRing
from .sdk import verifier as sdk_verifier
from .sdk.jwks import VerificationKey

# The token rules are the SDK's (service/sdk/verifier.py); these names are kept for the service.
ACCESS_TOKEN_TYPE: Final = sdk_verifier.ACCESS_TOKEN_TYPE
MAX_TOKEN_BYTES: Final = sdk_verifier.MAX_TOKEN_BYTES
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
        # RFC 8693 delegation: a resource server would read them as "acting for" someone.
        "act",
        "may_act",
    }
)
# Verified tokens remembered per process: ~2 kB each, so at most ~20 MB.
VERIFIED_CACHE_SIZE: Final = 10_000
_REFRESH_RE: Final = re.compile(
    r"^twr_([0-9a-f]{2}[A-Za-z0-9_-]{22})\.(0|[1-9][0-9]{0,8})\.([A-Za-z0-9_-]{32})\.([0-9a-f]{16})$"
)

#: The claims the service acts on: the SDK's type, so both sides parse tokens alike.
AccessClaims = sdk_verifier.Claims
ID_RE = sdk_verifier.ID_RE


def new_id(partition: int) -> str:
    """A sid: the partition in two hex digits, then 128 random bits."""
    return f"{partition:02x}{secrets.token_urlsafe(16)}"


def new_jti(partition: int) -> str:
    """A jti: the partition in two hex digits, then 96 random bits.

    96 bits keep accidental reuse negligible (about 1e-5 after 10^12 tokens) and bring
    the deny key ``tw:{p}:dj:<jti>`` to 28 bytes, inside jemalloc's 32-byte class: a
    deny entry then costs ~117 bytes of Redis instead of ~133.
    """
    return f"{partition:02x}{secrets.token_urlsafe(12)}"


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
    def hash(self) -> bytes:
        """What Redis stores instead of the secret."""
        return secret_hash(self.secret)

    def __str__(self) -> str:
        return f"{REFRESH_PREFIX}{self.sid}.{self.gen}.{self.secret}.{self.tag}"

    def __repr__(self) -> str:
        return f"RefreshToken(sid={self.sid!r}, gen={self.gen})"

    @classmethod
    def parse(cls, raw: str) -> RefreshToken | None:
        """Parse strictly; None for anything that is not one of ours."""
        m = _REFRESH_RE.fullmatch(raw)  # match() would let a trailing newline through ($)
        if m is None:
            return None
        return cls(sid=m[1], gen=int(m[2]), secret=m[3], tag=m[4])

    @classmethod
    def issue(cls, sid: str, gen: int, tag_key: bytes, secret: str | None = None) -> RefreshToken:
        """A token for a generation, tagged under the session's tag key."""
        secret = secret or new_secret()
        return cls(sid=sid, gen=gen, secret=secret, tag=tag(tag_key, sid, gen, secret))

    def authentic(self, tag_key: bytes) -> bool:
        """True when the session's tag key issued this token (constant-time)."""
        return hmac.compare_digest(self.tag, tag(tag_key, self.sid, self.gen, self.secret))


def new_secret() -> str:
    """192 random bits, URL-safe."""
    return _b64(secrets.token_bytes(24))


def secret_hash(secret: str) -> bytes:
    """SHA-256 of a refresh secret, 128 bits kept (raw bytes, as Redis stores them).

    Preimage resistance is what matters.
    """
    return hashlib.sha256(secret.encode()).digest()[:16]


def tag(tag_key: bytes, sid: str, gen: int, secret: str) -> str:
    """HMAC-SHA256 over the token's parts, 64 bits kept."""
    mac = hmac.new(tag_key, f"{sid}.{gen}.{secret}".encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


def seal(successor: str, presented: str) -> bytes:
    """Hide the successor secret so only the holder of the presented secret can open it.

    Grace answers must return the same successor again, but Redis keeps no token in the
    clear: the successor is XORed with a pad derived from the previous secret. The
    result is the raw 24 bytes Redis stores.
    """
    pad = hashlib.sha256(b"tokenward-grace:" + presented.encode()).digest()
    raw = base64.urlsafe_b64decode(successor + "=" * (-len(successor) % 4))
    return bytes(a ^ b for a, b in zip(raw, pad, strict=False))


def unseal(sealed: bytes, presented: str) -> str:
    """Inverse of ``seal``."""
    pad = hashlib.sha256(b"tokenward-grace:" + presented.encode()).digest()
    raw = bytes(a ^ b for a, b in zip(sealed, pad, strict=False))
    return _b64(raw)


class AccessTokens:
    """Signs access tokens with the ring's signer and verifies them against the ring."""

    def __init__(self, ring: KeyRing, issuer: str, audience: str, ttl: int, leeway: int) -> None:
        self.ring = ring
        self.issuer = issuer
        self.audience = audience
        self.ttl = ttl
        self.leeway = leeway
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()
        self._keys = RingKeys(ring)
        self._rules = sdk_verifier.Verifier(self._keys, issuer=issuer, audience=audience, leeway=leeway, access_ttl=ttl)

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

        A token verified once is remembered (bounded LRU, keyed by the exact string) until
        it expires: the same string under the same keys always verifies the same way, and
        only ``exp`` can change the answer later, so a hit re-checks ``exp`` alone. Only
        the signature and claims are cached here, never a deny decision.
        """
        hit = self._verified.get(token)
        if hit is not None:
            if time.time() < hit.exp + self.leeway:
                self._verified.move_to_end(token)
                return hit
            del self._verified[token]
        found = self._verify(token)
        self._verified[token] = found
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return found

    def _verify(self, token: str) -> AccessClaims:
        # The SDK's rules, applied by the SDK's verifier (its synchronous half: the keys are
        # local): the service and every resource server accept exactly the same tokens
        # (tests/sdk/test_token_rules.py).
        try:
            header = self._rules.header(token)
            kid = header.get("kid")
            key = self._keys.find(kid) if isinstance(kid, str) else None
            if key is None:
                raise sdk_verifier.InvalidToken("unknown key")
            return self._rules.verify_with(token, header, key)
        except sdk_verifier.InvalidToken as exc:
            raise InvalidToken(exc.reason) from None


class RingKeys:
    """The key ring as the SDK's ``KeySource``: each key with its one algorithm."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._keys: dict[str, VerificationKey] = {}

    def find(self, kid: str) -> VerificationKey | None:
        """The verification key for ``kid``, or None when the ring has none."""
        found = self._keys.get(kid)
        if found is None:
            key = self._ring.get(kid)
            if key is None:
                return None
            found = self._keys[kid] = VerificationKey(kid=key.kid, alg=key.alg, key=key.public)
        return found

    async def get_key(self, kid: str) -> VerificationKey | None:
        """``find``, as the SDK's ``KeySource`` asks for it."""
        return self.find(kid)
