"""CORS for the browser-facing endpoints, for the origins on ``TOKENWARD_COOKIE_ORIGINS`` only.

Browser apps call the token and revoke endpoints with the cookie, and the "my sessions"
endpoints with a Bearer token, from their own origin; both need credentialed CORS. Nothing
else is ever answered cross-origin, and an origin off the list gets no CORS headers at all
(its preflight is refused), so the browser keeps the answer from its scripts.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Final

from aiohttp import web

from .. import state
from .cookies import CSRF_HEADER
from .errors import ErrorShape, error_response

ALLOW_METHODS: Final = "GET, POST, DELETE"
ALLOW_HEADERS: Final = f"Authorization, Content-Type, {CSRF_HEADER}"
#: Response headers outside the CORS safelist that a browser client needs to read.
EXPOSE_HEADERS: Final = "Retry-After, WWW-Authenticate"
#: Seconds a browser may reuse a preflight answer.
PREFLIGHT_MAX_AGE: Final = "600"


def cors_path(path: str) -> bool:
    """True for the paths browser apps call with credentials from their own origin.

    The browser client script (``/client/``) is public and answers ``*`` by itself.
    """
    return path in ("/oauth/token", "/oauth/revoke", "/v1/me/sessions") or path.startswith("/v1/me/sessions/")


def _vary_origin(headers: MutableMapping[str, str]) -> None:
    # The answer depends on Origin even when it carries no CORS headers, so caches must key on it.
    vary = headers.get("Vary", "")
    if "origin" not in vary.lower():
        headers["Vary"] = f"{vary}, Origin" if vary else "Origin"


def _allow(headers: MutableMapping[str, str], origin: str) -> None:
    headers["Access-Control-Allow-Origin"] = origin
    headers["Access-Control-Allow-Credentials"] = "true"


def allowed_origin(request: web.Request) -> str | None:
    """The request's Origin when it is on the list (only call where ``applies``).

    Two ``Origin`` headers are no origin at all: which one a browser or a proxy meant is
    unknown, so the answer carries no CORS headers."""
    origins = request.headers.getall("Origin", [])
    origin = origins[0] if len(origins) == 1 else None
    return origin if origin is not None and origin in request.app[state.SETTINGS].cookie_origins else None


def applies(request: web.Request) -> bool:
    """True when cookie mode is on and the path is browser-facing: only then is CORS answered."""
    return bool(request.app[state.SETTINGS].cookie_origins) and cors_path(request.path)


def preflight(request: web.Request, allowed: str | None) -> web.Response | None:
    """The answer to a CORS preflight (204 for an allowed origin, 403 otherwise), or None if it is not one."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    if allowed is None:
        refused = error_response(request, ErrorShape(403, "access_denied"), "this origin may not call here")
        _vary_origin(refused.headers)
        return refused
    answer = web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        },
    )
    _allow(answer.headers, allowed)
    _vary_origin(answer.headers)
    return answer


def decorate(headers: MutableMapping[str, str], allowed: str | None) -> None:
    """CORS headers on an answer (or a raised aiohttp answer's headers): allowed origins read it."""
    if allowed is not None:
        _allow(headers, allowed)
        headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    _vary_origin(headers)
