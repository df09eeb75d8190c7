"""RFC 6749 token endpoint (refresh grant), RFC 7009 revocation, and the JWKS."""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web

from .. import state
from ..anomalies import RefreshOrigin
from ..errors import InvalidRequest, UnsupportedGrantType
from ..sessions import TokenPair
from . import auth, cookies, limits, parsing

NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def token_response(pair: TokenPair, status: int = 200) -> web.Response:
    """The RFC 6749 §5.1 answer, never cached."""
    body = {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
        "refresh_expires_in": pair.refresh_expires_in,
        "session_id": pair.session_id,
        "scope": pair.scope,
    }
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=NO_STORE)


async def token(request: web.Request) -> web.Response:
    """POST /oauth/token: grant_type=refresh_token, the token from the form or (cookie mode) the cookie."""
    settings = request.app[state.SETTINGS]
    data = await parsing.form(request, settings.max_body_bytes)
    grant = data.get("grant_type")
    if grant is None:
        raise InvalidRequest("grant_type is required")
    if grant != "refresh_token":
        raise UnsupportedGrantType(f"grant_type {grant!r} is not supported; use refresh_token")
    if "client_secret" in data or ("client_id" in data and "Authorization" in request.headers):
        raise InvalidRequest("use one client authentication method, HTTP Basic")
    found = cookies.cookie_tokens(request, settings, data, "refresh_token")
    from_cookie = found is not None
    refresh = cookies.one_cookie(found) if found is not None else data.get("refresh_token")
    if refresh is None:
        raise InvalidRequest("refresh_token is required")
    scope = parsing.scope(data["scope"]) if "scope" in data else ""
    # Refresh is open to public clients; a client that authenticates must own the token.
    caller, failure = auth.attempt(request)
    await limits.oauth(request, caller=caller, failure=failure, token=refresh)
    if failure is not None:
        raise failure
    client_id = caller.id if caller is not None else ""
    # The client's address, not a trusted proxy's (TOKENWARD_TRUSTED_PROXIES).
    address = parsing.client_address(request, settings)
    origin = RefreshOrigin.of(str(address) if address else None, request.headers.get("User-Agent"))
    pair = await request.app[state.SESSIONS].refresh(refresh, client_id=client_id, scope=scope, origin=origin)
    if from_cookie:
        return cookies.refresh_response(pair, settings)
    return token_response(pair)


async def revoke(request: web.Request) -> web.Response:
    """POST /oauth/revoke (RFC 7009).

    Who may revoke: whoever holds the token (presenting it is the proof; public clients
    have nothing else), or a client authenticated with scope ``revoke``. A client that
    authenticates without that scope may revoke only tokens issued through it. Invalid,
    unknown and expired tokens answer 200 (§2.2). In cookie mode, a form without ``token``
    revokes the cookie's session and deletes the cookie.
    """
    settings = request.app[state.SETTINGS]
    data = await parsing.form(request, settings.max_body_bytes)
    found = cookies.cookie_tokens(request, settings, data, "token")
    if found is None and "token" not in data:
        raise InvalidRequest("token is required")
    hint = data.get("token_type_hint")
    caller, failure = auth.attempt(request)
    # No family limit here: a flood on a stolen token's family must never block its logout.
    await limits.oauth(request, caller=caller, failure=failure, token=None)
    if failure is not None:
        raise failure
    owner = None if caller is None or "revoke" in caller.scopes else caller.id
    # Logging out with a planted twin cookie ends both sessions: the user asked to be signed out.
    for raw in found if found is not None else (data["token"],):
        await request.app[state.REVOKER].revoke(raw, hint, owner=owner)
    if found is not None:
        return cookies.logout_response(settings)
    return web.Response(status=200, headers=NO_STORE)


async def jwks(request: web.Request) -> web.Response:
    """GET /.well-known/jwks.json: every public key that still verifies."""
    body = request.app[state.KEYRING].jwks_bytes()
    return web.Response(
        body=body,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300, must-revalidate"},
    )
