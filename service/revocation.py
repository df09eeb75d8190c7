"""Deny entries: which revocations apply to an access token, and revoking single tokens.

The rule, written once (``denied``): a token is denied when
  * its ``jti`` has a deny entry, or
  * its ``sid`` has a deny entry (its session was logged out or revoked), or
  * its ``sub`` has a cut-off and the token's ``iat`` is at or before the cut-off second.
At equal seconds the token is denied: a cut-off means "everything issued up to now",
and the service never mints a token in its user's cut-off second (it waits it out).

Every deny entry expires when the last token it could match stops verifying: a jti
at the token's ``exp`` plus leeway; a sid or a cut-off at the revocation time plus the
access-token lifetime plus leeway. Writing goes through the Lua prelude
(``lua/_revoke.lua``) that also emits the event.
"""

from __future__ import annotations

import time
from typing import Any

from .config import Settings
from .errors import InvalidRequest
from .store import EVENTS_CHANNEL, Store
from .tokens import AccessClaims


def denied(jti_entry: Any, sid_entry: Any, cutoff_entry: Any, iat: int) -> bool:
    """Apply the deny rule to the three entries found for a token."""
    if jti_entry is not None or sid_entry is not None:
        return True
    return cutoff_entry is not None and iat <= int(cutoff_entry)


class Revocations:
    """Checks and writes deny entries."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.keys = store.keys

    async def is_denied(self, claims: AccessClaims) -> bool:
        """One round trip: the three deny entries that could match, then the rule."""
        k = self.keys
        p = self.keys.partition_of_sub(claims.sub)
        entries = await self.store.client.mget(
            k.deny_jti(p, claims.jti), k.deny_sid(p, claims.sid), k.cutoff(p, claims.sub)
        )
        return denied(entries[0], entries[1], entries[2], claims.iat)

    async def revoke_jti(self, jti: str, exp: int, reason: str) -> int:
        """Deny one access token until it expires; returns the event seq (0 if already expired)."""
        if not 3 <= len(jti) <= 64 or not all(c in "0123456789abcdef" for c in jti[:2]):
            raise InvalidRequest("jti is not one of ours")
        p = self.keys.partition_of_id(jti)
        now = int(time.time() * 1000)
        until = (exp + self.settings.leeway) * 1000
        k = self.keys
        seq = int(
            await self.store.scripts.revoke(
                keys=[k.deny_jti(p, jti), k.seq(p), k.stream(p)],
                args=[now, "jti", jti, 0, until, reason[:200], self.settings.event_retention * 1000, EVENTS_CHANNEL, p],
            )
        )
        if seq:
            await self.store.confirm()
        return seq
