"""Introspection (RFC 7662), forward-auth and revocation (RFC 7009) on real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import time
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization

from service.keys import KeyRing, generate, make_key
from tests.conftest import basic
from tests.factories import b64, bearer, forge, good_claims, login, refresh

pytestmark = pytest.mark.topologies("standalone", "cluster")

INACTIVE = b'{"active":false}'


async def introspect(client: TestClient[Any, Any], token: str, **form: str) -> bytes:
    resp = await client.post("/oauth/introspect", data={"token": token, **form}, headers=basic("gateway"))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    return await resp.read()


async def authz(client: TestClient[Any, Any], token: str | None, path: str = "/v1/authz") -> Any:
    return await client.get(path, headers=bearer(token) if token is not None else {})


def catalogue(ring: KeyRing) -> dict[str, str]:
    """At least 25 ways a token can be wrong."""
    key = ring.signer
    other = make_key(key.kid, generate("RS256"))
    public_pem = key.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_input = (
        f"{b64(orjson.dumps({'alg': 'HS256', 'typ': 'at+jwt', 'kid': key.kid}))}.{b64(orjson.dumps(good_claims()))}"
    )
    hs_sig = b64(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())
    none_input = (
        f"{b64(orjson.dumps({'alg': 'none', 'typ': 'at+jwt', 'kid': key.kid}))}.{b64(orjson.dumps(good_claims()))}"
    )
    good = forge(key)
    head, payload, sig = good.split(".")
    now = int(time.time())
    return {
        "garbage": "abc",
        "two segments": "a.b",
        "four segments": "a.b.c.d",
        "alg none": none_input + ".",
        "HS256 keyed with the public key": f"{hs_input}.{hs_sig}",
        "unknown kid": forge(key, header={"kid": "nope"}),
        "missing kid": forge(key, header={"kid": None}),
        "jku header": forge(key, header={"jku": "https://evil.test/jwks"}),
        "x5u header": forge(key, header={"x5u": "https://evil.test/cert"}),
        "embedded jwk": forge(key, header={"jwk": {"kty": "RSA", "n": "x", "e": "AQAB"}}),
        "crit header": forge(key, header={"crit": ["exp"]}),
        "alg RS512 on an RS256 key": forge(key, header={"alg": "RS512"}),
        "tampered signature": f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}",
        "tampered payload": f"{head}.{b64(orjson.dumps(good_claims(sub='admin')))}.{sig}",
        "signed by another key, same kid": forge(other),
        "typ JWT": forge(key, header={"typ": "JWT"}),
        "typ missing": forge(key, header={"typ": None}),
        "wrong iss": forge(key, claims=good_claims(iss="https://evil.test")),
        "wrong aud": forge(key, claims=good_claims(aud="other-api")),
        "missing sub": forge(key, drop=("sub",)),
        "missing jti": forge(key, drop=("jti",)),
        "missing sid": forge(key, drop=("sid",)),
        "missing exp": forge(key, drop=("exp",)),
        "missing iat": forge(key, drop=("iat",)),
        "exp as string": forge(key, claims=good_claims(exp=str(now + 300))),
        "exp huge": forge(key, claims=good_claims(exp=10**15)),
        "expired": forge(key, claims=good_claims(iat=now - 400, exp=now - 100)),
        "iat in the future": forge(key, claims=good_claims(iat=now + 120, exp=now + 400)),
        "nbf in the future": forge(key, claims=good_claims(nbf=now + 120)),
        "sid not ours": forge(key, claims=good_claims(sid="zz-not-ours")),
        "payload not JSON": f"{head}.{b64(b'not json')}.{sig}",
        "payload not UTF-8": f"{head}.{b64(bytes([0xFF, 0xFE, 0xFD]))}.{sig}",
        "header not JSON": f"{b64(b'{')}.{payload}.{sig}",
        "oversized (5 kB)": f"{head}.{b64(b'x' * 5000)}.{sig}",
    }


@pytest.fixture(name="bad_tokens")
def _bad_tokens(keyring: KeyRing) -> dict[str, str]:
    return catalogue(keyring)


class TestCatalogue:
    async def test_catalogue_is_refused_everywhere(
        self, client: TestClient[Any, Any], bad_tokens: dict[str, str]
    ) -> None:
        """Every bad token: exactly {"active":false} from introspection, 401 invalid_token from forward-auth."""
        assert len(bad_tokens) >= 25
        for name, token in bad_tokens.items():
            assert await introspect(client, token) == INACTIVE, name
            resp = await authz(client, token)
            assert resp.status == 401, name
            assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"], name
            resp = await client.get("/v1/me/sessions", headers=bearer(token))
            assert resp.status == 401, name

    async def test_the_good_token_of_the_catalogue_passes(self, client: TestClient[Any, Any], keyring: KeyRing) -> None:
        """The forger makes valid tokens: the catalogue fails for its flaw, not for the forger."""
        token = forge(keyring.signer)
        assert orjson.loads(await introspect(client, token))["active"] is True
        assert (await authz(client, token)).status == 200

    async def test_megabyte_tokens(self, client: TestClient[Any, Any]) -> None:
        """A 1 MB token is refused quickly with a 4xx, never a 5xx."""
        huge = "a" * (1 << 20)
        body = io.BytesIO(b"token=" + huge.encode())
        headers = {**basic("gateway"), "Content-Type": "application/x-www-form-urlencoded"}
        resp = await client.post("/oauth/introspect", data=body, headers=headers)
        assert resp.status == 413
        resp = await client.get("/v1/authz", headers={"Authorization": "Bearer " + huge})
        assert 400 <= resp.status < 500


class TestIntrospection:
    async def test_active_access_token(self, client: TestClient[Any, Any]) -> None:
        s = await login(client, "pat", scope="read write")
        body = orjson.loads(await introspect(client, s["access_token"]))
        assert body["active"] is True and body["token_type"] == "access_token"
        assert {k: body[k] for k in ("sub", "sid", "scope", "client_id", "aud", "iss")} == {
            "sub": "pat",
            "sid": s["session_id"],
            "scope": "read write",
            "client_id": "login",
            "aud": "api.test",
            "iss": "https://tokenward.test",
        }
        assert body["exp"] > body["iat"] and body["jti"]

    async def test_refresh_tokens_active_while_session_lives(self, client: TestClient[Any, Any]) -> None:
        s = await login(client, "quinn")
        body = orjson.loads(await introspect(client, s["refresh_token"], token_type_hint="refresh_token"))
        assert body["active"] is True and body["token_type"] == "refresh_token" and body["sid"] == s["session_id"]
        _, rotated = await refresh(client, s["refresh_token"])
        assert await introspect(client, s["refresh_token"]) == INACTIVE, "a rotated token is not active"
        assert orjson.loads(await introspect(client, rotated["refresh_token"]))["active"] is True
        await client.post("/oauth/revoke", data={"token": rotated["refresh_token"]})
        assert await introspect(client, rotated["refresh_token"]) == INACTIVE

    async def test_wrong_hint_still_finds_token(self, client: TestClient[Any, Any]) -> None:
        s = await login(client)
        body = orjson.loads(await introspect(client, s["access_token"], token_type_hint="refresh_token"))
        assert body["active"] is True

    @pytest.mark.parametrize(("who", "status"), [(None, 401), ("login", 403), ("nobody", 403)])
    async def test_caller_must_be_authorized(self, client: TestClient[Any, Any], who: str | None, status: int) -> None:
        s = await login(client)
        resp = await client.post(
            "/oauth/introspect", data={"token": s["access_token"]}, headers=basic(who) if who else {}
        )
        assert resp.status == status

    async def test_missing_token_is_invalid_request(self, client: TestClient[Any, Any]) -> None:
        resp = await client.post("/oauth/introspect", data={}, headers=basic("gateway"))
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"


class TestForwardAuth:
    @pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    async def test_allow_is_exactly_200_with_identity(self, client: TestClient[Any, Any], method: str) -> None:
        s = await login(client, "rita", scope="read")
        resp = await client.request(method, "/v1/authz/some/path", headers=bearer(s["access_token"]))
        assert resp.status == 200
        assert resp.headers["X-Auth-Request-User"] == "rita"
        assert resp.headers["X-Auth-Request-Session"] == s["session_id"]
        assert resp.headers["X-Auth-Request-Scope"] == "read"
        assert resp.headers["X-Auth-Request-Jti"]

    async def test_no_token_is_401_with_challenge(self, client: TestClient[Any, Any]) -> None:
        resp = await authz(client, None)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")

    async def test_missing_scope_is_403(self, client: TestClient[Any, Any]) -> None:
        s = await login(client, scope="read")
        resp = await authz(client, s["access_token"], "/v1/authz?scope=write")
        assert resp.status == 403 and 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
        assert (await authz(client, s["access_token"], "/v1/authz?scope=read")).status == 200


class TestRevocation:
    async def test_logout_denies_every_access_token_of_the_session(self, client: TestClient[Any, Any]) -> None:
        s = await login(client, "sam")
        _, r1 = await refresh(client, s["refresh_token"])
        _, r2 = await refresh(client, r1["refresh_token"])
        other = await login(client, "sam")
        await client.post("/oauth/revoke", data={"token": r2["refresh_token"], "token_type_hint": "refresh_token"})
        for t in (s, r1, r2):
            assert await introspect(client, t["access_token"]) == INACTIVE
            assert (await authz(client, t["access_token"])).status == 401
        assert (await authz(client, other["access_token"])).status == 200, "other sessions are untouched"

    async def test_access_token_revoked_by_jti(self, client: TestClient[Any, Any]) -> None:
        s = await login(client, "tom")
        _, r1 = await refresh(client, s["refresh_token"])
        resp = await client.post("/oauth/revoke", data={"token": s["access_token"], "token_type_hint": "refresh_token"})
        assert resp.status == 200
        assert (await authz(client, s["access_token"])).status == 401
        assert (await authz(client, r1["access_token"])).status == 200, "only that token"
        assert (await refresh(client, r1["refresh_token"]))[0] == 200, "the session lives"

    async def test_foreign_token_type_is_unsupported(self, client: TestClient[Any, Any], keyring: KeyRing) -> None:
        id_token = forge(keyring.signer, header={"typ": "JWT"})
        resp = await client.post("/oauth/revoke", data={"token": id_token})
        assert resp.status == 400 and (await resp.json())["error"] == "unsupported_token_type"

    async def test_client_without_revoke_scope_only_revokes_its_own(self, client: TestClient[Any, Any]) -> None:
        s = await login(client)
        resp = await client.post("/oauth/revoke", data={"token": s["refresh_token"]}, headers=basic("gateway"))
        assert resp.status == 400 and (await resp.json())["error"] == "unauthorized_client"
        assert (await authz(client, s["access_token"])).status == 200
        resp = await client.post("/oauth/revoke", data={"token": s["access_token"]}, headers=basic("revoker"))
        assert resp.status == 200
        assert (await authz(client, s["access_token"])).status == 401

    async def test_wrong_client_credentials_on_revoke(self, client: TestClient[Any, Any]) -> None:
        resp = await client.post("/oauth/revoke", data={"token": "x"}, headers=basic("revoker", "wrong"))
        assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"

    async def test_admin_revocations(self, client: TestClient[Any, Any]) -> None:
        a = await login(client, "uma")
        b = await login(client, "uma")
        c = await login(client, "vic")
        import jwt

        jti = jwt.decode(a["access_token"], options={"verify_signature": False})
        resp = await client.post(
            "/v1/revocations", json={"jti": jti["jti"], "exp": jti["exp"], "reason": "leak"}, headers=basic("admin")
        )
        assert resp.status == 200
        assert (await authz(client, a["access_token"])).status == 401
        assert (await authz(client, b["access_token"])).status == 200
        resp = await client.post("/v1/revocations", json={"sid": b["session_id"]}, headers=basic("admin"))
        assert resp.status == 200
        assert (await authz(client, b["access_token"])).status == 401
        assert (await refresh(client, b["refresh_token"]))[0] == 400
        resp = await client.post(
            "/v1/revocations", json={"sub": "vic", "reason": "password change"}, headers=basic("admin")
        )
        assert resp.status == 200
        assert (await authz(client, c["access_token"])).status == 401
        assert (await refresh(client, c["refresh_token"]))[0] == 400
        for bad in ({}, {"jti": "00abc"}, {"sid": "x", "sub": "y"}, {"sub": ""}):
            resp = await client.post("/v1/revocations", json=bad, headers=basic("admin"))
            assert resp.status == 400, bad
        resp = await client.post("/v1/revocations", json={"sub": "x"}, headers=basic("revoker"))
        assert resp.status == 403

    async def test_login_after_user_cutoff_is_alive(self, client: TestClient[Any, Any]) -> None:
        """The equal-second rule never kills a session created right after a cut-off."""
        await login(client, "wes")
        await client.delete("/v1/users/wes/sessions", headers=basic("admin"))
        fresh = await login(client, "wes")
        assert (await authz(client, fresh["access_token"])).status == 200

    async def test_requests_in_flight_while_logout(self, client: TestClient[Any, Any]) -> None:
        """The seeds' race: after logout returns, every token of the session is denied,
        including ones minted by a refresh that raced the logout."""
        for round_ in range(10):
            s = await login(client, f"xena{round_}")
            minted = [s["access_token"]]

            async def use(token: str = s["refresh_token"], minted: list[str] = minted) -> None:
                status, body = await refresh(client, token)
                if status == 200:
                    minted.append(body["access_token"])

            racers = [asyncio.create_task(use()) for _ in range(20)]
            checks = [asyncio.create_task(authz(client, s["access_token"])) for _ in range(20)]
            await asyncio.sleep(0.001 * round_)
            await client.post("/oauth/revoke", data={"token": s["refresh_token"]})
            await asyncio.gather(*racers, *checks)
            for token in minted:
                assert await introspect(client, token) == INACTIVE
                assert (await authz(client, token)).status == 401
