"""Who is calling: configured clients (HTTP Basic) and end users (Bearer access tokens)."""

from __future__ import annotations

from aiohttp import web

from .. import logs, state
from ..clients import Client
from ..errors import ClientAuthError, InvalidToken
from ..tokens import AccessClaims
from . import limits
from .parsing import authorization, bearer


async def client(request: web.Request, scope: str) -> Client:
    """The authenticated client, which must hold ``scope``.

    Every endpoint that takes client credentials comes here, so every one meets the
    failed-authentication budget of the caller's address (``limits.authenticated``): a
    failure is charged, a success only checked in memory. The OAuth token and revocation
    endpoints, where credentials are optional, charge it with their other limits instead
    (``attempt`` and ``limits.oauth``).
    """
    try:
        found = request.app[state.CLIENTS].authenticate(authorization(request))
    except ClientAuthError as exc:
        await limits.authenticated(request, failure=exc)
        raise
    await limits.authenticated(request, failure=None)
    logs.set_caller("client", found.id)
    found.require(scope)
    request[state.CLIENT] = found
    return found


def attempt(request: web.Request) -> tuple[Client | None, ClientAuthError | None]:
    """Optional client authentication, the outcome kept for the rate limits to count first.

    ``(client, None)`` when the credentials are good, ``(None, error)`` when an Authorization
    header was sent but fails, ``(None, None)`` when there is none (a public client).
    """
    header = authorization(request)
    if header is None:
        return None, None
    try:
        found = request.app[state.CLIENTS].authenticate(header)
    except ClientAuthError as exc:
        return None, exc
    logs.set_caller("client", found.id)
    return found, None


async def user(request: web.Request) -> AccessClaims:
    """The end user behind a valid, not revoked, Bearer access token."""
    token = bearer(request)
    if token is None:
        raise InvalidToken("a Bearer access token is required")
    claims = request.app[state.TOKENS].verify(token)
    logs.set_caller("user", claims.sub)
    if await request.app[state.REVOCATIONS].is_denied(claims):
        raise InvalidToken("the token has been revoked")
    request[state.CLAIMS] = claims
    return claims
