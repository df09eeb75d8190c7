"""Cookie mode on real Redis: the refresh token in an HttpOnly cookie, CSRF checks and CORS.

The test client keeps no cookie jar: every test sends the ``Cookie`` header itself and reads
``Set-Cookie`` itself, so what travels is exactly what the test says.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession, DummyCookieJar, web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from service.app import create_app
from service.clients import ClientRegistry
from service.config import Settings
from service.keys import KeyRing
from service.store import Keyspace
from tests.conftest import CLIENT_SECRETS, basic
from tests.factories import bearer, refresh
from tests.support.processes import ROOT, Nginx, ServiceProcess, write_config
from tests.support.redis_servers import free_port

APP = "https://app.test"
OTHER = "https://evil.test"
NAME = "__Secure-tokenward-refresh"
CSRF = {"X-Tokenward-CSRF": "1", "Origin": APP}
INVALID_GRANT = {"error": "invalid_grant", "error_description": "the refresh token is invalid, expired or revoked"}

Client = TestClient[Any, Any]
CookieFactory = Callable[..., Awaitable[Client]]


@pytest.fixture(name="make_cookie_client")
def _make_cookie_client(
    aiohttp_client: Any, redis_client: aioredis.Redis, settings: Settings, keyring: KeyRing, clients: ClientRegistry
) -> CookieFactory:
    """The real app with cookie mode on for ``APP`` (unless overridden), and a client without a cookie jar."""

    async def factory(**overrides: Any) -> Client:
        changed = dataclasses.replace(settings, **{"cookie_origins": (APP,), **overrides})
        app: web.Application = create_app(changed, keyring=keyring, clients=clients)
        client: Client = await aiohttp_client(app, cookie_jar=DummyCookieJar())
        return client

    return factory


@pytest.fixture(name="cc")
async def _cc(make_cookie_client: CookieFactory) -> Client:
    return await make_cookie_client()


def set_cookie(resp: Any) -> str:
    """The one Set-Cookie header of an answer."""
    values = resp.headers.getall("Set-Cookie", [])
    assert len(values) == 1, values
    value: str = values[0]
    return value


def cookie_value(resp: Any) -> str:
    """The refresh token an answer's Set-Cookie carries."""
    jar: SimpleCookie = SimpleCookie()
    jar.load(set_cookie(resp))
    return jar[NAME].value


def max_age(resp: Any) -> int:
    return int(set_cookie(resp).split("Max-Age=")[1].split(";")[0])


async def cookie_login(client: Client, sub: str = "alice", **body: Any) -> tuple[dict[str, Any], str, Any]:
    """Log in with cookie delivery: (body, refresh token from the cookie, response)."""
    resp = await client.post("/v1/sessions", json={"sub": sub, "delivery": "cookie", **body}, headers=basic("login"))
    assert resp.status == 201, await resp.text()
    return await resp.json(), cookie_value(resp), resp


async def cookie_refresh(client: Client, token: str, headers: dict[str, str] | None = None, **form: str) -> Any:
    """POST /oauth/token the way the browser client does, with ``token`` as the cookie."""
    h = {**CSRF, "Cookie": f"{NAME}={token}"} if headers is None else headers
    resp = await client.post("/oauth/token", data={"grant_type": "refresh_token", **form}, headers=h)
    await resp.read()
    return resp


async def snapshot(redis: aioredis.Redis, keys: Keyspace, sid: str) -> tuple[dict[Any, Any], int]:
    """A session's whole Redis state: its hash and its expiry."""
    key = keys.session(keys.partition_of_id(sid), sid)
    return await redis.hgetall(key), await redis.pexpiretime(key)


class TestDelivery:
    async def test_login_sets_the_cookie_exactly(self, cc: Client, settings: Settings) -> None:
        """Prefix, Path=/oauth, Max-Age = remaining lifetime, HttpOnly, Secure, SameSite, no Domain."""
        body, token, resp = await cookie_login(cc)
        assert "refresh_token" not in body
        assert set(body) == {"access_token", "token_type", "expires_in", "refresh_expires_in", "session_id", "scope"}
        assert token.startswith("twr_" + body["session_id"] + ".0.")
        expected_age = body["refresh_expires_in"]
        assert settings.refresh_idle_ttl - 2 <= expected_age <= settings.refresh_idle_ttl
        assert set_cookie(resp) == (
            f"{NAME}={token}; Path=/oauth; Max-Age={expected_age}; HttpOnly; Secure; SameSite=Strict"
        )
        assert "domain" not in set_cookie(resp).lower()
        assert resp.headers["Cache-Control"] == "no-store"

    async def test_remember_me_cookie_lives_as_long_as_the_session(self, cc: Client, settings: Settings) -> None:
        body, _, resp = await cookie_login(cc, remember_me=True)
        assert settings.remember_idle_ttl - 2 <= max_age(resp) == body["refresh_expires_in"]
        assert max_age(resp) <= settings.remember_idle_ttl

    async def test_max_age_follows_the_absolute_expiry(self, make_cookie_client: CookieFactory) -> None:
        """Near the absolute end, the successor cookie lives only as long as the session still may."""
        cc = await make_cookie_client(refresh_idle_ttl=100, refresh_max_ttl=100)
        _, token, login_resp = await cookie_login(cc)
        assert 98 <= max_age(login_resp) <= 100
        await asyncio.sleep(2.1)
        resp = await cookie_refresh(cc, token)
        assert resp.status == 200
        # idle would allow 100 s again; the absolute expiry, fixed at login, allows at most 98.
        assert 90 <= max_age(resp) <= 98

    async def test_samesite_lax_when_configured(self, make_cookie_client: CookieFactory) -> None:
        cc = await make_cookie_client(cookie_samesite="Lax")
        _, token, resp = await cookie_login(cc)
        assert set_cookie(resp).endswith("; HttpOnly; Secure; SameSite=Lax")
        assert (await cookie_refresh(cc, token)).headers["Set-Cookie"].endswith("SameSite=Lax")

    async def test_body_delivery_is_unchanged(self, cc: Client) -> None:
        resp = await cc.post("/v1/sessions", json={"sub": "alice"}, headers=basic("login"))
        assert resp.status == 201 and "Set-Cookie" not in resp.headers
        assert (await resp.json())["refresh_token"].startswith("twr_")

    async def test_unknown_delivery_is_refused(self, cc: Client) -> None:
        resp = await cc.post("/v1/sessions", json={"sub": "alice", "delivery": "pigeon"}, headers=basic("login"))
        assert resp.status == 400 and (await resp.json())["code"] == "invalid_request"


class TestRefreshByCookie:
    async def test_rotates_and_sets_the_successor(self, cc: Client) -> None:
        body, token, _ = await cookie_login(cc, scope="read")
        resp = await cookie_refresh(cc, token)
        assert resp.status == 200
        answer = await resp.json()
        assert set(answer) == {"access_token", "token_type", "expires_in", "scope"}
        assert answer["token_type"] == "Bearer" and answer["scope"] == "read" and answer["expires_in"] == 300
        successor = cookie_value(resp)
        assert successor != token and successor.startswith("twr_" + body["session_id"] + ".1.")
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["Pragma"] == "no-cache"
        me = await cc.get("/v1/me/sessions", headers=bearer(answer["access_token"]))
        assert me.status == 200
        # The successor works in turn.
        third = await cookie_refresh(cc, successor)
        assert third.status == 200 and cookie_value(third).startswith("twr_" + body["session_id"] + ".2.")

    async def test_grace_retry_with_the_old_cookie_gets_the_same_successor(self, cc: Client) -> None:
        """A refresh whose answer was lost is retried with the old cookie: same successor, no theft alarm."""
        _, token, _ = await cookie_login(cc)
        first = await cookie_refresh(cc, token)
        retry = await cookie_refresh(cc, token)
        assert first.status == retry.status == 200
        assert cookie_value(retry) == cookie_value(first)
        assert (await cookie_refresh(cc, cookie_value(retry))).status == 200

    async def test_reuse_after_the_window_ends_the_session(self, make_cookie_client: CookieFactory) -> None:
        cc = await make_cookie_client(refresh_grace=1)
        _, token, _ = await cookie_login(cc)
        first = await cookie_refresh(cc, token)
        successor, access = cookie_value(first), (await first.json())["access_token"]
        await asyncio.sleep(1.2)
        stolen = await cookie_refresh(cc, token)
        assert stolen.status == 400 and await stolen.json() == INVALID_GRANT
        assert "Set-Cookie" not in stolen.headers
        late = await cookie_refresh(cc, successor)
        assert late.status == 400 and await late.json() == INVALID_GRANT
        assert (await cc.get("/v1/me/sessions", headers=bearer(access))).status == 401

    async def test_a_refused_refresh_keeps_the_cookie(self, cc: Client) -> None:
        """invalid_grant never deletes the cookie: a stale tab's refusal must not undo a fresher Set-Cookie."""
        resp = await cookie_refresh(cc, "twr_garbage")
        assert resp.status == 400 and await resp.json() == INVALID_GRANT
        assert "Set-Cookie" not in resp.headers

    @pytest.mark.parametrize(
        "value",
        ["twr_", "twr_x.y.z.w", "a" * 4000, "twr_" + "A" * 22 + ".9999999999999999999999.x.y", '"twr_quoted"', "%00"],
    )
    async def test_hostile_cookie_values_are_invalid_grant(self, cc: Client, value: str) -> None:
        resp = await cookie_refresh(cc, value)
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
        revoke = await cc.post("/oauth/revoke", data={}, headers={**CSRF, "Cookie": f"{NAME}={value}"})
        assert revoke.status == 200

    async def test_no_cookie_means_signed_out(self, cc: Client) -> None:
        """The browser client's call without a cookie (expired, cleared) is invalid_grant: sign in again."""
        resp = await cc.post("/oauth/token", data={"grant_type": "refresh_token"}, headers=CSRF)
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"

    async def test_form_refresh_keeps_working_in_cookie_mode(self, cc: Client) -> None:
        """Apps that keep the refresh token themselves are unaffected by cookie mode."""
        pair = await (await cc.post("/v1/sessions", json={"sub": "alice"}, headers=basic("login"))).json()
        status, body = await refresh(cc, pair["refresh_token"])
        assert status == 200 and body["refresh_token"]


class TestRevokeByCookie:
    async def test_ends_the_session_and_clears_the_cookie(self, cc: Client) -> None:
        body, token, _ = await cookie_login(cc)
        resp = await cc.post(
            "/oauth/revoke", data={"token_type_hint": "refresh_token"}, headers={**CSRF, "Cookie": f"{NAME}={token}"}
        )
        assert resp.status == 200
        assert set_cookie(resp) == f"{NAME}=; Path=/oauth; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
        assert (await cookie_refresh(cc, token)).status == 400
        assert (await cc.get("/v1/me/sessions", headers=bearer(body["access_token"]))).status == 401

    async def test_without_a_cookie_still_clears(self, cc: Client) -> None:
        """Logging out twice is fine (RFC 7009 §2.2), and the answer still deletes the cookie."""
        resp = await cc.post("/oauth/revoke", data={"token_type_hint": "refresh_token"}, headers=CSRF)
        assert resp.status == 200 and "Max-Age=0" in set_cookie(resp)

    async def test_form_revoke_is_unchanged(self, cc: Client) -> None:
        pair = await (await cc.post("/v1/sessions", json={"sub": "alice"}, headers=basic("login"))).json()
        resp = await cc.post("/oauth/revoke", data={"token": pair["refresh_token"]})
        assert resp.status == 200 and "Set-Cookie" not in resp.headers
        assert (await refresh(cc, pair["refresh_token"]))[0] == 400


REFUSALS = {
    "no header": {"Origin": APP},
    "header not 1": {"X-Tokenward-CSRF": "true", "Origin": APP},
    "wrong origin": {"X-Tokenward-CSRF": "1", "Origin": OTHER},
    "no origin": {"X-Tokenward-CSRF": "1"},
    "null origin": {"X-Tokenward-CSRF": "1", "Origin": "null"},
    "same host, other scheme": {"X-Tokenward-CSRF": "1", "Origin": "http://app.test"},
    "same host, other port": {"X-Tokenward-CSRF": "1", "Origin": APP + ":8443"},
}


class TestCsrf:
    @pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke"])
    @pytest.mark.parametrize("case", REFUSALS)
    async def test_refused_without_touching_the_session(
        self, cc: Client, redis_client: aioredis.Redis, keys: Keyspace, case: str, path: str
    ) -> None:
        body, token, _ = await cookie_login(cc)
        before = await snapshot(redis_client, keys, body["session_id"])
        form = {"grant_type": "refresh_token"} if path == "/oauth/token" else {"token_type_hint": "refresh_token"}
        resp = await cc.post(path, data=form, headers={**REFUSALS[case], "Cookie": f"{NAME}={token}"})
        assert resp.status == 403
        answer = await resp.json()
        assert answer["error"] == "access_denied" and set(answer) == {"error", "error_description"}
        assert "Set-Cookie" not in resp.headers
        assert await snapshot(redis_client, keys, body["session_id"]) == before
        # The proof that nothing was spent or ended: the same cookie still refreshes.
        assert (await cookie_refresh(cc, token)).status == 200

    async def test_cookie_and_form_token_together_are_refused(
        self, cc: Client, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        """Which token the caller meant is a guess: refuse, and spend neither."""
        body, token, _ = await cookie_login(cc)
        other = await (await cc.post("/v1/sessions", json={"sub": "bob"}, headers=basic("login"))).json()
        before = await snapshot(redis_client, keys, body["session_id"])
        resp = await cookie_refresh(cc, token, refresh_token=other["refresh_token"])
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
        revoke = await cc.post(
            "/oauth/revoke", data={"token": other["refresh_token"]}, headers={**CSRF, "Cookie": f"{NAME}={token}"}
        )
        assert revoke.status == 400 and (await revoke.json())["error"] == "invalid_request"
        assert await snapshot(redis_client, keys, body["session_id"]) == before
        assert (await cookie_refresh(cc, token)).status == 200
        assert (await refresh(cc, other["refresh_token"]))[0] == 200

    async def test_a_planted_twin_cookie_is_refused(
        self, cc: Client, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        """Cookie tossing: another host of the site plants a second cookie of the name (sent first,
        thanks to a longer Path) to sign the victim into the attacker's session. Refused, nothing spent."""
        victim, token, _ = await cookie_login(cc, "victim")
        attacker, planted, _ = await cookie_login(cc, "attacker")
        before = [await snapshot(redis_client, keys, s["session_id"]) for s in (victim, attacker)]
        resp = await cookie_refresh(cc, token, headers={**CSRF, "Cookie": f"{NAME}={planted}; {NAME}={token}"})
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
        assert "Set-Cookie" not in resp.headers
        assert [await snapshot(redis_client, keys, s["session_id"]) for s in (victim, attacker)] == before
        # The same value twice is one cookie, not a twin.
        same = await cookie_refresh(cc, token, headers={**CSRF, "Cookie": f"{NAME}={token}; {NAME}={token}"})
        assert same.status == 200

    async def test_logout_with_a_planted_twin_ends_both(self, cc: Client) -> None:
        """The user asked to be signed out: every session a cookie names ends."""
        victim, token, _ = await cookie_login(cc, "victim")
        attacker, planted, _ = await cookie_login(cc, "attacker")
        resp = await cc.post(
            "/oauth/revoke",
            data={"token_type_hint": "refresh_token"},
            headers={**CSRF, "Cookie": f"{NAME}={planted}; {NAME}={token}"},
        )
        assert resp.status == 200 and "Max-Age=0" in set_cookie(resp)
        for body in (victim, attacker):
            assert (await cc.get("/v1/me/sessions", headers=bearer(body["access_token"]))).status == 401


class TestCors:
    @pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/v1/me/sessions", "/v1/me/sessions/x"])
    async def test_preflight_for_an_allowed_origin(self, cc: Client, path: str) -> None:
        resp = await cc.options(
            path,
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "DELETE" if path.startswith("/v1") else "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-tokenward-csrf",
            },
        )
        assert resp.status == 204
        h = resp.headers
        assert h["Access-Control-Allow-Origin"] == APP and h["Access-Control-Allow-Credentials"] == "true"
        assert {m.strip() for m in h["Access-Control-Allow-Methods"].split(",")} >= {"GET", "POST", "DELETE"}
        allowed = {x.strip().lower() for x in h["Access-Control-Allow-Headers"].split(",")}
        assert allowed == {"authorization", "content-type", "x-tokenward-csrf"}
        assert "Origin" in h["Vary"]

    @pytest.mark.parametrize("origin", [OTHER, "null", "http://app.test"])
    async def test_preflight_for_another_origin_is_refused(self, cc: Client, origin: str) -> None:
        resp = await cc.options("/oauth/token", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert "Access-Control-Allow-Credentials" not in resp.headers
        assert "Origin" in resp.headers["Vary"]

    async def test_answers_carry_cors_headers_for_allowed_origins_only(self, cc: Client) -> None:
        body, token, _ = await cookie_login(cc)
        ok = await cookie_refresh(cc, token)
        assert ok.headers["Access-Control-Allow-Origin"] == APP
        assert ok.headers["Access-Control-Allow-Credentials"] == "true" and "Origin" in ok.headers["Vary"]
        # Errors too, so the browser client can read why (invalid_grant, Retry-After on 503).
        bad = await cookie_refresh(cc, "twr_garbage")
        assert bad.status == 400 and bad.headers["Access-Control-Allow-Origin"] == APP
        assert "Retry-After" in bad.headers["Access-Control-Expose-Headers"]
        me = await cc.get("/v1/me/sessions", headers={**bearer(body["access_token"]), "Origin": APP})
        assert me.status == 200 and me.headers["Access-Control-Allow-Origin"] == APP
        other = await cc.get("/v1/me/sessions", headers={**bearer(body["access_token"]), "Origin": OTHER})
        assert "Access-Control-Allow-Origin" not in other.headers and "Origin" in other.headers["Vary"]

    async def test_two_origin_headers_get_no_cors(self, cc: Client) -> None:
        """Two Origin headers, the allowed one first, are no origin: a refused preflight and
        answers without CORS headers (the 403 carried the first one's Allow-Origin)."""
        pre = await cc.options(
            "/oauth/token",
            headers=CIMultiDict([("Origin", APP), ("Origin", OTHER), ("Access-Control-Request-Method", "POST")]),
        )
        assert pre.status == 403 and "Access-Control-Allow-Origin" not in pre.headers
        refresh = await cc.post("/oauth/token", data={}, headers=CIMultiDict([("Origin", APP), ("Origin", APP)]))
        assert refresh.status == 400 and not [h for h in refresh.headers if h.lower().startswith("access-control-")]

    async def test_server_to_server_endpoints_get_no_cors(self, cc: Client) -> None:
        resp = await cc.post("/v1/sessions", json={"sub": "alice"}, headers={**basic("login"), "Origin": APP})
        assert resp.status == 201 and "Access-Control-Allow-Origin" not in resp.headers
        pre = await cc.options("/v1/sessions", headers={"Origin": APP, "Access-Control-Request-Method": "POST"})
        assert pre.status == 405 and "Access-Control-Allow-Origin" not in pre.headers
        # The public client script answers CORS by itself ("*", no credentials); the middleware stays out.
        script = await cc.get("/client/tokenward.js", headers={"Origin": APP})
        assert "Access-Control-Allow-Credentials" not in script.headers
        assert script.headers.get("Access-Control-Allow-Origin", "*") == "*"


class TestCookieModeOff:
    async def test_the_cookie_is_ignored(self, make_cookie_client: CookieFactory) -> None:
        """Without TOKENWARD_COOKIE_ORIGINS nothing reads the cookie and nothing answers CORS."""
        on = await make_cookie_client()
        _, token, _ = await cookie_login(on)
        off = await make_cookie_client(cookie_origins=())
        resp = await cookie_refresh(off, token)
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
        assert "Set-Cookie" not in resp.headers and "Access-Control-Allow-Origin" not in resp.headers
        revoke = await off.post("/oauth/revoke", data={}, headers={**CSRF, "Cookie": f"{NAME}={token}"})
        assert revoke.status == 400
        pre = await off.options("/oauth/token", headers={"Origin": APP, "Access-Control-Request-Method": "POST"})
        assert "Access-Control-Allow-Origin" not in pre.headers
        # Nothing was spent: the token still refreshes (here through the form).
        assert (await refresh(off, token))[0] == 200

    async def test_cookie_delivery_is_refused(self, make_cookie_client: CookieFactory) -> None:
        off = await make_cookie_client(cookie_origins=())
        resp = await off.post("/v1/sessions", json={"sub": "alice", "delivery": "cookie"}, headers=basic("login"))
        assert resp.status == 400 and "TOKENWARD_COOKIE_ORIGINS" in (await resp.json())["detail"]


@pytest.mark.topologies("standalone", "cluster")
class TestConcurrency:
    async def test_many_concurrent_refreshes_get_one_successor(
        self, make_cookie_client: CookieFactory, redis_client: aioredis.Redis, keys: Keyspace
    ) -> None:
        """Tabs racing with one cookie: every answer carries the same successor, no reuse detection."""
        n = 40
        cc = await make_cookie_client(refresh_grace_uses=n)
        body, token, _ = await cookie_login(cc)
        answers = await asyncio.gather(*(cookie_refresh(cc, token) for _ in range(n)))
        assert [r.status for r in answers] == [200] * n
        assert len({cookie_value(r) for r in answers}) == 1
        successor = cookie_value(answers[0])
        assert successor.startswith("twr_" + body["session_id"] + ".1.")
        state, _ = await snapshot(redis_client, keys, body["session_id"])
        assert int(state[b"g"]) == 1 and int(state[b"pn"]) == n - 1
        assert (await cookie_refresh(cc, successor)).status == 200

    async def test_refusals_beyond_the_grace_uses_end_nothing(self, cc: Client, settings: Settings) -> None:
        """More racers than grace answers: the extra ones are refused, the session lives on."""
        n = settings.refresh_grace_uses + 15
        body, token, _ = await cookie_login(cc)
        answers = await asyncio.gather(*(cookie_refresh(cc, token) for _ in range(n)))
        ok = [r for r in answers if r.status == 200]
        assert len(ok) == settings.refresh_grace_uses + 1
        assert all(r.status == 400 and "Set-Cookie" not in r.headers for r in answers if r.status != 200)
        assert len({cookie_value(r) for r in ok}) == 1
        assert (await cookie_refresh(cc, cookie_value(ok[0]))).status == 200
        me = await cc.get("/v1/me/sessions", headers=bearer(body["access_token"]))
        assert me.status == 200


class TestReplicas:
    async def test_racing_replicas_agree_on_one_successor(
        self, redis_client: aioredis.Redis, settings: Settings, keyring: KeyRing, tmp_path: Path
    ) -> None:
        """Two service processes on one Redis, 40 refreshes of one cookie spread over both: one successor."""
        n = 40
        assert settings.redis_url is not None
        env = {
            **write_config(tmp_path, keyring, CLIENT_SECRETS),
            "TOKENWARD_REDIS_URL": settings.redis_url.value,
            "TOKENWARD_COOKIE_ORIGINS": APP,
            "TOKENWARD_REFRESH_GRACE_USES": str(n),
        }
        replicas = [ServiceProcess(env), ServiceProcess(env)]
        await asyncio.gather(*(asyncio.to_thread(r.start) for r in replicas))
        try:
            async with ClientSession(cookie_jar=DummyCookieJar()) as http:
                async with http.post(
                    f"{replicas[0].url}/v1/sessions",
                    json={"sub": "alice", "delivery": "cookie"},
                    headers=basic("login"),
                ) as resp:
                    assert resp.status == 201
                    token = cookie_value(resp)

                async def one(url: str) -> tuple[int, str]:
                    headers = {**CSRF, "Cookie": f"{NAME}={token}"}
                    async with http.post(
                        f"{url}/oauth/token", data={"grant_type": "refresh_token"}, headers=headers
                    ) as r:
                        await r.read()
                        return r.status, cookie_value(r) if r.status == 200 else ""

                answers = await asyncio.gather(*(one(replicas[i % 2].url) for i in range(n)))
            assert [status for status, _ in answers] == [200] * n
            assert len({cookie for _, cookie in answers}) == 1
        finally:
            for r in replicas:
                r.stop()


class TestBehindNginx:
    async def test_same_host_deployment(self, make_cookie_client: CookieFactory) -> None:
        """deploy/nginx/browser-sessions.conf on a real nginx: login backend and /oauth under one host.

        The backend relays Tokenward's Set-Cookie; the cookie, host-only with Path=/oauth, comes
        back through the proxy to Tokenward, which rotates and finally clears it.
        """
        tokenward = await make_cookie_client()
        tw_url = str(tokenward.make_url("")).rstrip("/")

        async def backend_login(request: web.Request) -> web.Response:
            async with (
                ClientSession() as http,
                http.post(
                    f"{tw_url}/v1/sessions", json={"sub": "alice", "delivery": "cookie"}, headers=basic("login")
                ) as resp,
            ):
                relayed = web.Response(status=resp.status, body=await resp.read(), content_type="application/json")
                for value in resp.headers.getall("Set-Cookie", []):
                    relayed.headers.add("Set-Cookie", value)
                return relayed

        async def backend_other(request: web.Request) -> web.Response:
            return web.Response(status=404, text="login backend")

        backend = web.Application()
        backend.router.add_post("/login", backend_login)
        backend.router.add_route("*", "/{tail:.*}", backend_other)
        runner = web.AppRunner(backend)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        nginx = await asyncio.to_thread(Nginx(tw_url, f"http://127.0.0.1:{port}", "browser-sessions.conf").start)
        try:
            async with ClientSession(cookie_jar=DummyCookieJar()) as http:
                async with http.post(f"{nginx.url}/login") as resp:
                    assert resp.status == 201
                    login_body = await resp.json()
                    token = cookie_value(resp)
                    assert "refresh_token" not in login_body and "Path=/oauth;" in set_cookie(resp)
                headers = {**CSRF, "Cookie": f"{NAME}={token}"}
                async with http.post(
                    f"{nginx.url}/oauth/token", data={"grant_type": "refresh_token"}, headers=headers
                ) as resp:
                    assert resp.status == 200
                    access = (await resp.json())["access_token"]
                    successor = cookie_value(resp)
                async with http.get(f"{nginx.url}/v1/me/sessions", headers=bearer(access)) as resp:
                    assert resp.status == 200 and len((await resp.json())["sessions"]) == 1
                # Only the browser endpoints are exposed on the app's host.
                async with http.post(f"{nginx.url}/oauth/introspect", data={"token": access}) as resp:
                    assert resp.status == 404 and await resp.text() == "login backend"
                async with http.post(
                    f"{nginx.url}/oauth/revoke",
                    data={"token_type_hint": "refresh_token"},
                    headers={**CSRF, "Cookie": f"{NAME}={successor}"},
                ) as resp:
                    assert resp.status == 200 and "Max-Age=0" in set_cookie(resp)
                async with http.get(f"{nginx.url}/v1/me/sessions", headers=bearer(access)) as resp:
                    assert resp.status == 401
        finally:
            await asyncio.to_thread(nginx.stop)
            await runner.cleanup()

    def test_the_documented_server_block_is_the_tested_file(self) -> None:
        """docs/browser-sessions.md shows exactly deploy/nginx/browser-sessions.conf (minus its comment header)."""
        conf = (ROOT / "deploy" / "nginx" / "browser-sessions.conf").read_text()
        block = conf[conf.index("server {") :].strip()
        doc = (ROOT / "docs" / "browser-sessions.md").read_text()
        assert f"```nginx\n{block}\n```" in doc
