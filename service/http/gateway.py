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
from ..errors import InvalidRequest, InvalidToken
from ..sdk.identity import encode_header
from . import auth, parsing
from .errors import ErrorShape, error_response

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


#: Fixed texts: a forward-auth answer may be shown to the end user by a gateway, so it never
#: echoes a byte of the request (a scope of ``<script>`` came back in a text/plain 403).
_WITHOUT_CREDENTIAL: Final = "a Bearer access token is required"
_REFUSED_CREDENTIAL: Final = "the access token is invalid, expired or revoked"
_UNREADABLE: Final = "the request is malformed"
_SCOPE_MISSING: Final = "the access token lacks a scope this call needs"


async def authz(request: web.Request) -> web.Response:
    """Forward-auth: 200 with identity headers, or 401/403 with a Bearer challenge."""
    try:
        # Two Authorization headers, a repeated or malformed ?scope=: refused as everywhere,
        # in forward-auth's own shape.
        token = parsing.bearer(request)
        raw_scope = parsing.query(request, "scope")
        required = parsing.scope(raw_scope) if raw_scope else ""
    except InvalidRequest:
        return invalid_request(request)
    if token is None:
        challenge = 'Bearer realm="tokenward"'
        return error_response(request, ErrorShape(401, "invalid_token", challenge), _WITHOUT_CREDENTIAL)
    try:
        claims = await request.app[state.INTROSPECTOR].access(token)
    except InvalidToken:
        challenge = 'Bearer realm="tokenward", error="invalid_token"'
        return error_response(request, ErrorShape(401, "invalid_token", challenge), _REFUSED_CREDENTIAL)
    logs.set_caller("user", claims.sub)
    if required:
        granted = set(claims.scope.split())
        if any(s not in granted for s in required.split()):
            # ``required`` passed parsing.scope: the RFC 6749 alphabet (no quote, no backslash), bounded.
            challenge = f'Bearer realm="tokenward", error="insufficient_scope", scope="{required}"'
            return error_response(request, ErrorShape(403, "insufficient_scope", challenge), _SCOPE_MISSING)
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


def invalid_request(request: web.Request) -> web.Response:
    """Forward-auth's answer to a request it cannot read (RFC 6750 §3.1 ``invalid_request``):
    a 401 challenge, since gateways turn anything but 2xx/401/403 into a 500."""
    challenge = 'Bearer realm="tokenward", error="invalid_request"'
    return error_response(request, ErrorShape(401, "invalid_request", challenge), _UNREADABLE)
