"""Factories for the HTTP tests: log in, refresh, and read answers."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from service.keys import SigningKey
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


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def good_claims(**overrides: Any) -> dict[str, Any]:
    """Claims the test app accepts (issuer/audience from tests.conftest.settings)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "https://tokenward.test",
        "aud": "api.test",
        "sub": "zoe",
        "iat": now,
        "exp": now + 300,
        "jti": "00" + secrets.token_urlsafe(16),
        "sid": "00" + secrets.token_urlsafe(16),
        "client_id": "login",
        "scope": "read",
    }
    claims.update(overrides)
    return claims


def forge(
    key: SigningKey,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    """Sign arbitrary claims and headers with a test key (for the bad-token catalogue)."""
    h = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid, **(header or {})}
    body = {k: v for k, v in (claims or good_claims()).items() if k not in drop}
    h = {k: v for k, v in h.items() if v is not None}
    signing_input = f"{b64(orjson.dumps(h))}.{b64(orjson.dumps(body))}".encode()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    assert isinstance(key.private, rsa.RSAPrivateKey)
    sig = key.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{b64(sig)}"
