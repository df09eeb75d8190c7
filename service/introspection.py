"""What a gateway asks: is this token good right now? (RFC 7662, forward-auth).

One path for every caller: verify (``tokens.AccessTokens.verify``), then the deny rule
(``revocation``). Refresh tokens are looked up read-only: active while they are the
current token of a live session.
"""

from __future__ import annotations

import hmac
from typing import Any

from .errors import InvalidToken
from .revocation import Revocations
from .sessions import Sessions, now_ms, tag_key_of
from .store import text
from .tokens import AccessClaims, AccessTokens, RefreshToken


class Introspector:
    """Answers "is this token active" for access and refresh tokens."""

    def __init__(self, tokens: AccessTokens, revocations: Revocations, sessions: Sessions) -> None:
        self.tokens = tokens
        self.revocations = revocations
        self.sessions = sessions

    async def access(self, token: str) -> AccessClaims:
        """Verified, not revoked claims; InvalidToken otherwise."""
        claims = self.tokens.verify(token)
        if await self.revocations.is_denied(claims):
            raise InvalidToken("the token has been revoked")
        return claims

    async def introspect(self, token: str, hint: str | None) -> dict[str, Any] | None:
        """RFC 7662 members for an active token, None for anything else."""
        order = ("refresh_token", "access_token") if hint == "refresh_token" else ("access_token", "refresh_token")
        for kind in order:
            found = await (self._access(token) if kind == "access_token" else self._refresh(token))
            if found is not None:
                return found
        return None

    async def _access(self, token: str) -> dict[str, Any] | None:
        if token.startswith("twr_"):
            return None
        try:
            claims = await self.access(token)
        except InvalidToken:
            return None
        raw = claims.raw
        return {
            "active": True,
            "token_type": "access_token",
            "scope": claims.scope,
            "client_id": claims.client_id,
            "sub": claims.sub,
            "aud": raw["aud"],
            "iss": raw["iss"],
            "exp": claims.exp,
            "iat": claims.iat,
            "jti": claims.jti,
            "sid": claims.sid,
        }

    async def _refresh(self, raw: str) -> dict[str, Any] | None:
        token = RefreshToken.parse(raw)
        if token is None:
            return None
        keys = self.sessions.keys
        p = keys.partition_of_id(token.sid)
        client = self.sessions.store.client
        async with client.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.session(p, token.sid), "g", "h", "u", "c", "sc", "ca", "K", "k")
            pipe.pttl(keys.session(p, token.sid))
            fields, pttl = await pipe.execute()
        if fields[0] is None or int(fields[0]) != token.gen or int(pttl) <= 0:
            return None
        # Active means usable: the whole token, its tag included (see Sessions.refresh).
        tag_key = tag_key_of([fields[6], fields[7], fields[1]])
        if not hmac.compare_digest(bytes(fields[1]), token.hash) or tag_key is None or not token.authentic(tag_key):
            return None
        return {
            "active": True,
            "token_type": "refresh_token",
            "scope": text(fields[4] or b""),
            "client_id": text(fields[3]),
            "sub": text(fields[2]),
            "iss": self.tokens.issuer,
            "exp": (now_ms() + int(pttl)) // 1000,
            "iat": int(fields[5]),
            "sid": token.sid,
        }
