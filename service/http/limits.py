"""Which rate limits an OAuth request meets (the limiter itself is ``service/ratelimit.py``).

``/oauth/token`` and ``/oauth/revoke``: every request per client address and per
authenticated client, refreshes also per refresh-token family (never revocations: a flood on
a family must not block its logout), and, when a request carries client credentials, the failed
authentications of its address (charged when they fail, checked when they pass, so a
throttled address learns nothing about a guess). Every other endpoint that takes client
credentials (introspection, login, admin, events, ``/metrics``): only failed authentications,
charged in one place, ``auth.client``; gateways call introspection at their own traffic's
rate, and a limit there would turn a busy gateway's users away, so a caller with good
credentials never touches Redis for it.
``/v1/authz`` never: gateways turn a 429 from forward-auth into a 500.
"""

from __future__ import annotations

from aiohttp import web

from .. import state
from ..clients import Client
from ..errors import ClientAuthError, RateLimited
from ..ratelimit import ADDRESS, AUTH_FAILURES, CLIENT, FAMILY, Hit, address_ident
from ..tokens import RefreshToken
from .parsing import client_address


def _address(request: web.Request) -> str | None:
    address = client_address(request, request.app[state.SETTINGS])
    return None if address is None else address_ident(address)


async def oauth(
    request: web.Request, *, caller: Client | None, failure: ClientAuthError | None, token: str | None
) -> None:
    """Charge the limits of a token or revocation request; RateLimited when one is over.

    ``token``: the refresh token whose family is charged, None for none.
    """
    settings = request.app[state.SETTINGS]
    if not settings.ratelimit:
        return
    hits: list[Hit] = []
    address = _address(request)
    if address is not None:
        hits.append(Hit(ADDRESS, address, settings.ratelimit_address))
        if caller is not None or failure is not None:
            hits.append(Hit(AUTH_FAILURES, address, settings.ratelimit_auth_failures, int(failure is not None)))
    if caller is not None:
        hits.append(Hit(CLIENT, caller.id, settings.ratelimit_client))
    parsed = RefreshToken.parse(token) if token else None
    if parsed is not None:
        hits.append(Hit(FAMILY, parsed.sid, settings.ratelimit_family))
    await request.app[state.RATELIMITER].charge(hits)


async def authenticated(request: web.Request, *, failure: ClientAuthError | None) -> None:
    """Charge a failed client authentication, or check (in memory) a good one's address (``auth.client``)."""
    settings = request.app[state.SETTINGS]
    address = _address(request) if settings.ratelimit else None
    if address is None:
        return
    limiter = request.app[state.RATELIMITER]
    hit = Hit(AUTH_FAILURES, address, settings.ratelimit_auth_failures, int(failure is not None))
    if failure is not None:
        await limiter.charge([hit])
        return
    wait = limiter.known_wait([hit])
    if wait:
        raise RateLimited(wait)
