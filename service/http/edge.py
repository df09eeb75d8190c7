"""The edge every request passes through: observation, CORS, error answers, request
hygiene, outermost first.

Not an aiohttp middleware: ``setup_routes`` wraps every handler with ``around`` instead, and
a last catch-all route (``UNMATCHED``) answers what no route matches (404, or 405 with
``Allow``), so unknown paths get the same treatment. As soon as an application has any
middleware, aiohttp builds a chain per request (a cache lookup, a frame that sets the
current app, a partial per layer); on a cached forward-auth answer that machinery and our
former four middlewares were a third of the CPU (``benchmarks``: cached forward-auth
against the constant ceiling). The concerns stay in their modules (``observe``, ``cors``,
``errors``); this module only fixes their order:

1. observation outermost, so the metrics and the access line see every answer, CORS
   refusals and mapped errors included (499 when the client went away);
2. CORS outside the error mapping, so error answers carry the CORS headers too;
3. the error table (``errors``) around the handler;
4. credentials in the query string refused before a handler can read them.

What aiohttp's parser refuses never reaches the edge: ``http.protocol``, the connection
layer below routing, answers it (and aiohttp's own answers before any handler).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from .. import errors
from . import cors, gateway, observe
from .errors import answer_exception, answer_http_exception

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Credentials in a URL end up in access logs, proxies and browser history (RFC 6750 §2.3,
# RFC 6749 §2.3.1): refused wherever they appear, so a client finds out at once.
QUERY_CREDENTIALS: Final = frozenset(
    {"access_token", "refresh_token", "token", "client_secret", "client_assertion", "password"}
)


def query_credentials(request: web.Request) -> web.Response | None:
    """Refuse a request carrying a credential in its query string, before anything reads it.

    Names compared case-insensitively: ``?ACCESS_TOKEN=`` is as much a credential in a log line."""
    if request.query_string and any(name.lower() in QUERY_CREDENTIALS for name in request.query):
        if request.path == "/v1/authz" or request.path.startswith("/v1/authz/"):
            return gateway.invalid_request(request)
        raise errors.InvalidRequest("credentials are not accepted in the query string")
    return None


UNMATCHED: Final = observe.UNMATCHED
#: The catch-all route's path: after every other route, any path at all.
UNMATCHED_PATH: Final = r"/{path:[\s\S]*}"


def around(handler: Handler) -> Handler:
    """``handler`` behind the edge: observe, answer CORS, map errors, refuse query credentials."""

    async def edge(request: web.Request) -> web.StreamResponse:
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

    edge.__name__ = edge.__qualname__ = getattr(handler, "__name__", "handler")
    edge.__doc__ = handler.__doc__
    return edge


async def unmatched(request: web.Request) -> web.StreamResponse:
    """What no route matches: 405 with ``Allow`` when the path exists for other methods, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name != UNMATCHED:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
