"""Exceptions to HTTP answers, in one table.

OAuth endpoints (``/oauth/...``) answer errors in the RFC 6749 §5.2 shape
``{"error", "error_description"}``; everything else answers an RFC 9457 problem
document with a stable ``code``. Redis failures become a fast 503 with Retry-After.

Requests refused below routing (``http.protocol``: a malformed or oversized request line,
header or framing) have no path anyone can trust, so they get one shape that serves both
kinds of client: a problem document that also carries ``error``/``error_description``
(``unroutable_response``).

A caller that hangs up is not a store outage: ``CallerGone`` (and any socket error while the
caller's connection is already closed) is 499 in metrics and the access line, with no
warning, and nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, NamedTuple

import orjson
import redis.exceptions
from aiohttp import web

from .. import errors

log = logging.getLogger("tokenward.http")


#: The status recorded (never sent) for a request whose caller went away, as nginx logs it.
CALLER_GONE: Final = 499


class ErrorShape(NamedTuple):
    status: int
    code: str
    challenge: str | None = None


# Most specific first: the first isinstance match wins.
ERROR_TABLE: Final[tuple[tuple[type[BaseException], ErrorShape], ...]] = (
    # nginx's 499: nobody hears the answer; counted apart from our own failures.
    (errors.CallerGone, ErrorShape(CALLER_GONE, "client_closed_request")),
    (errors.PayloadTooLarge, ErrorShape(413, "invalid_request")),
    (errors.RequestTimeout, ErrorShape(408, "invalid_request")),
    (errors.UnreadableBody, ErrorShape(400, "invalid_request")),
    (errors.EncodedBody, ErrorShape(415, "invalid_request")),
    (errors.InvalidRequest, ErrorShape(400, "invalid_request")),
    (errors.UnsupportedGrantType, ErrorShape(400, "unsupported_grant_type")),
    (errors.UnsupportedTokenType, ErrorShape(400, "unsupported_token_type")),
    (errors.InvalidGrant, ErrorShape(400, "invalid_grant")),
    (errors.InvalidScope, ErrorShape(400, "invalid_scope")),
    (errors.UnauthorizedClient, ErrorShape(400, "unauthorized_client")),
    (errors.ClientAuthError, ErrorShape(401, "invalid_client", 'Basic realm="tokenward", charset="UTF-8"')),
    (errors.InsufficientScope, ErrorShape(403, "insufficient_scope")),
    (errors.CsrfRefused, ErrorShape(403, "access_denied")),
    (errors.InvalidToken, ErrorShape(401, "invalid_token", 'Bearer realm="tokenward", error="invalid_token"')),
    (errors.NotFound, ErrorShape(404, "not_found")),
    # RFC 8628's slow_down: the caller is too fast. Not temporarily_unavailable, which here
    # means the store is down (503): a client can tell "back off" from "we are broken".
    (errors.RateLimited, ErrorShape(429, "slow_down")),
    (errors.CursorExpired, ErrorShape(410, "reset")),
    (errors.StoreUnavailable, ErrorShape(503, "temporarily_unavailable")),
    (redis.exceptions.ConnectionError, ErrorShape(503, "temporarily_unavailable")),
    (redis.exceptions.TimeoutError, ErrorShape(503, "temporarily_unavailable")),
    (redis.exceptions.BusyLoadingError, ErrorShape(503, "temporarily_unavailable")),
    (redis.exceptions.ReadOnlyError, ErrorShape(503, "temporarily_unavailable")),
    # maxmemory reached under noeviction: the write was refused whole (a script before it ran).
    (redis.exceptions.OutOfMemoryError, ErrorShape(503, "temporarily_unavailable")),
    (redis.exceptions.ClusterDownError, ErrorShape(503, "temporarily_unavailable")),
    (redis.exceptions.TryAgainError, ErrorShape(503, "temporarily_unavailable")),
    (OSError, ErrorShape(503, "temporarily_unavailable")),
    (asyncio.TimeoutError, ErrorShape(503, "temporarily_unavailable")),
)

_DETAILS: Final = {503: "the token store is unavailable; retry shortly"}


def caller_gone(request: web.BaseRequest, exc: BaseException) -> bool:
    """Whether ``exc`` is the caller's socket failing: ``CallerGone``, or a socket error
    (reset, broken pipe) while the caller's own connection is closed or closing. A socket error
    with the caller still connected came from elsewhere (Redis) and stays a 503."""
    if isinstance(exc, errors.CallerGone):
        return True
    transport = request.transport
    return isinstance(exc, ConnectionError) and (transport is None or transport.is_closing())


def shape_for(exc: BaseException) -> ErrorShape | None:
    """The table row for an exception, or None."""
    for cls, shape in ERROR_TABLE:
        if isinstance(exc, cls):
            return shape
    return None


def _problem(shape: ErrorShape, detail: str) -> dict[str, str | int]:
    return {
        "type": "about:blank",
        "title": shape.code.replace("_", " "),
        "status": shape.status,
        "code": shape.code,
        "detail": detail,
    }


def error_response(request: web.Request, shape: ErrorShape, detail: str) -> web.Response:
    """Render an error in the shape the endpoint speaks."""
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    if shape.challenge:
        headers["WWW-Authenticate"] = shape.challenge
    if shape.status == 503:
        headers["Retry-After"] = "1"
    if request.path.startswith("/oauth/"):
        body: dict[str, str | int] = {"error": shape.code, "error_description": detail}
        headers["Pragma"] = "no-cache"
        content_type = "application/json"
    else:
        body = _problem(shape, detail)
        content_type = "application/problem+json"
    return web.Response(status=shape.status, body=orjson.dumps(body), content_type=content_type, headers=headers)


def unroutable_response(shape: ErrorShape, detail: str) -> web.Response:
    """An error for a request refused before its path could be trusted: a problem document
    that also carries RFC 6749's ``error``/``error_description``, and the connection closed.

    ``detail`` is always a fixed text of ours: never a byte of the request."""
    body = {**_problem(shape, detail), "error": shape.code, "error_description": detail}
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    resp = web.Response(
        status=shape.status, body=orjson.dumps(body), content_type="application/problem+json", headers=headers
    )
    resp.force_close()
    return resp


def answer_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response | None:
    """aiohttp's own error answers (404, 405, 413, ...) in our error shapes; None for those to re-raise.

    401 and 403 raised by aiohttp itself keep aiohttp's shape; redirects and successes are
    not errors."""
    if exc.status == 413:
        return error_response(request, ErrorShape(413, "invalid_request"), "request body too large")
    if exc.status < 400 or exc.status in (401, 403):
        return None
    code = "not_found" if exc.status == 404 else "method_not_allowed" if exc.status == 405 else "invalid_request"
    resp = error_response(request, ErrorShape(exc.status, code), exc.reason)
    if "Allow" in exc.headers:
        resp.headers["Allow"] = exc.headers["Allow"]
    return resp


def answer_exception(request: web.Request, exc: Exception) -> web.Response:
    """The answer for an exception a handler raised: its table row, or a 500 that leaks nothing."""
    if caller_gone(request, exc):
        resp = web.Response(status=CALLER_GONE)
        resp.force_close()
        return resp
    shape = shape_for(exc)
    if shape is None:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, ErrorShape(500, "server_error"), "internal error")
    if shape.status == 503:
        log.warning("store unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
    detail = _DETAILS.get(shape.status) or getattr(exc, "detail", "") or str(exc)
    resp = error_response(request, shape, detail)
    if isinstance(exc, errors.RateLimited):
        resp.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, errors.EncodedBody):
        resp.headers["Accept-Encoding"] = "identity"  # RFC 9110 §15.5.16
    if isinstance(exc, errors.RequestTimeout | errors.UnreadableBody | errors.EncodedBody):
        # The rest of a body that came too slowly, is misframed or is refused unread is not
        # worth reading: where the next request would begin is not known.
        resp.force_close()
    return resp
