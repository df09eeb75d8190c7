"""Hostile HTTP/1.1 below aiohttp: raw bytes on a socket to a real ``tokenward serve`` on a real Redis.

No HTTP client library: each case is the bytes an attacker writes. Every case checks the
class of failure the outside review found (issue 15, findings 1a, 1b, 2, 10, 11), not one instance:

* no 5xx, and our own JSON error shape (the ``unroutable`` shape of ``http.protocol`` for what
  the parser refuses: a problem document that also carries ``error``/``error_description``);
* no request byte in the answer: a unique marker and every 12-character fragment of every
  secret the request carried (refresh token, access token, client secret, Basic value) are absent;
* nothing secret in the service's log (run at DEBUG, so aiohttp's and redis-py's lines count too);
* the connection closed when the request's framing cannot be trusted.

Each case prints its observed answer (``pytest -s`` or ``-rA``) for the issue's case list.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import re
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.http.protocol import LIMITS
from service.keys import KeyRing
from tests.conftest import CLIENT_SECRETS
from tests.support.processes import ServiceProcess, write_config
from tests.support.redis_servers import RedisServer

MARKER = "Zq7MarkerXv9"
LOGIN_SECRET = CLIENT_SECRETS["login"][0]
LOGIN_BASIC = base64.b64encode(f"login:{LOGIN_SECRET}".encode()).decode()
ADMIN_BASIC = base64.b64encode(f"admin:{CLIENT_SECRETS['admin'][0]}".encode()).decode()
GATEWAY_BASIC = base64.b64encode(f"gateway:{CLIENT_SECRETS['gateway'][0]}".encode()).decode()


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclasses.dataclass(frozen=True)
class Exchange:
    raw: bytes
    answers: list[Answer]
    closed: bool


def exchange(port: int, data: bytes, *, half_close: bool = False, wait: float = 3.0) -> Exchange:
    """Send ``data`` as it is; read every answer until the server closes or ``wait`` passes in silence."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and hung up before taking everything: read what it said
        raw = b""
        closed = False
        try:
            while chunk := sock.recv(65536):
                raw += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    return Exchange(raw, parse_answers(raw), closed)


def parse_answers(raw: bytes) -> list[Answer]:
    answers = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        assert sep, f"a truncated answer: {raw[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        answers.append(Answer(int(lines[0].split(" ")[1]), headers, rest[:size]))
        raw = rest[size:]
    return answers


@dataclasses.dataclass
class Stack:
    service: ServiceProcess
    refresh: str
    access: str

    @property
    def port(self) -> int:
        return self.service.port

    def secrets(self) -> dict[str, str]:
        names = ("refresh token", "access token", "client secret", "Basic value")
        return dict(zip(names, (self.refresh, self.access, LOGIN_SECRET, LOGIN_BASIC), strict=True))

    def log_size(self) -> int:
        return self.service.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.service.log.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")


@contextlib.contextmanager
def running(keyring: KeyRing, log_format: str) -> Iterator[Stack]:
    """A service at DEBUG on its own Redis, and a real session whose tokens the cases carry."""
    redis = RedisServer().start()
    directory = Path(tempfile.mkdtemp(prefix="tw-raw-"))
    env = {
        "TOKENWARD_REDIS_URL": redis.url,
        **write_config(directory, keyring, CLIENT_SECRETS),
        "TOKENWARD_LOG_LEVEL": "DEBUG",
        "TOKENWARD_LOG_FORMAT": log_format,
        # A body that stops short is answered 408 after this long (the suite waits for it once).
        "TOKENWARD_CLIENT_TIMEOUT": "1",
    }
    service = ServiceProcess(env).start()
    try:
        created = exchange(service.port, post("/v1/sessions", b'{"sub":"raw-user"}', json=True, basic=LOGIN_BASIC))
        body = created.answers[0].json()
        yield Stack(service, body["refresh_token"], body["access_token"])
    finally:
        service.stop()
        redis.close()


@pytest.fixture(scope="module")
def stack(keyring: KeyRing) -> Iterator[Stack]:
    """The service the cases run against, logging JSON (production's format)."""
    with running(keyring, "JSON") as started:
        yield started


def head(method: str, target: str, *lines: str | bytes, version: str = "HTTP/1.1", host: bool = True) -> bytes:
    """A request head; ``lines`` are whole header lines without CRLF (bytes as they are)."""
    out = f"{method} {target} {version}\r\n".encode()
    if host:
        out += b"Host: tokenward.test\r\n"
    for line in lines:
        out += (line.encode() if isinstance(line, str) else line) + b"\r\n"
    return out + b"\r\n"


def post(target: str, body: bytes, *lines: str | bytes, json: bool = False, basic: str | None = None) -> bytes:
    ctype = "application/json" if json else "application/x-www-form-urlencoded"
    extra = [f"Content-Type: {ctype}", f"Content-Length: {len(body)}", f"X-Marker: {MARKER}", *lines]
    if basic:
        extra.append(f"Authorization: Basic {basic}")
    return head("POST", target, *extra) + body


@dataclasses.dataclass(frozen=True)
class Case:
    """A hostile request (``build`` gets the stack's secrets) and the answer expected.

    ``shape``: ``unroutable`` (refused below routing, ``http.protocol``), ``oauth`` (RFC 6749
    §5.2) or ``problem`` (RFC 9457). ``closed``: the server must hang up after answering.
    """

    name: str
    build: Any
    status: int
    shape: str = "unroutable"
    closed: bool = True


def refresh_cookie(s: Stack) -> str:
    return f"__Secure-tokenward-refresh={s.refresh}"


def pad(size: int) -> str:
    return "; ".join(f"pad{i}={'p' * 90}" for i in range(size // 100))


def chunked(target: str, chunks: bytes) -> Any:
    ctype = "Content-Type: application/x-www-form-urlencoded"
    return lambda s: head("POST", target, ctype, "Transfer-Encoding: chunked", f"X-Marker: {MARKER}") + chunks


def one_chunk(body: bytes) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


def refresh_form(s: Stack) -> bytes:
    return f"grant_type=refresh_token&refresh_token={s.refresh}".encode()


CALLERS = {"/oauth/introspect": GATEWAY_BASIC, "/v1/revocations": ADMIN_BASIC}


def encoded(target: str, coding: str, body: Any, *, json: bool = False, what: str = "invalid") -> Case:
    shape = "oauth" if target.startswith("/oauth/") else "problem"
    caller = CALLERS.get(target, LOGIN_BASIC)
    return Case(
        f"Content-Encoding {coding} on {target}, {what} body",
        lambda s: post(target, body(s), f"Content-Encoding: {coding}", json=json, basic=caller),
        415,
        shape,
    )


BAD_GZIP = b"\x1f\x8b\x08\x00" + b"not gzip at all " * 4
CASES = [
    # Sizes: the request line, one header field, the number of fields, the whole header block.
    Case("request line over the limit", lambda s: head("GET", f"/healthz?{MARKER}" + "a" * LIMITS.request_line), 414),
    Case(
        "Cookie over the field limit, refresh token first (the padding attack)",
        lambda s: post(
            "/oauth/token", b"grant_type=refresh_token", f"Cookie: {refresh_cookie(s)}; {pad(LIMITS.field + 500)}"
        ),
        431,
    ),
    Case(
        "header name over the field limit", lambda s: head("GET", "/healthz", f"X-{'n' * LIMITS.field}: {MARKER}"), 431
    ),
    Case(
        "Authorization Basic over the field limit",
        lambda s: head("GET", "/metrics", f"Authorization: Basic {LOGIN_BASIC}{'A' * LIMITS.field}"),
        431,
    ),
    Case(
        "more header fields than the limit",
        lambda s: head(
            "GET", "/healthz", f"Cookie: {refresh_cookie(s)}", *(f"X-{i}: {MARKER}" for i in range(LIMITS.fields))
        ),
        431,
    ),
    Case(
        "header block over the limit (fields each under theirs)",
        lambda s: head(
            "GET",
            "/healthz",
            f"Cookie: {refresh_cookie(s)}; {pad(LIMITS.field - 1000)}",
            *(f"X-Pad-{i}: {MARKER}{'x' * (LIMITS.field - 1000)}" for i in range(2)),
        ),
        431,
    ),
    # Bytes no header may hold.
    Case(
        "control byte after the refresh token in Cookie",
        lambda s: head("GET", "/healthz", f"Cookie: {refresh_cookie(s)}\x01"),
        400,
    ),
    Case(
        "NUL after the refresh token in Cookie",
        lambda s: head("GET", "/healthz", f"Cookie: {refresh_cookie(s)}\x00x"),
        400,
    ),
    Case("bare CR in a header value", lambda s: head("GET", "/healthz", f"X-A: {MARKER}\rX-B: {s.refresh}"), 400),
    Case(
        "control byte after Basic credentials",
        lambda s: head("GET", "/metrics", f"Authorization: Basic {LOGIN_BASIC}\x01"),
        400,
    ),
    Case(
        "control byte after a Bearer token",
        lambda s: head("GET", "/v1/me/sessions", f"Authorization: Bearer {s.access}\x7f\x01"),
        400,
    ),
    Case("obs-fold continuation line", lambda s: head("GET", "/healthz", f"X-A: {MARKER}", f" {s.refresh}"), 400),
    Case("space in a header name", lambda s: head("GET", "/healthz", f"X A: {MARKER}"), 400),
    Case("invalid header name characters", lambda s: head("GET", "/healthz", f"X(A)@: {s.refresh}"), 400),
    Case("control byte in a header name", lambda s: head("GET", "/healthz", f"X-\x01A: {s.refresh}"), 400),
    Case("header line without a colon", lambda s: head("GET", "/healthz", f"Cookie {refresh_cookie(s)}"), 400),
    # Framing: Content-Length, Transfer-Encoding, chunks, bodies that lie about their length.
    Case(
        "two equal Content-Lengths",
        lambda s: post("/oauth/token", refresh_form(s), f"Content-Length: {len(refresh_form(s))}"),
        400,
    ),
    Case("two different Content-Lengths", lambda s: post("/oauth/token", refresh_form(s), "Content-Length: 3"), 400),
    Case(
        "Content-Length not a number",
        lambda s: head("POST", "/oauth/token", "Content-Length: 1x", f"X-M: {MARKER}") + refresh_form(s),
        400,
    ),
    Case(
        "negative Content-Length",
        lambda s: head("POST", "/oauth/token", "Content-Length: -5", f"X-M: {MARKER}") + refresh_form(s),
        400,
    ),
    Case(
        "Content-Length and Transfer-Encoding (smuggling)",
        lambda s: post("/oauth/token", b"0\r\n\r\n", "Transfer-Encoding: chunked"),
        400,
    ),
    Case(
        "Transfer-Encoding without chunked last",
        lambda s: head("POST", "/oauth/token", "Transfer-Encoding: gzip", f"X-M: {MARKER}") + refresh_form(s),
        400,
    ),
    Case(
        "Transfer-Encoding chunked twice",
        lambda s: head("POST", "/oauth/token", "Transfer-Encoding: chunked, chunked", f"X-M: {MARKER}") + b"0\r\n\r\n",
        400,
    ),
    # A coding besides chunked was de-chunked and ignored: the refresh went through (red team F7).
    *(
        Case(
            f"Transfer-Encoding {te!r} around a refresh",
            lambda s, te=te: (
                head("POST", "/oauth/token", *te, "Content-Type: application/x-www-form-urlencoded")
                + one_chunk(refresh_form(s))
            ),
            400,
        )
        for te in (
            ("Transfer-Encoding: gzip, chunked",),
            ("Transfer-Encoding: identity, chunked",),
            ("Transfer-Encoding: gzip", "Transfer-Encoding: chunked"),
        )
    ),
    Case("bad chunk size", lambda s: chunked("/oauth/token", b"zz\r\n" + refresh_form(s) + b"\r\n0\r\n\r\n")(s), 400),
    Case(
        "chunk size overflowing 64 bits",
        lambda s: chunked("/oauth/token", b"fffffffffffffffffffff\r\nx\r\n0\r\n\r\n")(s),
        400,
    ),
    Case(
        "chunk data longer than its size",
        lambda s: chunked("/oauth/token", b"4\r\n" + refresh_form(s) + b"\r\n0\r\n\r\n")(s),
        400,
    ),
    Case(
        "chunked body cut off (client half-closes)",
        lambda s: chunked("/oauth/token", b"ff\r\n" + refresh_form(s))(s),
        0,
        "none",
    ),
    Case(
        "body shorter than Content-Length (client waits)",
        lambda s: post("/oauth/token", refresh_form(s))[:-10],
        408,
        "oauth",
    ),
    Case(
        "body longer than Content-Length: the rest is a malformed next request",
        lambda s: post("/oauth/token", b"grant_type=x") + f"{s.refresh} garbage\r\n\r\n".encode(),
        400,
    ),
    # Content-Encoding on every endpoint that reads a body: never inflated, refused unread.
    encoded("/oauth/token", "gzip", lambda s: BAD_GZIP),
    encoded("/oauth/token", "gzip", lambda s: gzip.compress(refresh_form(s)), what="valid"),
    encoded("/oauth/token", "deflate", lambda s: BAD_GZIP),
    encoded("/oauth/token", "br", lambda s: BAD_GZIP),
    encoded("/oauth/revoke", "gzip", lambda s: BAD_GZIP),
    encoded("/oauth/introspect", "gzip", lambda s: BAD_GZIP),
    encoded("/v1/sessions", "gzip", lambda s: BAD_GZIP, json=True),
    encoded("/v1/revocations", "gzip", lambda s: BAD_GZIP, json=True),
    encoded("/oauth/token", "x-unknown", lambda s: refresh_form(s), what="plain"),
    # Request lines: versions, methods, targets.
    Case("HTTP/1.1 without Host", lambda s: head("GET", f"/healthz?{MARKER}", host=False), 400),
    Case(
        "HTTP/1.0 without Host, error answer",
        lambda s: head("GET", f"/nope/{MARKER}", version="HTTP/1.0", host=False),
        404,
        "problem",
    ),
    Case(
        "HTTP/1.0 without Host, token request",
        lambda s: (
            head(
                "POST",
                "/oauth/token",
                "Content-Type: application/x-www-form-urlencoded",
                f"Content-Length: {len(refresh_form(s)) + 1}",
                version="HTTP/1.0",
                host=False,
            )
            + refresh_form(s)
            + b"x"
        ),
        400,
        "oauth",
    ),
    Case("bad version", lambda s: head("GET", f"/healthz?{MARKER}", version="HTTP/9.9"), 400),
    # llhttp parses any single-digit version; HTTP/2 and HTTP/0.9 are not spoken over this framing.
    Case("HTTP/2.0 in an HTTP/1 request line", lambda s: head("GET", f"/healthz?{MARKER}", version="HTTP/2.0"), 400),
    Case("HTTP/0.9 version", lambda s: head("GET", f"/healthz?{MARKER}", version="HTTP/0.9"), 400),
    Case("garbage version", lambda s: head("GET", f"/healthz?{MARKER}", version=f"HTTX/1.1{s.refresh}"), 400),
    Case("invalid method token", lambda s: head("G@T", f"/healthz?{MARKER}"), 400),
    Case("method unknown to the parser", lambda s: head("BREW", f"/v1/me/sessions?{MARKER}"), 400),
    Case(
        "TLS handshake to the HTTP port",
        lambda s: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARKER.encode() * 4,
        400,
    ),
    Case("HTTP/2 prior-knowledge preface", lambda s: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + MARKER.encode(), 400),
    Case("garbage request line", lambda s: f"{s.refresh}\r\n\r\n".encode(), 400),
    Case("control byte in the target", lambda s: head("GET", f"/v1/me/sessions?{MARKER}\x01{s.refresh}"), 400),
    Case("space-separated junk in the target", lambda s: head("GET", f"/healthz {MARKER} x"), 400),
    Case("target without a leading slash", lambda s: head("GET", f"healthz{MARKER}"), 400),
    Case(
        "absolute-form target",
        lambda s: head("GET", f"http://evil.example/v1/me/sessions?{MARKER}"),
        401,
        "problem",
        False,
    ),
    # No route can match a target that is not a path: aiohttp's own text/plain 404 was the answer.
    Case("asterisk-form target", lambda s: head("OPTIONS", "*", f"X-M: {MARKER}"), 404),
    Case("authority-form target with CONNECT", lambda s: head("CONNECT", f"{MARKER}.example:443"), 404),
    Case("raw non-ASCII bytes in the target", lambda s: head("GET", f"/v1/users/\xff\xfe{MARKER}/sessions"), 400),
    # aiohttp's Expect handling answers before any handler, quoting the header ("Unknown Expect: ...").
    Case("unknown Expect value", lambda s: post("/oauth/token", refresh_form(s), f"Expect: {s.refresh}"), 417),
    # Pipelining: what follows a refused request is never answered.
    Case(
        "pipelined request after a malformed one",
        lambda s: (
            head("GET", "/healthz", f"X-A: {MARKER}\x00")
            + head("GET", "/v1/me/sessions", f"Authorization: Bearer {s.access}")
        ),
        400,
    ),
]


def fragments(secret: str, size: int = 12) -> set[str]:
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    """The secrets (by name) of which ``text`` holds any 12-character fragment, and the marker."""
    found = [name for name, secret in secrets.items() if any(f in text for f in fragments(secret))]
    return found + (["marker"] if MARKER in text else [])


def check_shape(answer: Answer, case: Case) -> None:
    ctype = answer.headers.get("content-type", "")
    body = answer.json()
    if case.shape == "oauth":
        assert ctype.startswith("application/json"), answer
        assert set(body) == {"error", "error_description"}, body
    elif case.shape == "problem":
        assert ctype.startswith("application/problem+json"), answer
        assert body["status"] == answer.status and body["code"], body
    else:
        assert ctype.startswith("application/problem+json"), answer
        assert body["status"] == answer.status and body["error"] == body["code"], body
        assert body["code"] == ("not_found" if answer.status == 404 else "invalid_request"), body
        assert body["error_description"] == body["detail"], body


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_raw_request(stack: Stack, case: Case) -> None:
    offset = stack.log_size()
    data = case.build(stack)
    half_close = case.shape == "none"
    seen = exchange(stack.port, data, half_close=half_close)
    first = seen.answers[0] if seen.answers else None
    shape = "-" if first is None else first.headers.get("content-type", "").split(";")[0]
    said = "" if first is None or "json" not in shape else orjson.loads(first.body).get("error_description", "")
    print(f"\nRAW {case.name!r}: {first.status if first else 'no answer'} {shape} {said!r}, closed={seen.closed}")
    time.sleep(0.05)  # lines logged after the answer went out (the access line of a 499)
    log = stack.log_since(offset)
    bad_lines = [line for line in log.splitlines() if leaks(line, stack.secrets())]
    assert not bad_lines, bad_lines[:3]
    assert "Error handling request" not in log and "Traceback" not in log, log[-2000:]
    assert not leaks(seen.raw.decode("latin-1"), stack.secrets()), seen.raw[:500]
    assert all(a.status < 500 for a in seen.answers), seen.answers
    if case.shape == "none":
        assert first is None and seen.closed
        return
    assert first is not None, seen
    assert first.status == case.status, (first, first.body)
    check_shape(first, case)
    if case.closed:
        assert seen.closed, "the server must hang up when it cannot trust the framing"
        assert len(seen.answers) == 1, "nothing after a refused request is answered"


def test_a_realistic_cookie_jar_fits(stack: Stack) -> None:
    """40 cookies of 300 bytes (12 kB) beside the refresh cookie, and 20 more headers: answered."""
    jar = "; ".join([refresh_cookie(stack), *(f"c{i}={'v' * 300}" for i in range(40))])
    seen = exchange(stack.port, head("GET", "/healthz", f"Cookie: {jar}", *(f"X-H{i}: {'h' * 200}" for i in range(20))))
    assert seen.answers[0].status == 200


def test_broken_chunking_after_the_handler_started_reading(stack: Stack) -> None:
    """A chunk error in a later segment, once the handler is reading: aiohttp queued it as the next
    request's error and left the handler waiting for the body deadline (408). The protocol fails
    the handler's read at once: 400 in the endpoint's shape, the connection closed, no echo."""
    offset = stack.log_size()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=3) as sock:
        sock.sendall(chunked("/oauth/token", b"5\r\ngrant\r\n")(stack))
        time.sleep(0.2)
        sock.sendall(b"zz" + stack.refresh.encode() + b"\r\n0\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    (answer,) = parse_answers(raw)
    assert answer.status == 400 and answer.json()["error"] == "invalid_request", answer
    assert not leaks(raw.decode("latin-1"), stack.secrets())
    assert not [line for line in stack.log_since(offset).splitlines() if leaks(line, stack.secrets())]


def test_a_client_hanging_up_mid_body_is_499_not_a_store_outage(stack: Stack) -> None:
    """Finding 11: the caller's reset was the OSError -> 503 row (a warning, and the 503 share alert)."""
    offset = stack.log_size()
    body = refresh_form(stack)
    for _ in range(2):  # a FIN mid-body
        seen = exchange(stack.port, post("/oauth/token", body)[:-20], half_close=True)
        assert not seen.answers and seen.closed
    with socket.create_connection(("127.0.0.1", stack.port), timeout=3) as sock:  # an RST mid-body
        sock.sendall(post("/oauth/token", body)[:-20])
        time.sleep(0.1)  # the handler is reading the body
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.1)
    log = stack.log_since(offset)
    assert "store unavailable" not in log and '"status":503' not in log, log[-2000:]
    assert log.count('"status":499') == 3, log[-2000:]
    metrics = exchange(stack.port, head("GET", "/metrics", f"Authorization: Basic {ADMIN_BASIC}", "Connection: close"))
    text = metrics.answers[0].body.decode()
    assert re.search(r'tokenward_http_requests_total\{[^}]*route="/oauth/token"[^}]*status="499"\} [3-9]', text), text
    assert not re.search(r'status="503"', text)


def test_parser_refusals_are_counted_under_one_route(stack: Stack) -> None:
    """Requests refused below routing are in the request metrics (route "malformed"), by status."""
    exchange(stack.port, head("GET", "/healthz", "X-A: a\x00"))
    metrics = exchange(stack.port, head("GET", "/metrics", f"Authorization: Basic {ADMIN_BASIC}", "Connection: close"))
    assert re.search(
        r'tokenward_http_requests_total\{[^}]*route="malformed"[^}]*status="400"\} [1-9]',
        metrics.answers[0].body.decode(),
    )


def test_text_format_logs_hold_no_secret_either(keyring: KeyRing) -> None:
    """Every case once more against a service logging text (development's format): the redaction
    step is in both formatters, and text tracebacks span several lines."""
    with running(keyring, "TEXT") as text:
        for case in CASES:
            exchange(text.port, case.build(text), half_close=case.shape == "none", wait=1.5)
        time.sleep(0.1)
        log = text.log_since(0)
    assert "malformed request refused" in log, log[-2000:]
    assert not [line for line in log.splitlines() if leaks(line, text.secrets())]
