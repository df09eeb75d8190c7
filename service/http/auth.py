"""Who is calling: configured clients (HTTP Basic) and end users (Bearer access tokens)."""

from __future__ import annotations

from aiohttp import web

from .. import logs, state
from ..clients import Client
from ..errors import InvalidToken
from ..tokens import AccessClaims
from .parsing import bearer


def client(request: web.Request, scope: str) -> Client:
    """The authenticated client, which must hold ``scope``."""
    found = request.app[state.CLIENTS].authenticate(request.headers.get("Authorization"))
    logs.set_caller("client", found.id)
    found.require(scope)
    request[state.CLIENT] = found
    return found


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
