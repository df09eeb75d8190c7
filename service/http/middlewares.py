"""The one middleware every request passes through: observation, CORS, error answers,
request hygiene, outermost first.

One frame instead of one middleware per concern: each aiohttp middleware layer costs a
coroutine, a partial and an await per request, and four of them were a quarter of what a
cached forward-auth answer costs (``benchmarks``: cached forward-auth against the constant
ceiling). The concerns stay in their modules (``observe``, ``cors``, ``errors``); this
module only fixes their order:

1. observation outermost, so the metrics and the access line see every answer, CORS
   refusals and mapped errors included (499 when the client went away);
2. CORS outside the error mapping, so error answers carry the CORS headers too;
3. the error table (``errors``) around the handler;
4. credentials in the query string refused before a handler can read them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from .. import errors
from . import cors, observe
from .errors import answer_exception, answer_http_exception

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Credentials in a URL end up in access logs, proxies and browser history (RFC 6750 §2.3,
# RFC 6749 §2.3.1): refused wherever they appear, so a client finds out at once.
QUERY_CREDENTIALS: Final = frozenset(
    {"access_token", "refresh_token", "token", "client_secret", "client_assertion", "password"}
)


def query_credentials(request: web.Request) -> web.Response | None:
    """Refuse a request carrying a credential in its query string, before anything reads it."""
    if request.query_string and QUERY_CREDENTIALS.intersection(request.query):
        if request.path == "/v1/authz" or request.path.startswith("/v1/authz/"):
            # Gateways turn anything but 2xx/401/403 from forward-auth into a 500.
            challenge = 'Bearer realm="tokenward", error="invalid_request"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"})
        raise errors.InvalidRequest("credentials are not accepted in the query string")
    return None


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe, answer CORS, map errors and refuse query credentials around ``handler``."""
    seen = observe.begin(request)
    status = 500
    try:
        with_cors = cors.applies(request)
        allowed = cors.allowed_origin(request) if with_cors else None
        response: web.StreamResponse | None = cors.preflight(request, allowed) if with_cors else None
        if response is None:
            try:
                response = query_credentials(request) or await handler(request)
            except web.HTTPException as exc:
                mapped = answer_http_exception(request, exc)
                if mapped is None:
                    # aiohttp's own answers (a redirect, say) are raised; they need the headers too.
                    if with_cors:
                        cors.decorate(exc.headers, allowed)
                    observe.tag(request, exc.headers)
                    raise
                response = mapped
            except Exception as exc:
                response = answer_exception(request, exc)
            if with_cors:
                cors.decorate(response.headers, allowed)
        if not response.prepared:  # a stream tagged itself before it started
            observe.tag(request, response.headers)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        # The client or a shutdown abandoned the request: nginx's 499, not a 500 nobody sent.
        status = 499
        raise
    finally:
        observe.finish(request, seen, status)
