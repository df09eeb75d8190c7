"""service/http/observe.py: request ids, the access line, the caller, audit lines."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient, make_mocked_request

from service.http.edge import around
from tests.conftest import basic
from tests.factories import bearer, login, refresh
from tests.support.logcapture import captured

HEX16 = re.compile(r"[0-9a-f]{16}")


async def test_well_formed_request_id_is_honoured_and_echoed(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz", headers={"X-Request-Id": "abc-DEF_123"})
    assert resp.headers["X-Request-Id"] == "abc-DEF_123"


async def test_malformed_request_ids_are_replaced(client: TestClient[Any, Any]) -> None:
    s = await login(client, "ann")
    hostile = [s["refresh_token"], s["access_token"], "a" * 65, "with space", "dots.are.out", "ünï", ""]
    seen = set()
    for rid in hostile:
        resp = await client.get("/healthz", headers={"X-Request-Id": rid})
        echoed = resp.headers["X-Request-Id"]
        assert HEX16.fullmatch(echoed) and echoed != rid, rid
        seen.add(echoed)
    assert len(seen) == len(hostile), "a fresh id each time"


async def test_every_answer_carries_an_id(client: TestClient[Any, Any]) -> None:
    answers = [
        await client.get("/nowhere"),
        await client.get("/metrics"),
        await client.post("/oauth/token", data={"grant_type": "password"}),
        await client.put("/healthz"),
        await client.get("/v1/authz"),
    ]
    assert [r.status for r in answers] == [404, 401, 400, 405, 401]
    assert all(HEX16.fullmatch(r.headers["X-Request-Id"]) for r in answers)


async def test_a_stream_carries_its_id_from_its_first_byte(client: TestClient[Any, Any]) -> None:
    """The SSE feed sends its headers before the handler returns: it tags itself."""
    resp = await client.get("/v1/revocations/events", headers={**basic("admin"), "X-Request-Id": "sse-1"})
    try:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "sse-1"
    finally:
        resp.close()


async def test_access_line_names_route_status_caller_and_outcome(client: TestClient[Any, Any]) -> None:
    with captured() as logs:
        s = await login(client, "bea")
        await refresh(client, s["refresh_token"], **{})
        await client.get("/v1/me/sessions", headers={**bearer(s["access_token"]), "X-Request-Id": "req-1"})
        await client.post("/oauth/introspect", data={"token": s["access_token"]}, headers=basic("gateway"))
        await client.get("/healthz")
    access = [line for line in logs.json() if line["logger"] == "tokenward.access"]
    by_route = {line["route"]: line for line in access}
    created = by_route["/v1/sessions"]
    assert created["status"] == 201 and created["caller"] == "client:login" and created["method"] == "POST"
    assert 0 < created["duration_ms"] < 10_000 and HEX16.fullmatch(created["request_id"])
    token = by_route["/oauth/token"]
    assert token["outcome"] == "rotated" and token["caller"] == "user:bea" and token["sid"] == s["session_id"]
    mine = by_route["/v1/me/sessions"]
    assert mine["request_id"] == "req-1" and mine["caller"] == "user:bea" and mine["status"] == 200
    assert by_route["/oauth/introspect"]["caller"] == "client:gateway"
    assert by_route["/healthz"]["level"] == "DEBUG", "probes stay out of INFO"
    for line in logs.json():
        assert {"ts", "level", "logger", "msg"} <= line.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])


async def test_every_revocation_has_an_audit_line(make_client: Any) -> None:
    client: TestClient[Any, Any] = await make_client(refresh_grace=0)
    admin = basic("admin")
    with captured() as logs:
        a = await login(client, "cleo")
        b = await login(client, "cleo")
        c = await login(client, "dina")
        await client.post("/oauth/revoke", data={"token": a["refresh_token"]}, headers={"X-Request-Id": "r-logout"})
        await client.post("/oauth/revoke", data={"token": b["access_token"]}, headers=basic("revoker"))
        await refresh(client, c["refresh_token"])
        await refresh(client, c["refresh_token"])  # replay outside the (zero) window: reuse
        d = await login(client, "cleo")
        await client.delete("/v1/me/sessions?keep_current=true", headers=bearer(d["access_token"]))
        await client.delete("/v1/me/sessions", headers=bearer(d["access_token"]))
        e = await login(client, "emma")
        await client.delete(f"/v1/sessions/{e['session_id']}", headers=admin)
        await client.delete("/v1/users/emma/sessions", headers=admin)
        body = {"jti": "00" + "b" * 22, "exp": int(time.time()) + 60, "reason": "ticket 7"}
        await client.post("/v1/revocations", json=body, headers=admin)
    audit = [line for line in logs.json() if line["logger"] == "tokenward.audit"]
    got = [(x["by"], x["kind"], x["id"], x["reason"]) for x in audit]
    assert got == [
        ("anonymous token holder", "session", a["session_id"], "logout"),
        ("client:revoker", "jti", _jti(b["access_token"]), "revoked"),
        ("service (reuse detection)", "session", c["session_id"], "refresh_token_reuse"),
        ("user:cleo", "session", "cleo", "logout_all"),
        ("user:cleo", "user", "cleo", "logout_all"),
        ("client:admin", "session", e["session_id"], "admin"),
        ("client:admin", "user", "emma", "admin_logout_all"),
        ("client:admin", "jti", "00" + "b" * 22, "ticket 7"),
    ]
    assert audit[0]["request_id"] == "r-logout" and audit[0]["msg"] == "revocation"
    assert audit[3]["sessions_ended"] == 1 and audit[3]["kept"] == d["session_id"]


def _jti(access_token: str) -> str:
    jti: str = jwt.decode(access_token, options={"verify_signature": False})["jti"]
    return jti


async def test_access_log_modes(make_client: Any) -> None:
    for mode, expected in (("all", {201, 401}), ("errors", {401}), ("off", set())):
        client: TestClient[Any, Any] = await make_client(access_log=mode)
        with captured() as logs:
            await login(client, "fay")
            await client.get("/v1/me/sessions")
        statuses = {x["status"] for x in logs.json() if x["logger"] == "tokenward.access"}
        assert statuses == expected, mode


async def test_abandoned_request_is_499_not_500(client: TestClient[Any, Any]) -> None:
    app = client.app
    assert app is not None
    request = make_mocked_request("POST", "/oauth/token", app=app)

    async def abandoned(_: Any) -> Any:
        raise asyncio.CancelledError

    with captured() as logs, pytest.raises(asyncio.CancelledError):
        await around(abandoned)(request)
    (line,) = [x for x in logs.json() if x["logger"] == "tokenward.access"]
    assert line["status"] == 499
    text = await (await client.get("/metrics", headers=basic("admin"))).text()
    assert 'status="499"' in text and 'status="500"' not in text
