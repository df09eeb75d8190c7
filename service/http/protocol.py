"""The HTTP/1.1 connection layer below routing: header limits, and our answer to every
request aiohttp's parser refuses.

aiohttp answers a request its parser refuses (an oversized or malformed request line or
header, broken framing) itself, from ``RequestHandler.handle_error``: a plain-text 400 whose
body quotes the offending bytes, logged as "Error handling request" with a traceback that
quotes them too. A ``Cookie`` header past the field limit thus came back to the page with
the start of the refresh-token cookie in it. ``Protocol`` replaces that method: the status
says which limit or rule was broken (414 request line, 431 header field, header count or
header block, else 400), the body is ``errors.unroutable_response`` with a fixed text, the
connection is closed (after a parser error the next request's start is unknown), and the
log line names the exception class and the status only.

``Runner`` is the ``AppRunner`` that installs ``Protocol`` (through ``Server``); ``serve``
runs the app with it. The limits (``LIMITS``) are in ``HANDLER_ARGS``, which ``create_app``
passes to aiohttp, so in-process test servers parse with the same limits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.web_protocol import _ErrInfo

from .. import state
from ..metrics import Metrics
from .errors import ErrorShape, unroutable_response
from .observe import MALFORMED

log = logging.getLogger("tokenward.http.protocol")


@dataclass(frozen=True, slots=True)
class Limits:
    """What a request head may be, in bytes (``field``: name and value of one header)."""

    request_line: int
    field: int
    fields: int
    block: int


#: A browser's whole cookie jar for one site fits one ``Cookie`` field (Chromium caps a cookie at
#: 4 KiB; a few session and preference cookies stay far below 16 KiB), and a request head of
#: 32 KiB is twice nginx's default ``large_client_header_buffers`` line. The request line keeps
#: aiohttp's 8 KiB, a different number from the field limit on purpose: ``LineTooLong`` names
#: only the limit it broke, which tells a long target (414) from a long header (431).
LIMITS: Final = Limits(request_line=8192, field=16384, fields=100, block=32768)

#: aiohttp's ``RequestHandler`` arguments: the limits, and bodies never inflated (``parsing._body``
#: refuses a ``Content-Encoding`` with 415 before reading).
HANDLER_ARGS: Final = {
    "max_line_size": LIMITS.request_line,
    "max_field_size": LIMITS.field,
    "max_headers": LIMITS.fields,
    "auto_decompress": False,
}

#: The HTTP versions a request line may name (RFC 9112 framing).
SPOKEN_VERSIONS: Final = frozenset({(1, 0), (1, 1)})

_URI_TOO_LONG: Final = ErrorShape(414, "invalid_request")
_HEADERS_TOO_LARGE: Final = ErrorShape(431, "invalid_request")
_BAD_REQUEST: Final = ErrorShape(400, "invalid_request")

# Fixed texts by parser exception class, most specific first; aiohttp's own messages quote the request.
_DETAILS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (BadHttpMethod, "the request method is malformed"),
    (BadStatusLine, "the request line is malformed"),
    (InvalidURLError, "the request target is malformed"),
    (InvalidHeader, "a header field is malformed"),
    (TransferEncodingError, "the chunked body is malformed"),
    (ContentLengthError, "the body is shorter than its Content-Length"),
    (ContentEncodingError, "the body's Content-Encoding cannot be decoded"),
    (BadHttpMessage, "the request is malformed"),
)


# Fixed texts by the parser's own reason, which starts its message (llhttp's error names; what
# follows them quotes the request). The first match wins; the class table is the fallback.
_REASONS: Final = (
    ("Invalid header value char", "a header value holds a control character"),
    ("Missing expected LF after header value", "a header line ends in a bare CR"),
    ("Unexpected whitespace after header value", "obsolete line folding is not accepted"),
    ("Invalid header token", "a header name is malformed"),
    ("Duplicate Content-Length", "Content-Length appears more than once"),
    ("Duplicate '", "a header that may appear once appears more than once"),
    ("Invalid character in Content-Length", "Content-Length is not a number"),
    ("Transfer-Encoding can't be present with Content-Length", "Content-Length and Transfer-Encoding together"),
    ("Request has invalid `Transfer-Encoding`", "Transfer-Encoding must end with chunked"),
    ("Invalid `Transfer-Encoding` header value", "Transfer-Encoding is malformed"),
    ("Invalid character in chunk", "the chunked body is malformed"),
    ("Chunk size overflow", "the chunked body is malformed"),
    ("Expected LF after chunk", "the chunked body is malformed"),
    ("Expected CRLF after chunk", "the chunked body is malformed"),
    ("Missing 'Host' header", "an HTTP/1.1 request needs a Host header"),
    ("Pause on PRI/Upgrade", "HTTP/2 is not served on this port"),
    ("Received HTTPS traffic on an HTTP port", "TLS on a plain HTTP port"),
)


def classify(exc: BaseException | None, status: int) -> tuple[ErrorShape, str]:
    """The answer to a request aiohttp refused: its shape and a fixed detail text."""
    if status >= 500 or exc is None:
        return ErrorShape(max(status, 500), "server_error"), "internal error"
    if isinstance(exc, LineTooLong):
        if exc.args[1:2] == (LIMITS.request_line,):
            return _URI_TOO_LONG, f"the request line is longer than {LIMITS.request_line} bytes"
        return _HEADERS_TOO_LARGE, f"a header field is longer than {LIMITS.field} bytes"
    if isinstance(exc, BadHttpMessage) and exc.message.startswith("Too many headers"):
        return _HEADERS_TOO_LARGE, f"more than {LIMITS.fields} header fields"
    message = exc.message if isinstance(exc, BadHttpMessage) and isinstance(exc.message, str) else ""
    for reason, detail in _REASONS:
        if message.startswith(reason):
            return _BAD_REQUEST, detail
    for cls, detail in _DETAILS:
        if isinstance(exc, cls):
            return _BAD_REQUEST, detail
    return _BAD_REQUEST, "the request is malformed"


def header_block_size(request: web.BaseRequest) -> int:
    """The request head's header bytes as sent, give or take the ``: `` and CRLF of each line."""
    return sum(len(name) + len(value) + 4 for name, value in request.raw_headers)


def plain_framing(request: web.BaseRequest) -> bool:
    """False when ``Transfer-Encoding`` names a coding besides one ``chunked``.

    llhttp refuses a list that does not end in ``chunked`` but takes ``gzip, chunked`` and
    de-chunks it, the gzip coding silently ignored: the body a handler read was not the body
    the client framed (RFC 9112 §6.1: a coding the server does not understand is refused)."""
    codings = [c.strip().lower() for line in request.headers.getall("Transfer-Encoding", ()) for c in line.split(",")]
    return not codings or codings == ["chunked"]


class Protocol(web.RequestHandler):
    """aiohttp's connection handler, with our answer to what its parser refuses."""

    metrics: Metrics | None = None

    def data_received(self, data: bytes) -> None:
        """Feed the parser; when it breaks inside the body a handler is reading, tell that handler.

        aiohttp queues such an error as the next request's and leaves the handler waiting for
        body bytes that will never come (until the body deadline: a 408 that misdescribes it).
        The handler's read fails at once instead (``parsing._body``: 400, connection closed)."""
        queued = len(self._messages)
        super().data_received(data)
        request = self._current_request
        if request is None or request.content.is_eof() or len(self._messages) <= queued:
            return
        if isinstance(self._messages[-1][0], _ErrInfo):
            request.content.set_exception(web.RequestPayloadError("the body's framing is malformed"))

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a refused request in our error shape; log its class and status, never its bytes.

        aiohttp calls this for parser errors (400 with the exception) and for an exception
        that escaped the handler (500; the edge maps every exception, so that is a bug,
        logged with its traceback, which the log redaction scrubs)."""
        shape, detail = classify(exc, status)
        kind = type(exc).__name__ if exc is not None else "none"
        if shape.status >= 500:
            log.error("unhandled error below the edge: %s", kind, exc_info=exc)
        else:
            log.info(
                "malformed request refused",
                extra={"fields": {"status": shape.status, "error": kind}},
            )
        if request.writer.output_size > 0:  # an answer already started: all we can do is hang up
            raise ConnectionResetError("an answer was already started")
        if self.metrics is not None:
            self.metrics.observe_request("other", MALFORMED, shape.status, 0.0)
        return unroutable_response(shape, detail)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def guarded(handler: Handler, metrics: Metrics | None) -> Handler:
    """``handler`` behind the header-block limit, which aiohttp's parser does not have, and with
    aiohttp's own error answers in our shape: a target no route can match (``*``, an authority),
    since the edge's catch-all route matches every path, is the only way one gets out."""

    def refused(shape: ErrorShape, kind: str, detail: str) -> web.StreamResponse:
        log.info("malformed request refused", extra={"fields": {"status": shape.status, "error": kind}})
        if metrics is not None:
            metrics.observe_request("other", MALFORMED, shape.status, 0.0)
        return unroutable_response(shape, detail)

    async def guard(request: web.BaseRequest) -> web.StreamResponse:
        if header_block_size(request) > LIMITS.block:
            detail = f"the header block is larger than {LIMITS.block} bytes"
            return refused(_HEADERS_TOO_LARGE, "HeaderBlockTooLarge", detail)
        if request.version not in SPOKEN_VERSIONS:
            # llhttp takes any digit.digit: an "HTTP/2.0" request line was answered as HTTP/1.
            return refused(_BAD_REQUEST, "UnsupportedVersion", "only HTTP/1.0 and HTTP/1.1 are spoken here")
        if not plain_framing(request):
            return refused(_BAD_REQUEST, "TransferCodingRefused", "the only transfer coding accepted is chunked")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = "not_found" if exc.status == 404 else "invalid_request"
            return refused(ErrorShape(exc.status, code), type(exc).__name__, exc.reason)

    return guard


class Server(web.Server):
    """aiohttp's ``Server`` making ``Protocol`` connections."""

    metrics: Metrics | None = None

    def __call__(self) -> web.RequestHandler:
        """A connection handler for one new connection."""
        # aiohttp's Server.__call__ names RequestHandler itself; its arguments are the same.
        handler = Protocol(self, loop=self._loop, **self._kwargs)
        handler.metrics = self.metrics
        return handler


class Runner(web.AppRunner):
    """``AppRunner`` whose connections are ``Protocol``: what ``tokenward serve`` runs."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        metrics = self.app.get(state.METRICS)
        server = Server(
            guarded(base.request_handler, metrics),
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=asyncio.get_running_loop(),
            # What aiohttp's Application._make_handler put together: our HANDLER_ARGS included.
            **base._kwargs,
        )
        server.metrics = metrics
        return server


def serve(app: web.Application, host: str, port: int, *, shutdown_timeout: float, **handler: Any) -> None:
    """Run ``app`` on ``host:port`` until SIGTERM or SIGINT, then drain for ``shutdown_timeout``.

    What ``web.run_app`` does, with ``Runner``; ``handler``: ``RequestHandler`` arguments."""

    async def run() -> None:
        runner = Runner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout, **handler)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await web.TCPSite(runner, host, port).start()
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(run())
    else:
        uvloop.run(run())
