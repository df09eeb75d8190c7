"""Factories for the HTTP tests: log in, refresh, and read answers."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import basic


async def login(client: TestClient[Any, Any], sub: str = "alice", **body: Any) -> dict[str, Any]:
    """Create a session through the API; returns the 201 body."""
    resp = await client.post("/v1/sessions", json={"sub": sub, **body}, headers=basic("login"))
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def refresh(client: TestClient[Any, Any], token: str, **form: str) -> tuple[int, dict[str, Any]]:
    """POST /oauth/token with the refresh grant; returns (status, body)."""
    resp = await client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token, **form})
    body: dict[str, Any] = await resp.json()
    return resp.status, body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
