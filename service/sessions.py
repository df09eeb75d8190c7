"""The session lifecycle: log in, rotate, list, log out. Every state change is one Lua script.

Grace semantics: the immediately previous refresh token, presented within
``TOKENWARD_REFRESH_GRACE`` seconds of its rotation, gets the same successor again
(and a fresh access token), at most ``TOKENWARD_REFRESH_GRACE_USES`` times; beyond
that count it is refused without revoking anything, because inside the window an
honest retry and a replay look the same. Outside the window, an authentic rotated
token is theft: the session (only that one) ends and its access tokens are denied.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import logs
from .anomalies import (
    SIGNALS_CHANNEL,
    UNKNOWN_ORIGIN,
    RefreshOrigin,
    derived_network,
    network_of,
    parse_reasons,
)
from .config import Settings
from .errors import InvalidGrant, InvalidScope, NotFound, StoreUnavailable, UnauthorizedClient
from .metrics import Metrics
from .store import EVENTS_CHANNEL, Store, text
from .tokens import (
    ID_RE,
    AccessTokens,
    RefreshToken,
    new_id,
    new_jti,
    new_secret,
    seal,
    secret_hash,
    unseal,
)

audit = logging.getLogger("tokenward.audit")
log = logging.getLogger(__name__)


def tag_key_of(fields: list[Any]) -> bytes | None:
    """The tag key from a session's ``K``, ``k``, ``h`` fields, in that order (layout in ``store``)."""
    found = next((value for value in fields if value is not None), None)
    return None if found is None else bytes(found)


@dataclass(frozen=True, slots=True)
class Device:
    """What the login backend tells us about the device, for the session list."""

    name: str = ""
    user_agent: str = ""
    ip: str = ""


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a login or a refresh hands back."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str
    scope: str


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One row of a session list."""

    id: str
    device_name: str
    user_agent: str
    ip: str
    created_at: int
    last_used_at: int
    expires_at: int
    current: bool
    last_ip: str = ""
    last_user_agent: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON shape of the row."""
        return {
            "id": self.id,
            "device_name": self.device_name,
            "user_agent": self.user_agent,
            "ip": self.ip,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "expires_at": self.expires_at,
            "current": self.current,
            "last_ip": self.last_ip,
            "last_user_agent": self.last_user_agent,
        }


def session_fields(
    *,
    sub: str,
    client_id: str,
    scope: str,
    secret_hash: bytes,
    tag_key: bytes,
    now: int,
    absolute: int,
    idle: int,
    claims: Mapping[str, Any] | None = None,
    device: Device = Device(),
) -> list[str | int | bytes]:
    """A new session's hash as field, value pairs (layout in ``store``), empty fields left out.

    Every value stays short (hashes and the tag key as raw bytes, times as integers) so the
    hash keeps Redis's compact listpack encoding, and what the scripts can derive is not
    stored: the last use (``ca``) and the login's network (when ``derived_network`` finds
    it). ``now`` and ``absolute`` are ms, ``idle`` s.
    """
    fields: list[str | int | bytes] = ["u", sub, "c", client_id]
    if scope:
        fields += ["sc", scope]
    fields += ["g", 0, "h", secret_hash, "K", tag_key, "ca", now // 1000, "ax", absolute, "it", idle]
    if claims:
        fields += ["x", orjson.dumps(dict(claims)).decode()]
    for name, value in (("dn", device.name), ("ua", device.user_agent), ("ip", device.ip)):
        if value:
            fields += [name, value]
    network = network_of(device.ip)
    if network != derived_network(device.ip):
        fields += ["nw", network]  # '' when the address only looks like one: no baseline
    return fields


def now_ms() -> int:
    """Wall-clock milliseconds: expiry is absolute time, shared with Redis."""
    return int(time.time() * 1000)


class Sessions:
    """Domain operations on sessions, written against the Store."""

    def __init__(
        self, store: Store, settings: Settings, tokens: AccessTokens, *, metrics: Metrics | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.tokens = tokens
        self.keys = store.keys
        self.metrics = metrics or Metrics()

    def revocation_args(self, now: int) -> tuple[int, int, str]:
        """(deny until ms, event retention ms, channel) for scripts that may revoke."""
        return now + self.settings.deny_ttl * 1000, self.settings.event_retention * 1000, EVENTS_CHANNEL

    async def create(
        self,
        *,
        sub: str,
        client_id: str,
        scope: str = "",
        claims: Mapping[str, Any] | None = None,
        remember_me: bool = False,
        device: Device = Device(),
    ) -> TokenPair:
        """Start a session for a user whose credentials the caller has checked."""
        s = self.settings
        idle, maximum = (
            (s.remember_idle_ttl, s.remember_max_ttl) if remember_me else (s.refresh_idle_ttl, s.refresh_max_ttl)
        )
        now = now_ms()
        p = self.keys.partition_of_sub(sub)
        sid = new_id(p)
        secret = new_secret()
        # Random, so no token holder can compute it: a tag then vouches even for a generation
        # the store lost (see rotate.lua).
        tag_key = secrets.token_bytes(16)
        refresh = RefreshToken.issue(sid, 0, tag_key, secret)
        absolute = now + maximum * 1000
        expires = min(now + idle * 1000, absolute)
        fields = session_fields(
            sub=sub,
            client_id=client_id,
            scope=scope,
            secret_hash=refresh.hash,
            tag_key=tag_key,
            now=now,
            absolute=absolute,
            idle=idle,
            claims=claims,
            device=device,
        )
        cutoff = await self.store.scripts.create_session(
            keys=[
                self.keys.session(p, sid),
                self.keys.user_index(p, sub),
                self.keys.cutoff(p, sub),
                self.keys.boot(p),
            ],
            args=[now, expires, absolute, sid, *fields],
        )
        access = await self._mint(sub, sid, p, scope, client_id, claims, cutoff, now // 1000)
        return TokenPair(access, s.access_ttl, str(refresh), (expires - now) // 1000, sid, scope)

    async def refresh(
        self, raw: str, *, client_id: str = "", scope: str = "", origin: RefreshOrigin = UNKNOWN_ORIGIN
    ) -> TokenPair:
        """Spend a refresh token for a new pair (RFC 6749 §6).

        ``origin`` (the caller's address and agent) is recorded on the session and compared
        with the previous refresh's under TOKENWARD_REFRESH_ANOMALY (see ``anomalies``).
        """
        token = RefreshToken.parse(raw)
        if token is None or self.keys.partition_of_id(token.sid) >= self.settings.partitions:
            self._outcome("invalid")
            raise InvalidGrant()
        logs.annotate(sid=token.sid)
        p = self.keys.partition_of_id(token.sid)
        tag_key = await self._tag_key(p, token)
        if tag_key is None:
            self._outcome("expired")
            raise InvalidGrant()
        if not token.authentic(tag_key):
            # A prefix with a made-up tag, or a forgery: accepted only whole, whatever the generation.
            self._outcome("invalid")
            raise InvalidGrant()
        now = now_ms()
        successor = new_secret()
        deny_until, retention, channel = self.revocation_args(now)
        k = self.keys
        result = await self.store.scripts.rotate(
            keys=[k.session(p, token.sid), k.deny_sid(p, token.sid), k.seq(p), k.stream(p), k.signals(p)],
            args=[
                now,
                token.gen,
                token.hash,
                tag_key,
                secret_hash(successor),
                seal(successor, token.secret),
                self.settings.refresh_grace * 1000,
                self.settings.refresh_grace_uses,
                client_id,
                scope,
                deny_until,
                retention,
                channel,
                p,
                token.sid,
                origin.ip,
                origin.network,
                origin.user_agent,
                self.settings.refresh_anomaly,
                self.settings.access_ttl,
                self.settings.refresh_burst,
                SIGNALS_CHANNEL,
            ],
        )
        return await self._after_rotate(token, p, successor, result, scope, now // 1000)

    async def _after_rotate(
        self, token: RefreshToken, p: int, successor: str, result: list[Any], scope: str, iat: int
    ) -> TokenPair:
        status = int(result[0])
        if status == 0:
            why = text(result[1])
            self._outcome("expired" if why == "expired" else "invalid")
            if why == "scope":
                raise InvalidScope("the requested scope exceeds the granted scope")
            raise InvalidGrant()
        if status == -1:
            self._outcome("reuse_detected")
            await self.store.confirm(p)
            self._revoked("session", token.sid, "refresh_token_reuse", by="service (reuse detection)")
            raise InvalidGrant()
        if status == -2:
            reasons = parse_reasons(text(result[1]))
            self._outcome("anomaly_revoked")
            self.metrics.refresh_anomaly(reasons, "revoke")
            await self.store.confirm(p)
            self._revoked(
                "session", token.sid, "refresh_anomaly", by="service (refresh anomaly policy)", anomalies=list(reasons)
            )
            raise InvalidGrant()
        if status == 4:
            # The store had lost the rotations that issued this token (a failover): counted, and
            # logged without the token, so an operator sees how often acknowledged writes vanish.
            log.warning("session %s moved forward past rotations the store lost", token.sid)
        self._outcome({1: "rotated", 2: "grace", 4: "recovered"}[status])
        gen, tag_key, sealed = int(result[1]), bytes(result[2]), bytes(result[3])
        sub, client_id, granted = text(result[4]), text(result[5]), text(result[6])
        logs.set_caller("user", sub, unless_known=True)
        claims = orjson.loads(result[7]) if result[7] else None
        absolute = int(result[8])
        reasons = parse_reasons(text(result[10]))
        if reasons:
            self.metrics.refresh_anomaly(reasons, "flag")
            audit.warning(
                "refresh of session %s flagged: %s",
                token.sid,
                ",".join(reasons),
                extra={"sid": token.sid, "sub": sub, "reasons": list(reasons), "action": "flag"},
            )
        secret = unseal(sealed, token.secret) if status == 2 else successor
        refresh = RefreshToken.issue(token.sid, gen, tag_key, secret)
        # iat is the time taken before the script ran: if a logout follows the rotation, the
        # token's exp + leeway never outlives the session's deny entry. No cut-off check is
        # needed: a session alive now was created after any cut-off of its user.
        access = self._sign(sub, token.sid, p, scope or granted, client_id, claims, iat)
        left = min(absolute, int(result[9])) - now_ms()
        return TokenPair(
            access, self.settings.access_ttl, str(refresh), max(left // 1000, 0), token.sid, scope or granted
        )

    def _outcome(self, outcome: str) -> None:
        self.metrics.refresh_outcome(outcome)
        logs.annotate(outcome=outcome)

    def _revoked(self, kind: str, ident: str, reason: str, count: int = 1, **fields: Any) -> None:
        """Count and audit an acknowledged revocation (the scripts emit one event each)."""
        self.metrics.revoked(kind, reason, count)
        logs.audit_revocation(kind, ident, reason, **fields)

    async def _mint(
        self,
        sub: str,
        sid: str,
        p: int,
        scope: str,
        client_id: str,
        claims: Mapping[str, Any] | None,
        cutoff: Any,
        iat: int,
    ) -> str:
        if cutoff is not None and iat <= int(cutoff):
            # A user cut-off denies tokens with iat <= it; never mint one that is born dead.
            await asyncio.sleep(max(int(cutoff) + 1 - time.time(), 0))
            iat = int(cutoff) + 1
        return self._sign(sub, sid, p, scope, client_id, claims, iat)

    def _sign(
        self, sub: str, sid: str, p: int, scope: str, client_id: str, claims: Mapping[str, Any] | None, iat: int
    ) -> str:
        return self.tokens.mint(
            sub=sub, sid=sid, jti=new_jti(p), iat=iat, scope=scope, client_id=client_id, extra=claims
        )

    async def _tag_key(self, p: int, token: RefreshToken) -> bytes | None:
        """The key the session tags its refresh tokens under; None when the session is gone.

        Read before the rotation script runs, because the tag (an HMAC, which Lua cannot
        compute) must be verified before anything is spent. Not cached: a process that knew
        live sessions' keys would refuse a forgery naming one faster than one naming nothing.
        """
        return tag_key_of(await self.store.client.hmget(self.keys.session(p, token.sid), "K", "k", "h"))

    async def logout(self, raw: str, *, client_id: str | None = None) -> bool:
        """End the session of a refresh token of any generation; False if it is not ours.

        The token must be whole and authentic (its tag verifies under the session's tag key),
        checked before anything else, so a forged token answers the same whatever session it
        names. A well-formed token whose session the store does not know has its sid denied
        for the access-token lifetime: its access tokens may outlive what a failover made the
        store forget, and denying a sid that exists nowhere harms no one. With ``client_id``,
        the session must have been created through that client.
        """
        token = RefreshToken.parse(raw)
        if token is None or self.keys.partition_of_id(token.sid) >= self.settings.partitions:
            return False
        p = self.keys.partition_of_id(token.sid)
        sub_b, client_b, *keys = await self.store.client.hmget(self.keys.session(p, token.sid), "u", "c", "K", "k", "h")
        tag_key = tag_key_of(keys)
        if tag_key is None:
            return await self._end(p, token.sid, "", "token", b"", "logout") is not None
        if not token.authentic(tag_key):
            return False
        if client_id is not None and text(client_b) != client_id:
            raise UnauthorizedClient("the token was not issued through this client")
        return await self._end(p, token.sid, text(sub_b), "token", tag_key, "logout") is not None

    async def end(self, sid: str, *, owner: str | None = None, reason: str = "logout") -> str:
        """End a session by id (the owner's, or any for an admin); NotFound if it is not there."""
        if not ID_RE.match(sid) or self.keys.partition_of_id(sid) >= self.settings.partitions:
            raise NotFound("no such session")
        p = self.keys.partition_of_id(sid)
        # The user index key needs the sub, which only the session knows: read it first.
        # A session that vanishes in between simply ends nowhere (the script checks).
        found = await self.store.client.hget(self.keys.session(p, sid), "u")
        sub = None
        if found is not None:
            mode, check = ("owner", owner) if owner is not None else ("admin", "")
            sub = await self._end(p, sid, text(found), mode, check, reason)
        if not sub:
            raise NotFound("no such session")
        return sub

    async def _end(self, p: int, sid: str, sub: str, mode: str, check: str | bytes, reason: str) -> str | None:
        """Run end_session, confirmed; the ended session's sub, '' for a denied unknown sid, None if nothing matched."""
        now = now_ms()
        deny_until, retention, channel = self.revocation_args(now)
        k = self.keys
        ended = await self.store.run_confirmed(
            self.store.scripts.end_session,
            keys=[k.session(p, sid), k.user_index(p, sub), k.deny_sid(p, sid), k.seq(p), k.stream(p)],
            args=[now, sid, mode, check, deny_until, reason, retention, channel, p],
        )
        if ended is None:
            return None
        sub = text(ended)
        self._revoked("session", sid, reason, **({"sub": sub} if sub else {"unknown_session": True}))
        return sub

    async def end_all(self, sub: str, *, keep_sid: str = "", reason: str = "logout_all") -> int:
        """Log a user out everywhere (or everywhere but ``keep_sid``); the number of sessions ended."""
        p = self.keys.partition_of_sub(sub)
        k = self.keys
        index = k.user_index(p, sub)
        for _ in range(50):
            sids = [text(s) for s in await self.store.client.zrange(index, 0, -1)]
            now = now_ms()
            deny_until, retention, channel = self.revocation_args(now)
            keys = [index, k.cutoff(p, sub), k.seq(p), k.stream(p)]
            for sid in sids:
                keys += [k.session(p, sid), k.deny_sid(p, sid)]
            ended = int(
                await self.store.run_confirmed(
                    self.store.scripts.end_user_sessions,
                    keys=keys,
                    args=[
                        now,
                        "others" if keep_sid else "all",
                        keep_sid,
                        deny_until,
                        reason,
                        retention,
                        channel,
                        p,
                        sub,
                        *sids,
                    ],
                )
            )
            if ended >= 0:
                if keep_sid:  # each other session was ended (and announced) on its own
                    self._revoked("session", sub, reason, ended, sessions_ended=ended, kept=keep_sid)
                else:  # one user cut-off covers them all
                    self._revoked("user", sub, reason, sessions_ended=ended)
                return ended
        # Fifty logins in a row raced this logout: answer 503 so the caller retries.
        raise StoreUnavailable("the session list kept changing; retry")  # pragma: no cover

    async def list(self, sub: str, *, current_sid: str = "") -> list[SessionInfo]:
        """The user's live sessions, oldest first."""
        p = self.keys.partition_of_sub(sub)
        index = self.keys.user_index(p, sub)
        sids = [text(s) for s in await self.store.client.zrangebyscore(index, now_ms(), "+inf")]
        if not sids:
            return []
        async with self.store.client.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hmget(self.keys.session(p, sid), "u", "ca", "la", "dn", "ua", "ip", "ri", "ru", "pt")
                pipe.pttl(self.keys.session(p, sid))
            rows = await pipe.execute()
        now = now_ms()
        out: list[SessionInfo] = []
        for i, sid in enumerate(sids):
            f, pttl = rows[2 * i], rows[2 * i + 1]
            if f[0] is None or text(f[0]) != sub or pttl is None or int(pttl) < 0:
                continue
            out.append(
                SessionInfo(
                    id=sid,
                    device_name=text(f[3] or b""),
                    user_agent=text(f[4] or b""),
                    ip=text(f[5] or b""),
                    created_at=int(f[1]),
                    # Stored only after a grace use; else the last rotation, else the login.
                    last_used_at=int(f[2]) if f[2] else int(f[8]) // 1000 if f[8] else int(f[1]),
                    expires_at=(now + int(pttl)) // 1000,
                    current=sid == current_sid,
                    # Until the first refresh, the last seen device is the login's.
                    last_ip=text(f[6] or f[5] or b""),
                    last_user_agent=text(f[7] or f[4] or b""),
                )
            )
        out.sort(key=lambda r: r.created_at)
        return out
