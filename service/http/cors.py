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
from .middlewares import ErrorShape, Handler, error_response

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


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer preflights and add CORS headers for allowed origins on the browser-facing paths."""
    origins = request.app[state.SETTINGS].cookie_origins
    if not origins or not cors_path(request.path):
        return await handler(request)
    origin = request.headers.get("Origin")
    allowed = origin if origin is not None and origin in origins else None
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if allowed is None:
            refused = error_response(request, ErrorShape(403, "access_denied"), "this origin may not call here")
            _vary_origin(refused.headers)
            return refused
        preflight = web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            },
        )
        _allow(preflight.headers, allowed)
        _vary_origin(preflight.headers)
        return preflight
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        # aiohttp's own answers (a redirect, say) are raised; they need the headers too.
        if allowed is not None:
            _allow(exc.headers, allowed)
            exc.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        _vary_origin(exc.headers)
        raise
    if allowed is not None:
        _allow(resp.headers, allowed)
        resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    _vary_origin(resp.headers)
    return resp
