"""Edges between checks, against a real service process on a real Redis (issue 15).

The failed-client-authentication budget on every endpoint that takes client credentials;
every sub that login accepts is addressable by the admin endpoints that take a sub.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.keys import KeyRing
from service.sdk.identity import MAX_SUB_BYTES, is_safe_sub
from tests.conftest import CLIENT_SECRETS, basic
from tests.support.processes import ServiceProcess, service_on_own_redis


@pytest.fixture(name="service", scope="module")
def _service(tmp_path_factory: pytest.TempPathFactory, keyring: KeyRing) -> Iterator[ServiceProcess]:
    # Rate limits on, as deployed: the default failed-authentication budget (burst 10).
    directory = Path(tmp_path_factory.mktemp("edges"))
    with service_on_own_redis(directory, keyring, CLIENT_SECRETS, {"TOKENWARD_RATELIMIT": "on"}) as service:
        yield service


async def session_from(address: str) -> aiohttp.ClientSession:
    """An HTTP client whose connections leave from ``address`` (any of 127/8 is loopback): its own budget."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


# Every endpoint that takes client credentials, except /oauth/token and /oauth/revoke (which
# charge failures with their other limits: tests/http/test_hostile.py).
CREDENTIALED = [
    ("GET", "/metrics"),
    ("GET", "/v1/users/x/sessions"),
    ("DELETE", "/v1/users/x/sessions"),
    ("DELETE", "/v1/sessions/00abc"),
    ("POST", "/v1/sessions"),
    ("POST", "/v1/revocations"),
    ("GET", "/v1/revocations"),
    ("GET", "/v1/revocations/events"),
    ("POST", "/oauth/introspect"),
]


@pytest.mark.parametrize(("index", "method", "path"), [(i, *e) for i, e in enumerate(CREDENTIALED)])
async def test_failed_client_authentication_is_limited_everywhere(
    service: ServiceProcess, index: int, method: str, path: str
) -> None:
    """30 wrong secrets from one address: 429 after the burst, then even the right secret is 429
    (the address learns nothing about its guesses), while another address is not affected."""
    address = f"127.0.15.{index + 1}"
    async with await session_from(address) as http:
        statuses = []
        for i in range(30):
            async with http.request(method, service.url + path, headers=basic("admin", f"guess-{i}")) as resp:
                statuses.append(resp.status)
        assert set(statuses) <= {401, 429} and 429 in statuses, statuses
        assert statuses.index(429) <= 11, statuses
        async with http.request(method, service.url + path, headers=basic("admin")) as resp:
            assert resp.status == 429
    async with (
        await session_from(f"127.0.16.{index + 1}") as other,
        other.get(service.url + "/metrics", headers=basic("admin")) as resp,
    ):
        assert resp.status == 200


def call(service: ServiceProcess, method: str, path: str, client: str, body: Any = None) -> tuple[int, Any]:
    """One request as ``client`` (blocking: hypothesis drives it); the status and JSON body."""
    data = None if body is None else json.dumps(body).encode()
    headers = {**basic(client), "Content-Type": "application/json"}
    request = urllib.request.Request(service.url + path, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


# Every character class login may meet: path syntax, braces, percent, spaces, non-ASCII, and the
# characters the sub rule refuses (control, format, separators), which the filter then drops.
SUBS = st.text(
    st.one_of(
        st.sampled_from("/%{}?#;+&= .~-_:@!$'()*,[]\\\"<>|^`"),
        st.characters(codec="utf-8"),
    ),
    min_size=1,
    max_size=40,
).filter(is_safe_sub)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sub=SUBS)
@example(sub="{admin}")
@example(sub="a/b")
@example(sub="50%")
@example(sub="%2F")
@example(sub="a b")
@example(sub="...")
@example(sub="ü" * (MAX_SUB_BYTES // 2))
def test_every_sub_login_accepts_is_addressable(service: ServiceProcess, sub: str) -> None:
    """Login, then find and end the user's sessions by the sub, percent-encoded in the path."""
    status, _ = call(service, "POST", "/v1/sessions", "login", {"sub": sub})
    assert status == 201
    path = f"/v1/users/{quote(sub, safe='')}/sessions"
    status, listed = call(service, "GET", path, "admin")
    assert status == 200 and len(listed["sessions"]) >= 1, (status, listed)
    status, ended = call(service, "DELETE", path, "admin")
    assert status == 200 and ended["ended"] >= 1, (status, ended)
    status, listed = call(service, "GET", path, "admin")
    assert (status, listed["sessions"]) == (200, [])


@pytest.mark.parametrize(
    "sub",
    [" admin", "admin ", "\tadmin", "ad\u0085min", "ad\u202emin", "ad\u200bmin", "\ufeffadmin", "e\u0301", ".", "..",
     "a\u2028b", "ü" * (MAX_SUB_BYTES // 2 + 1)],
)  # fmt: skip
def test_login_refuses_a_sub_that_is_not_a_safe_identifier(service: ServiceProcess, sub: str) -> None:
    status, body = call(service, "POST", "/v1/sessions", "login", {"sub": sub})
    assert (status, body["code"]) == (400, "invalid_request")
