"""Protect routes with Tokenward access tokens: an aiohttp middleware and an ASGI one.

Both answer a missing token with 401 and ``WWW-Authenticate: Bearer`` (RFC 6750 §3.1:
no error code when no credentials were sent) and a bad or revoked one with 401 and
``WWW-Authenticate: Bearer error="invalid_token"``. Verified claims are put where
handlers find them:

* aiohttp: ``request[CLAIMS]`` (a ``web.RequestKey``);
* ASGI (Starlette, FastAPI): ``scope["state"]["tokenward_claims"]``, which Starlette
  shows as ``request.state.tokenward_claims``.

Stale policy. When the listener has been out of touch with Redis for longer than
``StalePolicy.budget`` seconds, the cache may be missing revocations. The default is
to **refuse** with 503 (``Retry-After``) after 30 seconds: the point of Tokenward is
that logout really logs out, and serving from a cache that silently stopped learning
turns a Redis partition into "logout does nothing" without anyone noticing; a 503 is
loud, and 30 seconds rides out a reconnect or a failover. Services that prefer
availability pass ``StalePolicy(refuse=False)``: tokens are still fully verified and
expire within the access-token lifetime, and revocations known before the outage
still apply. A token the cache knows to be revoked gets 401 in either mode.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from .jwks import JWKSUnavailable
from .verifier import Claims, InvalidToken, Verifier

log = logging.getLogger("tokenward.sdk.middleware")

CLAIMS: Final = web.RequestKey("tokenward_claims", Claims)
ASGI_STATE_KEY: Final = "tokenward_claims"


class ListenerStatus(Protocol):
    """What the stale policy reads: the listener, or a ``FakeFeed`` in tests."""

    @property
    def staleness(self) -> float:
        """Seconds since the feed last knew it was current."""
        ...


@dataclass(frozen=True, slots=True)
class StalePolicy:
    """What to do when the revocation feed is out of touch for more than ``budget`` seconds."""

    budget: float = 30.0
    refuse: bool = True


@dataclass(frozen=True, slots=True)
class Outcome:
    """A middleware decision: claims to pass on, or a status, headers and body to answer with."""

    claims: Claims | None
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


def _problem(status: int, code: str, detail: str, headers: tuple[tuple[str, str], ...]) -> Outcome:
    body = orjson.dumps({"type": "about:blank", "status": status, "code": code, "detail": detail})
    base = (("Content-Type", "application/problem+json"), ("Cache-Control", "no-store"))
    return Outcome(None, status, base + headers, body)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


class Guard:
    """The framework-independent decision: verify, check revocation, apply the stale policy."""

    def __init__(self, verifier: Verifier, listener: ListenerStatus | None, stale: StalePolicy) -> None:
        self.verifier = verifier
        self.listener = listener
        self.stale = stale

    async def decide(self, authorization: str | None) -> Outcome:
        """Decide for one request from its Authorization header."""
        token = bearer_token(authorization)
        if token is None:
            bare = (("WWW-Authenticate", "Bearer"),)
            return _problem(401, "invalid_token", "a Bearer access token is required", bare)
        try:
            claims = await self.verifier.verify(token)
        except InvalidToken as exc:
            challenge = f'Bearer error="invalid_token", error_description="{exc.reason}"'
            return _problem(401, "invalid_token", exc.reason, (("WWW-Authenticate", challenge),))
        except JWKSUnavailable:
            return _problem(503, "temporarily_unavailable", "signing keys unavailable", (("Retry-After", "5"),))
        if self.listener is not None and self.stale.refuse and self.listener.staleness > self.stale.budget:
            log.warning("refusing: revocation feed stale for %.1fs", self.listener.staleness)
            return _problem(
                503, "temporarily_unavailable", "revocation status unknown; retry shortly", (("Retry-After", "2"),)
            )
        return Outcome(claims)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def aiohttp_middleware(
    verifier: Verifier,
    *,
    listener: ListenerStatus | None = None,
    stale: StalePolicy = StalePolicy(),
    public_paths: Collection[str] = (),
) -> Middleware:
    """An aiohttp middleware guarding every route but ``public_paths`` (exact paths)."""
    guard = Guard(verifier, listener, stale)
    public = frozenset(public_paths)

    @web.middleware
    async def tokenward(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public or request.method == "OPTIONS":
            return await handler(request)
        outcome = await guard.decide(request.headers.get("Authorization"))
        if outcome.claims is None:
            return web.Response(status=outcome.status, body=outcome.body, headers=dict(outcome.headers))
        request[CLAIMS] = outcome.claims
        return await handler(request)

    return tokenward


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGIMiddleware:
    """Pure ASGI middleware (works with Starlette and FastAPI; depends on neither).

    HTTP requests without a valid token get the 401/503 answers described above; a
    WebSocket handshake without one is closed with code 1008 (policy violation).
    Lifespan and other scope types pass through.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        *,
        listener: ListenerStatus | None = None,
        stale: StalePolicy = StalePolicy(),
        public_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.guard = Guard(verifier, listener, stale)
        self.public = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Guard one ASGI connection."""
        kind = scope.get("type")
        if kind not in ("http", "websocket") or scope.get("path") in self.public or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                authorization = value.decode("latin-1")
                break
        outcome = await self.guard.decide(authorization)
        if outcome.claims is None:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in outcome.headers]
            headers.append((b"content-length", str(len(outcome.body)).encode()))
            await send({"type": "http.response.start", "status": outcome.status, "headers": headers})
            await send({"type": "http.response.body", "body": outcome.body})
            return
        scope.setdefault("state", {})[ASGI_STATE_KEY] = outcome.claims
        await self.app(scope, receive, send)


__all__ = [
    "ASGI_STATE_KEY",
    "CLAIMS",
    "ASGIMiddleware",
    "Guard",
    "ListenerStatus",
    "StalePolicy",
    "aiohttp_middleware",
    "bearer_token",
]
