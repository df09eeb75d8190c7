"""Regressions for what the contract work (schemathesis, and reading the handlers for the
OpenAPI document) found: each was a 500, a silently ignored bad parameter, or an answer
that broke the documented promise."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.clients import ClientRegistry
from service.errors import ClientAuthError
from tests.conftest import basic
from tests.factories import bearer, login

CURSOR_ONE_PARTITION = "1.0_0-0_0"


@pytest.mark.parametrize("limit", ["²", "\u0661\u0660", "0", "10001", "-1", "1e3"])
async def test_a_bad_limit_is_400_with_or_without_since(client: TestClient[Any, Any], limit: str) -> None:
    """service/http/events.py: "²" passed str.isdigit and made int() raise (a 500); without
    ``since`` any limit was ignored."""
    for query in ({"limit": limit}, {"limit": limit, "since": CURSOR_ONE_PARTITION}):
        resp = await client.get("/v1/revocations", params=query, headers=basic("admin"))
        assert resp.status == 400, (query, await resp.text())
        assert (await resp.json())["code"] == "invalid_request"


async def test_a_good_limit_still_works(client: TestClient[Any, Any]) -> None:
    for query in ({"limit": "5"}, {"limit": "0010", "since": CURSOR_ONE_PARTITION}):
        resp = await client.get("/v1/revocations", params=query, headers=basic("admin"))
        assert resp.status == 200, (query, await resp.text())


@pytest.mark.parametrize("device", [False, 0, [], "", "laptop"])
async def test_a_device_that_is_not_an_object_is_400(client: TestClient[Any, Any], device: Any) -> None:
    """service/http/sessions.py: ``device or {}`` took false, 0, [] and "" for "no device"."""
    resp = await client.post("/v1/sessions", json={"sub": "alice", "device": device}, headers=basic("login"))
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["detail"] == "device must be a JSON object"


async def test_a_null_device_is_no_device(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/sessions", json={"sub": "alice", "device": None}, headers=basic("login"))
    assert resp.status == 201, await resp.text()


async def test_exp_written_as_an_integral_float_is_the_same_expiry(client: TestClient[Any, Any]) -> None:
    """service/http/sessions.py: JSON has one number type; 1795418393.0 is 1795418393 (schemathesis
    sent it as a valid integer per JSON Schema and got 400)."""
    s = await login(client, "erin")
    claims = await (
        await client.post("/oauth/introspect", data={"token": s["access_token"]}, headers=basic("gateway"))
    ).json()
    body = {"jti": claims["jti"], "exp": float(claims["exp"]), "reason": "test"}
    resp = await client.post("/v1/revocations", json=body, headers=basic("admin"))
    assert resp.status == 200, await resp.text()
    resp = await client.get("/v1/me/sessions", headers=bearer(s["access_token"]))
    assert resp.status == 401  # the jti is denied: the float was taken as the token's expiry
    for bad in (float(claims["exp"]) + 0.5, 1e300):
        resp = await client.post("/v1/revocations", json={**body, "exp": bad}, headers=basic("admin"))
        assert resp.status == 400, bad


@pytest.mark.parametrize("tail", ["a%0Ab", "%0A", "x/%0D%0A/y"])
async def test_forward_auth_serves_any_path_below_it(client: TestClient[Any, Any], tail: str) -> None:
    """service/http/routes.py: the tail pattern ``.*`` stopped at an encoded newline (404)."""
    s = await login(client)
    resp = await client.get(f"/v1/authz/{tail}", headers=bearer(s["access_token"]))
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Auth-Request-User"] == "alice"


@pytest.mark.parametrize("credentials", ["é", "Zm9v\u00e9", "\u2603\u2603\u2603\u2603"])
def test_non_ascii_basic_credentials_are_invalid_client(clients: ClientRegistry, credentials: str) -> None:
    """service/clients.py: b64decode raises a plain ValueError for a non-ASCII str (a 500)."""
    with pytest.raises(ClientAuthError):
        clients.authenticate(f"Basic {credentials}")


async def test_non_ascii_basic_credentials_over_http_are_401(client: TestClient[Any, Any]) -> None:
    for path, method in (("/metrics", "GET"), ("/oauth/introspect", "POST"), ("/v1/sessions", "POST")):
        # aiohttp sends header values as UTF-8; a server reads them back as the same str.
        resp = await client.request(method, path, headers={"Authorization": "Basic \u00e9t\u00e9"})
        assert resp.status == 401, (path, await resp.text())
        assert resp.headers["WWW-Authenticate"].startswith("Basic")
