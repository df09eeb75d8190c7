"""What gateways call: RFC 7662 introspection and forward-auth.

Forward-auth (``/v1/authz``, any method, any path below it) serves nginx ``auth_request``,
Traefik ForwardAuth, Envoy ext_authz (HTTP) and Caddy ``forward_auth``: allow is exactly 200
(Envoy treats other 2xx as deny) with identity headers; a bad or revoked token is 401 with an
RFC 6750 challenge; a missing required scope (``?scope=a%20b``) is 403; Redis unreachable is
503 so clients keep their tokens rather than throw them away. ``X-Auth-Request-User`` is
the sub percent-encoded (``sdk.identity.encode_header``; ``decode_header`` reverses it).
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web

from .. import logs, state
from ..errors import InsufficientScope, InvalidRequest, InvalidToken
from ..sdk.identity import encode_header
from . import auth, parsing

INACTIVE: Final = b'{"active":false}'
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def introspect(request: web.Request) -> web.Response:
    """POST /oauth/introspect (scope introspect); failed authentications are rate limited."""
    await auth.client(request, "introspect")
    data = await parsing.form(request, request.app[state.SETTINGS].max_body_bytes)
    token = data.get("token")
    if token is None:
        raise InvalidRequest("token is required")
    found = await request.app[state.INTROSPECTOR].introspect(token, data.get("token_type_hint"))
    # RFC 7662 §2.2: an inactive token gets exactly {"active": false}, whatever the reason.
    body = INACTIVE if found is None else orjson.dumps(found)
    return web.Response(body=body, content_type="application/json", headers=_NO_STORE)


async def authz(request: web.Request) -> web.Response:
    """Forward-auth: 200 with identity headers, or 401/403 with a Bearer challenge."""
    try:
        token = parsing.bearer(request)
    except InvalidRequest:
        # Two Authorization headers: refused as everywhere, in forward-auth's own shape.
        return invalid_request()
    if token is None:
        return _deny(401, 'Bearer realm="tokenward"')
    try:
        claims = await request.app[state.INTROSPECTOR].access(token)
    except InvalidToken:
        return _deny(401, 'Bearer realm="tokenward", error="invalid_token"')
    logs.set_caller("user", claims.sub)
    required = parsing.scope(request.query["scope"]) if request.query.get("scope") else ""
    if required:
        granted = set(claims.scope.split())
        missing = [s for s in required.split() if s not in granted]
        if missing:
            challenge = f'Bearer realm="tokenward", error="insufficient_scope", scope="{required}"'
            return _deny(403, challenge, InsufficientScope(" ".join(missing)).detail)
    return web.Response(
        status=200,
        headers={
            # Percent-encoded (sdk.identity): a header carries any sub exactly, and two subs never alike.
            "X-Auth-Request-User": encode_header(claims.sub),
            "X-Auth-Request-Session": claims.sid,
            "X-Auth-Request-Scope": claims.scope,
            "X-Auth-Request-Jti": claims.jti,
            "Cache-Control": "no-store",
        },
    )


def invalid_request() -> web.Response:
    """Forward-auth's answer to a request it cannot read (RFC 6750 §3.1 ``invalid_request``):
    a 401 challenge, since gateways turn anything but 2xx/401/403 into a 500."""
    return _deny(401, 'Bearer realm="tokenward", error="invalid_request"')


def _deny(status: int, challenge: str, detail: str = "") -> web.Response:
    return web.Response(
        status=status, text=detail, headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"}
    )
