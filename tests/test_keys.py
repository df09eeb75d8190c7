"""Signing keys: every algorithm works end to end; rotation keeps old tokens verifying."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jwt
import pytest

from service.app import create_app
from service.clients import ClientRegistry
from service.config import Settings
from service.errors import ConfigError
from service.keys import KeyRing, generate, make_key, to_pem
from tests.factories import bearer, login


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_each_algorithm_end_to_end(
    aiohttp_client: Any, settings: Settings, clients: ClientRegistry, redis_client: Any, alg: str
) -> None:
    key = make_key(f"k-{alg}", generate(alg))
    client = await aiohttp_client(create_app(settings, keyring=KeyRing({key.kid: key}, key.kid), clients=clients))
    s = await login(client, "kai")
    assert jwt.get_unverified_header(s["access_token"])["alg"] == alg
    assert (await client.get("/v1/authz", headers=bearer(s["access_token"]))).status == 200
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    assert [k["alg"] for k in jwks["keys"]] == [alg]


async def test_rotation_keeps_old_tokens_valid(
    aiohttp_client: Any, settings: Settings, clients: ClientRegistry, redis_client: Any
) -> None:
    old = make_key("2026-11-01", generate("RS256"))
    new = make_key("2026-12-01", generate("ES256"))
    before = await aiohttp_client(create_app(settings, keyring=KeyRing({old.kid: old}, old.kid), clients=clients))
    token = (await login(before, "lou"))["access_token"]
    after = await aiohttp_client(
        create_app(
            dataclasses.replace(settings), keyring=KeyRing({old.kid: old, new.kid: new}, new.kid), clients=clients
        )
    )
    assert (await after.get("/v1/authz", headers=bearer(token))).status == 200, "old key still verifies"
    fresh = (await login(after, "lou"))["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] == new.kid
    retired = await aiohttp_client(create_app(settings, keyring=KeyRing({new.kid: new}, new.kid), clients=clients))
    assert (await retired.get("/v1/authz", headers=bearer(token))).status == 401, "a retired key stops verifying"


def test_keys_dir_loading(tmp_path: Path) -> None:
    for kid, alg in (("a", "RS256"), ("b", "ES256")):
        (tmp_path / f"{kid}.pem").write_bytes(to_pem(generate(alg)))
    ring = KeyRing.from_dir(tmp_path)
    assert ring.signer.kid == "b" and ring.get("a") is not None
    assert KeyRing.from_dir(tmp_path, "a").signer.kid == "a"
    with pytest.raises(ConfigError, match="TOKENWARD_SIGNING_KID"):
        KeyRing.from_dir(tmp_path, "zzz")
    (tmp_path / "c.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"TOKENWARD_KEYS_DIR: c\.pem"):
        KeyRing.from_dir(tmp_path)
    with pytest.raises(ConfigError, match="TOKENWARD_KEYS_DIR"):
        KeyRing.from_dir(tmp_path / "missing")
