"""Bad input gets the right 4xx in the right shape, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import basic
from tests.factories import login

FORM = "application/x-www-form-urlencoded"


async def oauth_error(resp: Any) -> tuple[int, str]:
    body = await resp.json()
    assert set(body) == {"error", "error_description"}, body
    assert resp.headers["Cache-Control"] == "no-store"
    return resp.status, body["error"]


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"", FORM, (400, "invalid_request")),
        (b"grant_type=refresh_token", FORM, (400, "invalid_request")),
        (b"grant_type=refresh_token&refresh_token=", FORM, (400, "invalid_request")),
        (b"grant_type=password&username=a&password=b", FORM, (400, "unsupported_grant_type")),
        (b"grant_type=refresh_token&refresh_token=x&refresh_token=y", FORM, (400, "invalid_request")),
        (b"grant_type=refresh_token&grant_type=refresh_token&refresh_token=x", FORM, (400, "invalid_request")),
        (b"grant_type=refresh_token&refresh_token=garbage", FORM, (400, "invalid_grant")),
        (b"grant_type=refresh_token&refresh_token=%ff%fe", FORM, (400, "invalid_request")),
        (b'{"grant_type":"refresh_token"}', "application/json", (400, "invalid_request")),
        (b"grant_type=refresh_token&refresh_token=twr_x&scope=%00bad", FORM, (400, "invalid_request")),
        (b"grant_type=refresh_token&refresh_token=x&client_secret=s", FORM, (400, "invalid_request")),
        (b"grant_type=refresh_token&refresh_token=" + b"A" * 20_000, FORM, (413, "invalid_request")),
    ],
)
async def test_token_endpoint_errors(
    client: TestClient[Any, Any], body: bytes, content_type: str, expected: tuple[int, str]
) -> None:
    resp = await client.post("/oauth/token", data=body, headers={"Content-Type": content_type})
    assert await oauth_error(resp) == expected


async def test_token_endpoint_wrong_client_credentials(client: TestClient[Any, Any]) -> None:
    """A client that authenticates must do so correctly: 401 invalid_client with a challenge."""
    s = await login(client)
    resp = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": s["refresh_token"]},
        headers=basic("login", "wrong-secret"),
    )
    assert await oauth_error(resp) == (401, "invalid_client")
    assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_refresh_token_bound_to_its_client(client: TestClient[Any, Any]) -> None:
    s = await login(client)
    resp = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": s["refresh_token"]},
        headers=basic("gateway"),
    )
    assert await oauth_error(resp) == (400, "invalid_grant")
    resp = await client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": s["refresh_token"]},
        headers=basic("login"),
    )
    assert resp.status == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic !!!"}, 401),
        ({"Authorization": "Bearer abc"}, 401),
        (basic("login", "wrong"), 401),
        (basic("ghost", "whatever-secret-0123456789"), 401),
        (basic("gateway"), 403),
    ],
)
async def test_session_creation_needs_credentials(
    client: TestClient[Any, Any], headers: dict[str, str], status: int
) -> None:
    resp = await client.post("/v1/sessions", json={"sub": "a"}, headers=headers)
    assert resp.status == status
    body = await resp.json()
    assert body["status"] == status and body["code"] in ("invalid_client", "insufficient_scope")
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{}", "application/json"),
        (b'{"sub": ""}', "application/json"),
        (b'{"sub": 5}', "application/json"),
        (b'{"sub": "a\\u0000b"}', "application/json"),
        (b"[1,2]", "application/json"),
        (b"{not json", "application/json"),
        (b"sub=a", "application/x-www-form-urlencoded"),
        (b'{"sub": "a", "remember_me": "yes"}', "application/json"),
        (b'{"sub": "a", "device": {"ip": "not-an-ip"}}', "application/json"),
        (b'{"sub": "a", "device": "phone"}', "application/json"),
        (b'{"sub": "a", "claims": [1]}', "application/json"),
        (b'{"sub": "a", "scope": "a\\"b"}', "application/json"),
        (b'{"sub": "' + b"x" * 300 + b'"}', "application/json"),
    ],
)
async def test_session_creation_bad_bodies(client: TestClient[Any, Any], body: bytes, content_type: str) -> None:
    resp = await client.post("/v1/sessions", data=body, headers={**basic("login"), "Content-Type": content_type})
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "invalid_request"


async def test_oversized_json_body(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/sessions", json={"sub": "a", "claims": {"x": "y" * 50_000}}, headers=basic("login"))
    assert resp.status == 413


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not.a.jwt", "Basic abc", "Bearer " + "a" * 6000])
async def test_user_endpoints_need_a_valid_access_token(client: TestClient[Any, Any], header: str | None) -> None:
    resp = await client.get("/v1/me/sessions", headers={"Authorization": header} if header else {})
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"] or header is None


async def test_unknown_route_and_method(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/nope")
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"
    resp = await client.get("/oauth/token")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"
    assert resp.headers["Allow"] == "POST"
    resp = await client.put("/v1/me/sessions/00abc")  # a templated path, another method
    assert resp.status == 405 and resp.headers["Allow"] == "DELETE"
    assert (await resp.json())["code"] == "method_not_allowed"
    resp = await client.patch("/v1/users/al/sessions")
    assert resp.status == 405 and set(resp.headers["Allow"].split(",")) == {"DELETE", "GET", "HEAD"}


async def test_revoke_without_token_parameter(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/oauth/revoke", data={"token_type_hint": "refresh_token"})
    assert await oauth_error(resp) == (400, "invalid_request")


async def test_revoke_unknown_token_is_200(client: TestClient[Any, Any]) -> None:
    """RFC 7009 §2.2: invalid tokens do not cause an error."""
    for token in ("garbage", "twr_00AAAAAAAAAAAAAAAAAAAAAA.0." + "B" * 32 + ".0123456789abcdef"):
        resp = await client.post("/oauth/revoke", data={"token": token})
        assert resp.status == 200
