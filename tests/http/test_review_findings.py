"""Findings 6 and 12 of the outside review (issue 15), against a real ``tokenward serve`` on a
real Redis: event cursors Redis cannot take, an error after an SSE stream has started, and
two Authorization headers."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from service.keys import KeyRing
from tests.conftest import CLIENT_SECRETS, basic
from tests.factories import bearer
from tests.support.processes import ServiceProcess, write_config
from tests.support.redis_servers import RedisServer

MAX_U64 = 2**64 - 1


def start_service(keyring: KeyRing) -> tuple[RedisServer, ServiceProcess]:
    """A Redis of its own and a service process on it."""
    redis = RedisServer().start()
    directory = Path(tempfile.mkdtemp(prefix="tw-review-"))
    service = ServiceProcess({"TOKENWARD_REDIS_URL": redis.url, **write_config(directory, keyring, CLIENT_SECRETS)})
    try:
        service.start()
    except BaseException:
        redis.close()
        raise
    return redis, service


@pytest.fixture(name="service", scope="module")
def _service(keyring: KeyRing) -> Iterator[ServiceProcess]:
    redis, service = start_service(keyring)
    try:
        yield service
    finally:
        service.stop()
        redis.close()


@pytest.fixture(name="http")
async def _http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def access_token(http: aiohttp.ClientSession, service: ServiceProcess, sub: str = "alice") -> str:
    async with http.post(f"{service.url}/v1/sessions", json={"sub": sub}, headers=basic("login")) as resp:
        assert resp.status == 201, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token


async def problem(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """An RFC 9457 problem body (our own shape), checked as such."""
    assert resp.content_type == "application/problem+json", (resp.status, await resp.text())
    body: dict[str, Any] = await resp.json()
    assert body["status"] == resp.status
    return body


# Finding 6: cursors. Each is refused with 400 before anything is streamed; on e1788cc the
# out-of-range ones reached Redis ("Invalid stream ID") and were a 500.
BAD_CURSORS = {
    "ms past 64 bits": "1.0_99999999999999999999-0_1",
    "seq of the id past 64 bits": f"1.0_0-{MAX_U64 + 1}_1",
    "the largest id, after which nothing can come": f"1.0_{MAX_U64}-{MAX_U64}_1",
    "counter past signed 64 bits": f"1.0_0-0_{2**63}",
    "leading zero": "1.0_01-0_1",
    "partition twice": "1.0_0-0_0.0_0-0_0",
    "trailing newline": "1.0_0-0_0\n",
    "another deployment's partitions": "1.0_0-0_0.1_0-0_0",
    "empty position": "1.",
    "unknown version": "2.0_0-0_0",
}


@pytest.mark.parametrize("name", BAD_CURSORS)
async def test_a_bad_cursor_is_400_before_anything_is_streamed(
    service: ServiceProcess, http: aiohttp.ClientSession, name: str
) -> None:
    cursor = BAD_CURSORS[name]
    async with http.get(f"{service.url}/v1/revocations", params={"since": cursor}, headers=basic("admin")) as resp:
        assert resp.status == 400, (name, resp.status, await resp.text())
        assert (await problem(resp))["code"] == "invalid_request"
    if "\n" in cursor:
        return  # not a header value at all
    headers = {**basic("admin"), "Last-Event-ID": cursor}
    async with http.get(f"{service.url}/v1/revocations/events", headers=headers) as resp:
        assert resp.status == 400, (name, resp.status, await resp.text())
        assert (await problem(resp))["code"] == "invalid_request"


async def test_the_largest_cursor_redis_takes_is_no_error(service: ServiceProcess, http: aiohttp.ClientSession) -> None:
    """The bound is Redis's own: the id before its largest is a cursor from the future, not a 5xx."""
    cursor = f"1.0_{MAX_U64}-{MAX_U64 - 1}_{2**63 - 1}"
    async with http.get(f"{service.url}/v1/revocations", params={"since": cursor}, headers=basic("admin")) as resp:
        assert resp.status < 500, await resp.text()


async def test_an_error_after_the_stream_began_ends_it_cleanly(keyring: KeyRing, http: aiohttp.ClientSession) -> None:
    """Redis goes away under an open SSE stream: the stream ends as a well-formed chunked body
    of SSE frames, with no second response (status line, problem JSON) written into it."""
    redis, service = start_service(keyring)
    try:
        async with http.get(f"{service.url}/v1/revocations/events", headers=basic("admin")) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 10)
            assert b"event: ready" in first
            await asyncio.to_thread(redis.kill)
            # A well-formed end of a chunked body; a response written into it breaks the framing.
            rest = await asyncio.wait_for(resp.content.read(), 20)
        print(f"\nafter Redis died the stream carried {rest!r} and ended")
        assert b"HTTP/1.1" not in rest and b"problem" not in rest and b'"status"' not in rest, rest
        frames = [frame for frame in rest.split(b"\n\n") if frame.strip()]
        assert all(
            line.startswith((b"id:", b"event:", b"data:", b"retry:", b":")) for f in frames for line in f.split(b"\n")
        ), rest
    finally:
        service.stop()
        redis.close()


# Finding 12: two Authorization headers. One rule for every scheme: refused, whichever comes
# first. On e1788cc valid-then-garbage Bearer was a 200 and garbage-then-valid a 401.
def two(first: str, second: str) -> CIMultiDict[str]:
    return CIMultiDict([("Authorization", first), ("Authorization", second)])


async def pairs(http: aiohttp.ClientSession, service: ServiceProcess) -> dict[str, CIMultiDict[str]]:
    valid = bearer(await access_token(http, service))["Authorization"]
    return {
        "valid then garbage": two(valid, "Bearer garbage"),
        "garbage then valid": two("Bearer garbage", valid),
        "valid twice": two(valid, valid),
        "Bearer then Basic": two(valid, basic("admin")["Authorization"]),
    }


async def test_two_authorization_headers_on_a_user_endpoint_are_400(
    service: ServiceProcess, http: aiohttp.ClientSession
) -> None:
    seen = {}
    for name, headers in (await pairs(http, service)).items():
        async with http.get(f"{service.url}/v1/me/sessions", headers=headers) as resp:
            seen[name] = (resp.status, (await problem(resp))["code"] if resp.status != 200 else "")
    print(f"\nGET /v1/me/sessions with two Authorization headers: {seen}")
    assert set(seen.values()) == {(400, "invalid_request")}, seen


async def test_two_authorization_headers_on_forward_auth_are_an_invalid_request_challenge(
    service: ServiceProcess, http: aiohttp.ClientSession
) -> None:
    """Gateways turn anything but 2xx/401/403 into a 500: forward-auth answers 401 with
    RFC 6750's invalid_request, as it does for a token in the query string."""
    seen = {}
    for name, headers in (await pairs(http, service)).items():
        async with http.get(f"{service.url}/v1/authz", headers=headers) as resp:
            seen[name] = (resp.status, resp.headers.get("WWW-Authenticate"), "X-Auth-Request-User" in resp.headers)
    print(f"\nGET /v1/authz with two Authorization headers: {seen}")
    assert set(seen.values()) == {(401, 'Bearer realm="tokenward", error="invalid_request"', False)}, seen
    async with http.get(f"{service.url}/v1/authz", params={"access_token": "x"}) as resp:
        assert (resp.status, resp.headers.get("WWW-Authenticate")) == (
            401,
            'Bearer realm="tokenward", error="invalid_request"',
        )
