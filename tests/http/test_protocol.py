"""service/http/protocol.py's classification of what aiohttp's parser refuses, and the error
table's telling the caller's socket from the store (no process needed).

The raw-socket suite (tests/http/test_raw_http.py) drives the real parser; this pins the mapping
itself, including exceptions whose messages quote attacker bytes that look like a known reason.
"""

from __future__ import annotations

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, InvalidHeader, LineTooLong, TransferEncodingError
from aiohttp.test_utils import make_mocked_request

from service import errors
from service.http.errors import answer_exception
from service.http.protocol import LIMITS, classify

SECRET = "twr_secret.0.value.tag"


@pytest.mark.parametrize(
    ("exc", "status", "detail"),
    [
        (LineTooLong(f"/x?{SECRET}", LIMITS.request_line), 414, "the request line is longer than 8192 bytes"),
        (LineTooLong(f"Cookie: {SECRET}", LIMITS.field), 431, "a header field is longer than 16384 bytes"),
        (BadHttpMessage("Too many headers received"), 431, "more than 100 header fields"),
        (
            BadHttpMessage(f"Invalid header value char:\n\n  b'{SECRET}\\x01'"),
            400,
            "a header value holds a control character",
        ),
        (BadHttpMessage(f"Chunk size overflow:\n\n  b'{SECRET}'"), 400, "the chunked body is malformed"),
        # The reason must start the message: a quoted "reason" later on is the attacker's.
        (BadHttpMessage(f"Something new:\n  b'Invalid header value char {SECRET}'"), 400, "the request is malformed"),
        (InvalidHeader(SECRET.encode()), 400, "a header field is malformed"),
        (BadHttpMethod(SECRET), 400, "the request method is malformed"),
        (TransferEncodingError(SECRET), 400, "the chunked body is malformed"),
        (ValueError(SECRET), 400, "the request is malformed"),
    ],
)
def test_parser_refusals_map_to_fixed_texts(exc: BaseException, status: int, detail: str) -> None:
    shape, said = classify(exc, 400)
    assert (shape.status, said) == (status, detail)
    assert shape.code == "invalid_request" and "secret" not in said


def test_errors_escaping_a_handler_are_server_errors_without_detail() -> None:
    assert classify(RuntimeError(SECRET), 500) == classify(None, 500)
    shape, said = classify(None, 504)
    assert (shape.status, shape.code, said) == (504, "server_error", "internal error")


class _Transport:
    """Only what ``caller_gone`` asks a transport: whether it is closing."""

    def __init__(self, closing: bool) -> None:
        self.closing = closing

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


@pytest.mark.parametrize(
    ("exc", "closing", "status"),
    [
        (errors.CallerGone("gone"), False, 499),
        (ConnectionResetError("peer reset"), True, 499),  # the caller's socket, already closed
        (BrokenPipeError("broken pipe"), True, 499),
        (ConnectionResetError("peer reset"), False, 503),  # the caller is still there: the store's
        (OSError("no route to host"), True, 503),  # not a socket reset: never blamed on the caller
    ],
)
def test_the_callers_socket_is_told_apart_from_the_store(exc: Exception, closing: bool, status: int) -> None:
    """Finding 11: a caller's hang-up was the OSError -> 503 row, a "store unavailable" warning."""
    request = make_mocked_request("POST", "/oauth/token", transport=_Transport(closing))
    assert answer_exception(request, exc).status == status
