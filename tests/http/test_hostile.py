"""Hostile callers: malformed requests at every layer, slow clients, credentials in URLs,
foreign revocations, timing of refresh-token lookups, and floods against the rate limits.

Cases here are beyond tests/http/test_bad_input.py and tests/http/test_gateway.py. Requests
that aiohttp's client would refuse to send go over a raw socket to the real server.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import ipaddress
import random
import secrets
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient

from service.config import Rate, Secret
from service.keys import KeyRing
from tests.conftest import CLIENT_SECRETS, AppFactory, basic
from tests.factories import bearer, login, refresh
from tests.support.processes import ServiceProcess, service_on_own_redis
from tests.support.redis_servers import RedisServer

FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"
JSON = b"Content-Type: application/json\r\n"


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool

    def json(self) -> Any:
        return orjson.loads(self.body)


async def raw_http(port: int, data: bytes, within: float = 15.0) -> Answer:
    """Send bytes as they are; read one answer (skipping 100 Continue) and whether the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(within):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ")[1])
                if status != 100:
                    break
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            try:
                closed = await asyncio.wait_for(reader.read(1), 2.0) == b""
            except TimeoutError:
                closed = False
        return Answer(status, headers, body, closed)
    finally:
        writer.close()


def request(
    method: str, path: str, body: bytes = b"", *headers: bytes, content_type: bytes = FORM, length: bool = True
) -> bytes:
    """An HTTP/1.1 request as bytes; ``headers`` are full ``Name: value\\r\\n`` lines."""
    head = f"{method} {path} HTTP/1.1\r\nHost: tokenward.test\r\nConnection: close\r\n".encode()
    size = f"Content-Length: {len(body)}\r\n".encode() if length else b""
    return head + content_type + b"".join(headers) + size + b"\r\n" + body


def auth_line(client_id: str, secret: str | None = None) -> bytes:
    return f"Authorization: {basic(client_id, secret)['Authorization']}\r\n".encode()


def basic_raw(credentials: bytes) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(credentials) + b"\r\n"


def chunked(body: bytes, size: int = 4096) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


REFRESH = b"grant_type=refresh_token&refresh_token="
LOGIN = auth_line("login")
GATEWAY = auth_line("gateway")


@dataclasses.dataclass(frozen=True)
class Case:
    """One hostile request and the answer a caller relies on.

    ``shape``: ``oauth`` (RFC 6749 §5.2 ``error``) or ``problem`` (RFC 9457 ``code``).
    """

    name: str
    data: bytes
    status: int
    shape: str
    code: str = ""


def oauth(name: str, data: bytes, status: int, code: str) -> Case:
    return Case(name, data, status, "oauth", code)


def token(name: str, body: bytes, status: int = 400, code: str = "invalid_request", *headers: bytes) -> Case:
    return oauth(name, request("POST", "/oauth/token", body, *headers), status, code)


def session(name: str, body: bytes, status: int = 400, code: str = "invalid_request") -> Case:
    return Case(name, request("POST", "/v1/sessions", body, LOGIN, content_type=JSON), status, "problem", code)


GZIP_BOMB = gzip.compress(REFRESH + b"A" * 10_000_000)  # ~10 kB on the wire, 10 MB inflated

CASES = [
    # What aiohttp's parser refuses before routing is in tests/http/test_raw_http.py, against
    # `tokenward serve` itself: only its connection layer (http.protocol) answers those.
    # Bodies: size, encodings, percent-encoding, NUL bytes, non-UTF-8.
    oauth(
        "chunked body over the cap (no Content-Length)",
        request(
            "POST", "/oauth/token", chunked(REFRESH + b"A" * 20_000), b"Transfer-Encoding: chunked\r\n", length=False
        ),
        413,
        "invalid_request",
    ),
    # Bodies are never inflated: any Content-Encoding is refused unread (415), a bomb included.
    token("gzip bomb (10 kB inflating to 10 MB)", GZIP_BOMB, 415, "invalid_request", b"Content-Encoding: gzip\r\n"),
    token("unknown Content-Encoding", b"junk", 415, "invalid_request", b"Content-Encoding: x\r\n"),
    token("raw NUL byte in a form value", REFRESH + b"twr_a\x00b"),
    token("%00 in refresh_token", REFRESH + b"twr_%00"),
    token("%00 in a parameter name", b"grant_type=refresh_token&refresh%00_token=x"),
    token("%0A (log injection) in grant_type", b"grant_type=refresh_token%0Aadmin=1&refresh_token=x"),
    token("%7F (DEL) in refresh_token", REFRESH + b"x%7F"),
    token("invalid escape %zz kept literally, not a token", REFRESH + b"%zz", 400, "invalid_grant"),
    token("truncated escape %4 kept literally", REFRESH + b"abc%4", 400, "invalid_grant"),
    token("overlong UTF-8 %C0%AF", REFRESH + b"%C0%AF"),
    token("raw non-UTF-8 byte in the body", REFRESH + b"\xff"),
    token("UTF-16 body", "grant_type=refresh_token&refresh_token=x".encode("utf-16")),
    token("';' is not a separator", b"grant_type=refresh_token;refresh_token=x", 400, "unsupported_grant_type"),
    token("100 parameters", b"&".join(b"f%d=1" % i for i in range(100))),
    token("repeated scope", REFRESH + b"x&scope=a&scope=b"),
    token("refresh_token empty, then repeated", b"grant_type=refresh_token&refresh_token=&refresh_token=x"),
    oauth("repeated token on revoke", request("POST", "/oauth/revoke", b"token=a&token=b"), 400, "invalid_request"),
    oauth(
        "repeated token on introspect",
        request("POST", "/oauth/introspect", b"token=a&token=b", GATEWAY),
        400,
        "invalid_request",
    ),
    # Content types.
    oauth(
        "multipart/form-data",
        request(
            "POST",
            "/oauth/token",
            b'--b\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\nrefresh_token\r\n--b--\r\n',
            content_type=b"Content-Type: multipart/form-data; boundary=b\r\n",
        ),
        400,
        "invalid_request",
    ),
    oauth(
        "text/plain",
        request("POST", "/oauth/token", REFRESH + b"x", content_type=b"Content-Type: text/plain\r\n"),
        400,
        "invalid_request",
    ),
    oauth("no Content-Type", request("POST", "/oauth/token", REFRESH + b"x", content_type=b""), 400, "invalid_request"),
    oauth(
        "JSON to the token endpoint with a form charset lie",
        request(
            "POST",
            "/oauth/token",
            b'{"grant_type":"refresh_token"}',
            content_type=b"Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n",
        ),
        400,
        "invalid_request",
    ),
    # Client credentials.
    oauth(
        "two Authorization headers",
        request("POST", "/oauth/introspect", b"token=x", GATEWAY, auth_line("gateway", "wrong")),
        400,
        "invalid_request",
    ),
    oauth(
        "non-ASCII bytes in Basic credentials",
        request("POST", "/oauth/introspect", b"token=x", b"Authorization: Basic \xe9\xe9\r\n"),
        401,
        "invalid_client",
    ),
    oauth(
        "Basic without a colon",
        request("POST", "/oauth/introspect", b"token=x", basic_raw(b"gateway")),
        401,
        "invalid_client",
    ),
    oauth(
        "NUL byte in the Basic client id",
        request(
            "POST", "/oauth/introspect", b"token=x", basic_raw(b"gate\x00way:" + CLIENT_SECRETS["gateway"][0].encode())
        ),
        401,
        "invalid_client",
    ),
    oauth(
        "Basic credentials of 6 kB",
        request("POST", "/oauth/introspect", b"token=x", basic_raw(b"gateway:" + b"s" * 4500)),
        401,
        "invalid_client",
    ),
    # Credentials in the query string.
    oauth(
        "?client_secret= on the token endpoint",
        request("POST", "/oauth/token?client_secret=s", REFRESH + b"x"),
        400,
        "invalid_request",
    ),
    oauth(
        "?refresh_token= on the token endpoint", request("POST", "/oauth/token?refresh_token=x"), 400, "invalid_request"
    ),
    oauth("?token= on revoke", request("POST", "/oauth/revoke?token=x", b"token=x"), 400, "invalid_request"),
    oauth(
        "?token= on introspect",
        request("POST", "/oauth/introspect?token=x", b"token=x", GATEWAY),
        400,
        "invalid_request",
    ),
    Case(
        "?access_token= on a user endpoint",
        request("GET", "/v1/me/sessions?access_token=x", content_type=b""),
        400,
        "problem",
        "invalid_request",
    ),
    # JSON bodies.
    session("JSON nested 5000 deep", b"[" * 5000 + b"]" * 5000),
    session("JSON with a byte-order mark", b'\xef\xbb\xbf{"sub":"a"}'),
    session("JSON NaN", b'{"sub":"a","remember_me":NaN}'),
    session("JSON lone surrogate", b'{"sub":"\\ud800"}'),
    session("JSON 5000-digit integer", b'{"sub":"a","claims":{"n":' + b"9" * 5000 + b"}}"),
    session("JSON in UTF-16", '{"sub":"a"}'.encode("utf-16")),
    session("JSON 15 kB array under the cap", b"[" + b"1," * 7000 + b"1]"),
    session("JSON claims nested past the claims cap", b'{"sub":"a","claims":' + b'{"a":' * 600 + b"1" + b"}" * 601),
    # Paths.
    Case(
        "dot segments in the path",
        request("GET", "/v1/users/../../healthz", content_type=b""),
        404,
        "problem",
        "not_found",
    ),
]


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_request(client: TestClient[Any, Any], case: Case) -> None:
    assert client.server.port is not None
    answer = await raw_http(client.server.port, case.data)
    assert answer.status == case.status, answer
    if case.shape == "oauth":
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert set(body) == {"error", "error_description"} and body["error"] == case.code, body
    else:
        assert answer.headers["content-type"] == "application/problem+json"
        body = answer.json()
        assert body["status"] == case.status and body["code"] == case.code, body


async def test_forward_auth_refuses_a_query_token_with_401(client: TestClient[Any, Any]) -> None:
    """Gateways turn a 400 from forward-auth into a 500: a query credential is a 401 there."""
    s = await login(client)
    resp = await client.get("/v1/authz", params={"access_token": s["access_token"]}, headers=bearer(s["access_token"]))
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="tokenward", error="invalid_request"'
    assert (await client.get("/v1/authz", headers=bearer(s["access_token"]))).status == 200


async def test_a_body_split_over_tcp_segments_is_read_whole(client: TestClient[Any, Any]) -> None:
    """The body parser once returned only the first segment: a refresh split in two failed."""
    s = await login(client)
    body = REFRESH + s["refresh_token"].encode()
    head = request("POST", "/oauth/token", body)[: -len(body)]
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(head + body[:30])
    await writer.drain()
    await asyncio.sleep(0.3)
    writer.write(body[30:])
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 200"), status_line


async def test_expect_continue_with_an_oversized_length(client: TestClient[Any, Any]) -> None:
    assert client.server.port is not None
    data = request("POST", "/oauth/token", b"", b"Expect: 100-continue\r\nContent-Length: 999999\r\n", length=False)
    answer = await raw_http(client.server.port, data)
    assert answer.status == 413 and answer.json()["error"] == "invalid_request"


async def test_duplicate_json_keys_last_one_wins(client: TestClient[Any, Any]) -> None:
    """Documented, not refused: orjson keeps the last value. Only authenticated login backends send this."""
    resp = await client.post(
        "/v1/sessions",
        data=b'{"sub":"mallory","sub":"alice"}',
        headers={**basic("login"), "Content-Type": "application/json"},
    )
    assert resp.status == 201
    listed = await client.get("/v1/users/alice/sessions", headers=basic("admin"))
    assert len((await listed.json())["sessions"]) == 1


class TestForeignRevocation:
    """RFC 7009 §2.1: client B revoking client A's tokens (README, "Who may revoke")."""

    async def test_client_without_revoke_scope_cannot_revoke_anothers_tokens(
        self, client: TestClient[Any, Any]
    ) -> None:
        s = await login(client)  # issued through client "login"
        for token in (s["refresh_token"], s["access_token"]):
            resp = await client.post("/oauth/revoke", data={"token": token}, headers=basic("nobody"))
            assert resp.status == 400
            assert (await resp.json())["error"] == "unauthorized_client"
        assert (await client.get("/v1/authz", headers=bearer(s["access_token"]))).status == 200
        assert (await refresh(client, s["refresh_token"]))[0] == 200

    async def test_wrong_credentials_of_b_are_401_and_revoke_nothing(self, client: TestClient[Any, Any]) -> None:
        s = await login(client)
        resp = await client.post("/oauth/revoke", data={"token": s["refresh_token"]}, headers=basic("revoker", "x"))
        assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"
        assert (await refresh(client, s["refresh_token"]))[0] == 200

    async def test_the_issuing_client_and_the_holder_may(self, client: TestClient[Any, Any]) -> None:
        s = await login(client)
        resp = await client.post("/oauth/revoke", data={"token": s["access_token"]}, headers=basic("login"))
        assert resp.status == 200
        assert (await client.get("/v1/authz", headers=bearer(s["access_token"]))).status == 401
        t = await login(client)
        assert (await client.post("/oauth/revoke", data={"token": t["refresh_token"]})).status == 200
        assert (await refresh(client, t["refresh_token"]))[0] == 400


# --- Timing of refresh-token lookups ---------------------------------------------------------


def near_miss(refresh_token: str) -> str:
    """The right sid and generation, the secret off by its last character."""
    prefix, gen, secret, tag = refresh_token.split(".")
    last = "A" if secret[-1] != "A" else "B"
    return f"{prefix}.{gen}.{secret[:-1]}{last}.{tag}"


def random_token(partition: str = "00") -> str:
    sid = partition + secrets.token_urlsafe(16)
    return f"twr_{sid}.0.{secrets.token_urlsafe(24)}.{secrets.token_hex(8)}"


async def measure(client: TestClient[Any, Any], kinds: dict[str, str], rounds: int) -> dict[str, Any]:
    """Per-request times in interleaved rounds (random order within each round)."""
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        order = list(kinds)
        random.shuffle(order)
        for kind in order:
            raw = kinds[kind] or random_token()
            t0 = time.perf_counter()
            resp = await client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": raw})
            await resp.read()
            samples[kind].append(time.perf_counter() - t0)
            assert resp.status == 400

    def trimmed(xs: list[float]) -> float:
        xs = sorted(xs)
        cut = len(xs) // 5
        return statistics.fmean(xs[cut:-cut])

    # Paired by round: neighbours in time share whatever load the machine had then.
    paired = statistics.median(n - r for n, r in zip(samples["near"], samples["random"], strict=True))
    return {
        "median": {k: statistics.median(v) for k, v in samples.items()},
        "trimmed": {k: trimmed(v) for k, v in samples.items()},
        "paired": paired,
    }


async def test_near_miss_and_random_tokens_take_the_same_time(make_client: AppFactory) -> None:
    """A secret one character off is refused as fast as a random token.

    400 interleaved rounds; medians, 20 %-trimmed means and the median of per-round
    differences compared against a generous bound. A loaded machine can still skew one
    run, so up to three runs are made: a real leak shows in every one. The resolution
    check: a token the parser refuses (no Redis round trip) is measurably faster, so the
    method sees a difference the size of a lookup.
    """
    client = await make_client()
    s = await login(client, "timing")
    kinds = {"near": near_miss(s["refresh_token"]), "random": "", "unparsable": "twr_not-a-token"}
    await measure(client, kinds, 20)  # warm up connections, script cache, allocator
    failures = []
    for _ in range(3):
        stats = await measure(client, kinds, 400)
        med, trim = stats["median"], stats["trimmed"]
        report = {k: f"median {med[k] * 1e6:.0f} µs, trimmed {trim[k] * 1e6:.0f} µs" for k in kinds}
        report["paired near-random"] = f"{stats['paired'] * 1e6:.0f} µs"
        # 15 % of the median or 150 µs, whichever is larger: a byte-by-byte comparison leak
        # is nanoseconds, an extra Redis round trip hundreds of microseconds.
        bound = max(0.15 * med["random"], 150e-6)
        same = (
            abs(med["near"] - med["random"]) < bound
            and abs(trim["near"] - trim["random"]) < bound
            and abs(stats["paired"]) < bound
        )
        # Resolution: skipping Redis altogether is visible to the same method.
        assert med["unparsable"] < med["random"] and trim["unparsable"] < trim["random"], report
        if same:
            print("refresh-token lookup timing:", report)
            break
        failures.append(report)
    else:
        pytest.fail(f"near-miss and random tokens differ in every run: {failures}")
    assert (await refresh(client, s["refresh_token"]))[0] == 200, "near misses must not have touched the session"


# --- The slow client: a real process, a real socket ------------------------------------------

CLIENT_TIMEOUT = 1.5


@pytest.fixture(name="slow_service", scope="module")
def _slow_service(tmp_path_factory: pytest.TempPathFactory, keyring: KeyRing) -> Iterator[ServiceProcess]:
    directory = Path(tmp_path_factory.mktemp("hostile"))
    env = {"TOKENWARD_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT)}
    with service_on_own_redis(directory, keyring, CLIENT_SECRETS, env) as service:
        yield service


HEAD = b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
SLOW = {
    # name: (chunks, pause between chunks, what the client gets)
    "connects and sends nothing": ([], 0.0, "closed"),
    "dribbles its request head": ([HEAD] + [b"X-A: b\r\n"] * 40, 0.25, "closed"),
    "stalls in its body": ([HEAD + b"Content-Length: 100\r\n\r\ngrant_type="], 0.0, "408"),
    "dribbles its body": ([HEAD + b"Content-Length: 400\r\n\r\n"] + [b"a"] * 40, 0.25, "408"),
}


def slow_exchange(port: int, chunks: list[bytes], pause: float) -> tuple[bytes, float, float]:
    """Send chunks with pauses (ignoring a closed socket); the answer, when it began and when the server closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    start = time.monotonic()
    answered = closed = float("inf")
    out = b""
    try:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:
                break
            time.sleep(pause)
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data and not out:
                answered = time.monotonic() - start
            if not data:
                closed = time.monotonic() - start
                break
            out += data
    finally:
        sock.close()
    return out, answered, closed


@pytest.mark.parametrize("name", list(SLOW))
async def test_slow_client_is_cut_off_in_bounded_time(slow_service: ServiceProcess, name: str) -> None:
    chunks, pause, outcome = SLOW[name]
    out, answered, closed = await asyncio.to_thread(slow_exchange, slow_service.port, chunks, pause)
    # The head (or body) deadline, then at most the lingering drain of an unread body; the
    # rest is slack for a loaded machine.
    assert closed < 2 * CLIENT_TIMEOUT + 3, (name, closed)
    if outcome == "closed":
        assert out == b"", out
        assert closed >= CLIENT_TIMEOUT * 0.9, closed
    else:
        assert out.startswith(b"HTTP/1.1 408 "), out[:100]
        assert b'"error":"invalid_request"' in out
        assert CLIENT_TIMEOUT * 0.9 <= answered < CLIENT_TIMEOUT + 3, answered
    # The server is still there for everyone else.
    async with aiohttp.ClientSession() as http, http.get(slow_service.url + "/healthz") as resp:
        assert resp.status == 200


# --- Floods against the rate limits ----------------------------------------------------------

TINY = Rate(0.5, 5)  # five at once, then one every two seconds
WIDE = Rate(1000, 100_000)


async def limited(make_client: AppFactory, **overrides: Any) -> TestClient[Any, Any]:
    limits: dict[str, Any] = {
        "ratelimit": True,
        "ratelimit_address": WIDE,
        "ratelimit_client": WIDE,
        "ratelimit_family": WIDE,
        "ratelimit_auth_failures": WIDE,
    }
    return await make_client(**{**limits, **overrides})


async def post_token(client: TestClient[Any, Any], token: str, xff: str | None = None, **headers: str) -> Any:
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    return await client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=headers
    )


async def statuses(responses: list[Any], most: int = 2) -> list[int]:
    """The statuses; every 429 in the §5.2 shape with a Retry-After of 1 to ``most`` seconds."""
    out = []
    for resp in responses:
        if resp.status == 429:
            body = await resp.json()
            assert body == {"error": "slow_down", "error_description": body["error_description"]}, body
            assert 1 <= int(resp.headers["Retry-After"]) <= most, resp.headers["Retry-After"]
            assert resp.headers["Cache-Control"] == "no-store"
        out.append(resp.status)
    return out


def addresses(n: int) -> list[str]:
    return [str(ipaddress.IPv4Address("198.51.100.0") + i) for i in range(n)]


@pytest.mark.topologies("standalone", "cluster")
class TestFloods:
    async def test_one_address_is_answered_429(self, make_client: AppFactory) -> None:
        client = await limited(make_client, ratelimit_address=TINY)
        got = await statuses([await post_token(client, random_token()) for _ in range(8)])
        assert got == [400] * 5 + [429] * 3

    async def test_a_spoofed_forwarded_for_does_not_escape(self, make_client: AppFactory) -> None:
        client = await limited(make_client, ratelimit_address=TINY)
        got = await statuses([await post_token(client, random_token(), xff) for xff in addresses(8)])
        assert got == [400] * 5 + [429] * 3

    async def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(self, make_client: AppFactory) -> None:
        proxies = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))
        client = await limited(make_client, ratelimit_address=TINY, trusted_proxies=proxies)
        got = await statuses([await post_token(client, random_token(), xff) for xff in addresses(8)])
        assert got == [400] * 8
        # One client behind two trusted hops; what it writes itself (left) does not matter.
        spoofed = [f"{a}, 203.0.113.9, 10.1.2.3" for a in addresses(8)]
        got = await statuses([await post_token(client, random_token(), xff) for xff in spoofed])
        assert got == [400] * 5 + [429] * 3

    async def test_one_client_is_answered_429_from_any_address(self, make_client: AppFactory) -> None:
        client = await limited(
            make_client, ratelimit_client=TINY, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)
        )
        sessions = [await login(client, f"c{i}") for i in range(8)]
        got = await statuses(
            [
                await post_token(client, s["refresh_token"], a, **basic("login"))
                for s, a in zip(sessions, addresses(8), strict=True)
            ]
        )
        assert got == [200] * 5 + [429] * 3
        # Another client is not affected.
        assert (await post_token(client, random_token(), "192.0.2.1", **basic("gateway"))).status == 400

    async def test_one_family_is_answered_429_from_any_address(self, make_client: AppFactory) -> None:
        client = await limited(
            make_client, ratelimit_family=TINY, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)
        )
        s = await login(client, "fam")
        guesses = [near_miss(s["refresh_token"]) for _ in range(5)]
        got = await statuses([await post_token(client, g, a) for g, a in zip(guesses, addresses(5), strict=True)])
        assert got == [400] * 5
        got = await statuses([await post_token(client, s["refresh_token"], "192.0.2.7")])
        assert got == [429], "the family is throttled, even for its holder (the price of the limit)"
        other = await login(client, "fam")
        assert (await post_token(client, other["refresh_token"], "192.0.2.8")).status == 200
        # Logout is never blocked by the family limit.
        assert (await client.post("/oauth/revoke", data={"token": s["refresh_token"]})).status == 200

    async def test_failed_client_authentications(self, make_client: AppFactory) -> None:
        """Brute force of a secret: 401 up to the burst, then 429 even for the right secret."""
        proxies = (ipaddress.ip_network("127.0.0.1/32"),)
        client = await limited(make_client, ratelimit_auth_failures=TINY, trusted_proxies=proxies)
        guesses = [basic("login", f"guess-{i}") for i in range(7)]
        got = await statuses([await post_token(client, random_token(), "192.0.2.50", **g) for g in guesses])
        assert got == [401] * 5 + [429] * 2
        s = await login(client, "brute")
        right = await post_token(client, s["refresh_token"], "192.0.2.50", **basic("login"))
        assert await statuses([right]) == [429], "a throttled address learns nothing about its guess"
        assert (await post_token(client, s["refresh_token"], "192.0.2.51", **basic("login"))).status == 200
        # Public clients (no credentials) from that address are not caught by the failure count.
        assert (await post_token(client, random_token(), "192.0.2.50")).status == 400

    async def test_introspection_is_limited_only_for_failing_callers(self, make_client: AppFactory) -> None:
        proxies = (ipaddress.ip_network("127.0.0.1/32"),)
        client = await limited(
            make_client, ratelimit_address=TINY, ratelimit_auth_failures=TINY, trusted_proxies=proxies
        )

        async def introspect(xff: str, secret: str | None = None) -> Any:
            headers = {**basic("gateway", secret), "X-Forwarded-For": xff}
            return await client.post("/oauth/introspect", data={"token": "x"}, headers=headers)

        got = await statuses([await introspect("192.0.2.60") for _ in range(30)])
        assert got == [200] * 30, "a gateway with good credentials is never limited"
        got = await statuses([await introspect("192.0.2.61", "wrong") for _ in range(7)])
        assert got == [401] * 5 + [429] * 2
        assert await statuses([await introspect("192.0.2.61")]) == [429]
        assert (await introspect("192.0.2.62")).status == 200

    async def test_forward_auth_is_never_429(self, make_client: AppFactory) -> None:
        tiny = Rate(0.5, 1)
        client = await limited(
            make_client,
            ratelimit_address=tiny,
            ratelimit_client=tiny,
            ratelimit_family=tiny,
            ratelimit_auth_failures=tiny,
        )
        s = await login(client)
        for _ in range(30):
            assert (await client.get("/v1/authz", headers=bearer("garbage"))).status == 401
            assert (await client.get("/v1/authz", headers=bearer(s["access_token"]))).status == 200

    async def test_retry_after_is_honest(self, make_client: AppFactory) -> None:
        client = await limited(make_client, ratelimit_address=Rate(2, 1))
        assert (await post_token(client, random_token())).status == 400
        resp = await post_token(client, random_token())
        assert await statuses([resp]) == [429]
        await asyncio.sleep(int(resp.headers["Retry-After"]) + 0.05)
        assert (await post_token(client, random_token())).status == 400

    async def test_replicas_share_the_limits(self, make_client: AppFactory) -> None:
        replicas = [await limited(make_client, ratelimit_address=TINY) for _ in range(3)]
        got = await statuses([await post_token(replicas[i % 3], random_token()) for i in range(9)])
        assert got == [400] * 5 + [429] * 4

    async def test_switched_off(self, make_client: AppFactory) -> None:
        client = await limited(make_client, ratelimit=False, ratelimit_address=TINY)
        got = await statuses([await post_token(client, random_token()) for _ in range(20)])
        assert got == [400] * 20

    async def test_concurrent_flood_lets_exactly_the_burst_through(self, make_client: AppFactory) -> None:
        client = await limited(make_client, ratelimit_address=Rate(0.1, 10))
        got = await statuses(await asyncio.gather(*(post_token(client, random_token()) for _ in range(60))), 10)
        assert sorted(got) == [400] * 10 + [429] * 50


@pytest.fixture(name="own_redis")
def _own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


async def test_limits_with_redis_down_answer_503_fast(make_client: AppFactory, own_redis: RedisServer) -> None:
    """The limiter's Redis call fails like any other: 503 within the Redis timeout, never a 500."""
    client = await limited(make_client, redis_url=Secret(own_redis.url), redis_timeout=0.5, partitions=1)
    assert (await post_token(client, random_token())).status == 400
    own_redis.kill()
    for path, form, headers in [
        ("/oauth/token", {"grant_type": "refresh_token", "refresh_token": random_token()}, {}),
        ("/oauth/revoke", {"token": random_token()}, basic("login")),
        ("/oauth/introspect", {"token": "x"}, basic("gateway", "wrong")),
    ]:
        t0 = time.monotonic()
        resp = await client.post(path, data=form, headers=headers)
        assert resp.status == 503, path
        assert (await resp.json())["error"] == "temporarily_unavailable"
        assert resp.headers["Retry-After"] == "1"
        assert time.monotonic() - t0 < 3.0, path
