"""Deny entries: which revocations apply to an access token, and revoking single tokens.

The rule, written once (``denied``): a token is denied when
  * its ``jti`` has a deny entry, or
  * its ``sid`` has a deny entry (its session was logged out or revoked), or
  * its ``sub`` has a cut-off and the token's ``iat`` is at or before the cut-off second, or
  * its ``iat`` is before its partition's boot marker (the store was wiped after the
    token was issued, taking any deny entry for it along; see ``store``).
At equal seconds the cut-off denies: a cut-off means "everything issued up to now",
and the service never mints a token in its user's cut-off second (it waits it out).
The boot marker lets its own second pass: tokens minted just after a fresh start or a
wipe must work, and waiting a second on every first login would be worse than the
sub-second window it closes.

Every deny entry expires when the last token it could match stops verifying: a jti
at the token's ``exp`` plus leeway; a sid or a cut-off at the revocation time plus the
access-token lifetime plus leeway. Writing goes through the Lua prelude
(``lua/_revoke.lua``) that also emits the event.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

from . import logs
from .config import Settings
from .errors import InvalidRequest, InvalidToken, NotFound, UnauthorizedClient, UnsupportedTokenType
from .metrics import Metrics
from .sessions import Sessions
from .store import EVENTS_CHANNEL, Store
from .tokens import ACCESS_TOKEN_TYPE, ID_RE, MAX_TOKEN_BYTES, AccessClaims, AccessTokens, RefreshToken


def denied(jti_entry: Any, sid_entry: Any, cutoff_entry: Any, iat: int, boot: int = 0) -> bool:
    """Apply the deny rule to the three entries found for a token and its partition's boot marker."""
    if jti_entry is not None or sid_entry is not None or iat < boot:
        return True
    return cutoff_entry is not None and iat <= int(cutoff_entry)


class Revocations:
    """Checks and writes deny entries."""

    def __init__(self, store: Store, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.store = store
        self.settings = settings
        self.keys = store.keys
        self.metrics = metrics or Metrics()

    async def is_denied(self, claims: AccessClaims) -> bool:
        """One read (batched with concurrent checks): the three deny entries that could match and
        the boot marker, then the rule."""
        k = self.keys
        p = self.keys.partition_of_sub(claims.sub)
        entries = await self.store.reads.mget(
            k.deny_jti(p, claims.jti), k.deny_sid(p, claims.sid), k.cutoff(p, claims.sub), k.boot(p)
        )
        boot = int(entries[3]) if entries[3] is not None else await self.store.ensure_boot(p)
        return denied(entries[0], entries[1], entries[2], claims.iat, boot)

    async def revoke_jti(self, jti: str, exp: int, reason: str) -> int:
        """Deny one access token until it expires (+ leeway); the event seq, 0 if already expired."""
        return await self._revoke("jti", jti, (exp + self.settings.leeway) * 1000, reason)

    async def revoke_sid(self, sid: str, reason: str) -> int:
        """Deny a session's access tokens when there is no session left to end."""
        return await self._revoke("sid", sid, 0, reason)

    async def _revoke(self, kind: str, ident: str, until_ms: int, reason: str) -> int:
        if not ID_RE.match(ident) or self.keys.partition_of_id(ident) >= self.settings.partitions:
            raise InvalidRequest(f"{kind} is not one of ours")
        p = self.keys.partition_of_id(ident)
        now = int(time.time() * 1000)
        until_ms = until_ms or now + self.settings.deny_ttl * 1000
        deny_key = self.keys.deny_jti(p, ident) if kind == "jti" else self.keys.deny_sid(p, ident)
        retention = self.settings.event_retention * 1000
        seq = int(
            await self.store.run_confirmed(
                self.store.scripts.revoke,
                keys=[deny_key, self.keys.seq(p), self.keys.stream(p)],
                args=[now, kind, ident, 0, until_ms, reason[:200], retention, EVENTS_CHANNEL, p],
            )
        )
        if seq:
            audit_kind = "jti" if kind == "jti" else "session"
            self.metrics.revoked(audit_kind, reason)
            logs.audit_revocation(audit_kind, ident, reason)
        return seq


class Revoker:
    """RFC 7009 and admin revocation: one entry point per way of naming what to revoke."""

    def __init__(self, tokens: AccessTokens, sessions: Sessions, revocations: Revocations) -> None:
        self.tokens = tokens
        self.sessions = sessions
        self.revocations = revocations

    async def revoke(self, raw: str, hint: str | None, *, owner: str | None = None) -> None:
        """Revoke a presented token of either type; unknown tokens are silently fine (RFC 7009 §2.2).

        The hint only orders the search: a token not found as the hinted type is looked
        up as the other type. ``owner``: the revoking client, when it may revoke only
        tokens issued through it.
        """
        del hint  # both types are recognisable by shape, so the hint cannot change the answer
        if RefreshToken.parse(raw) is not None:
            await self.sessions.logout(raw, client_id=owner)
            return
        try:
            claims = self.tokens.verify(raw)
        except InvalidToken:
            if _foreign_jwt_type(raw):
                raise UnsupportedTokenType("only access and refresh tokens can be revoked here") from None
            return
        if owner is not None and claims.client_id != owner:
            raise UnauthorizedClient("the token was not issued through this client")
        await self.revocations.revoke_jti(claims.jti, claims.exp, "revoked")

    async def revoke_id(self, kind: str, ident: str, *, exp: int = 0, reason: str = "admin") -> int:
        """Admin revocation by jti (with its exp), sid (ends the session too) or sub (cut-off now)."""
        if kind == "jti":
            return await self.revocations.revoke_jti(ident, exp, reason)
        if kind == "sid":
            try:
                await self.sessions.end(ident, reason=reason)
            except NotFound:
                await self.revocations.revoke_sid(ident, reason)
            return 1
        return await self.sessions.end_all(ident, reason=reason)


def _foreign_jwt_type(raw: str) -> bool:
    """A well-formed JWT whose typ says it is not an access token (an ID token, say)."""
    if raw.count(".") != 2 or len(raw) > MAX_TOKEN_BYTES:
        return False
    try:
        typ = jwt.get_unverified_header(raw).get("typ")
    except jwt.PyJWTError:
        return False
    return isinstance(typ, str) and typ.lower().removeprefix("application/") != ACCESS_TOKEN_TYPE
