"""Observability of a real service process: no secret in logs or metrics, and no drift.

* A full lifecycle through ``tokenward serve`` (DEBUG, JSON logs, cached deny mode) collects
  every token and secret it handled and greps the whole log and the /metrics body for each.
* ``promtool check metrics`` lints a live /metrics body.
* Every ``tokenward_*`` metric the Grafana dashboard and the alert rules use exists in a live
  service's /metrics output, so neither can drift from the code.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
import yaml

from service.keys import KeyRing
from tests.conftest import CLIENT_SECRETS
from tests.support.processes import ROOT, ServiceProcess, write_config
from tests.support.prom import family_names, value
from tests.support.redis_servers import RedisServer

DASHBOARD = ROOT / "deploy" / "grafana" / "tokenward-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "tokenward-rules.yml"
METRIC_RE = re.compile(r"\btokenward_[a-z0-9_]+")


def _basic(client_id: str, secret: str | None = None) -> dict[str, str]:
    secret = CLIENT_SECRETS[client_id][0] if secret is None else secret
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def _service(tmp: Path, redis_url: str, keyring: KeyRing, **env: str) -> ServiceProcess:
    config = write_config(tmp, keyring, {cid: (sec, set(sc)) for cid, (sec, sc) in CLIENT_SECRETS.items()})
    return ServiceProcess(
        {
            **config,
            "TOKENWARD_REDIS_URL": redis_url,
            "TOKENWARD_DENY_MODE": "cached",
            "TOKENWARD_LOG_FORMAT": "json",
            "TOKENWARD_METRICS_INTERVAL": "1",
            **env,
        }
    )


@pytest.fixture(scope="module")
def redis_for_module() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def live(redis_for_module: RedisServer, keyring: KeyRing) -> Iterator[ServiceProcess]:
    """A running service (cached deny mode, so the subscriber's metrics exist too)."""
    with tempfile.TemporaryDirectory(prefix="tw-obs-") as tmp:
        service = _service(Path(tmp), redis_for_module.url, keyring).start()
        try:
            yield service
        finally:
            service.stop()
            service.log.unlink(missing_ok=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _live_metrics(service: ServiceProcess, http: aiohttp.ClientSession) -> str:
    """Some traffic (so labelled series exist), then the /metrics body."""
    async with http.post(service.url + "/v1/sessions", json={"sub": "metrics-probe"}, headers=_basic("login")) as resp:
        pair = await resp.json()
    await http.post(
        service.url + "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    )
    await http.post(service.url + "/oauth/revoke", data={"token": pair["access_token"]})
    deadline = time.monotonic() + 15
    while True:  # the key sampler runs every second; the subscriber applies the revocation soon
        async with http.get(service.url + "/metrics", headers=_basic("admin")) as resp:
            assert resp.status == 200
            text = await resp.text()
        sampled = value(text, "tokenward_keys_sampled_timestamp_seconds") > 0
        if sampled and "tokenward_events_subscriber_lag_seconds_count" in text:
            return text
        assert time.monotonic() < deadline, "no key sample or no event applied: " + text
        await asyncio.sleep(0.2)


async def test_promtool_accepts_live_metrics(live: ServiceProcess, http: aiohttp.ClientSession) -> None:
    text = await _live_metrics(live, http)
    proc = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _exprs_in_dashboard() -> list[str]:
    dash = orjson.loads(DASHBOARD.read_bytes())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    return exprs


def _exprs_in_rules() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


async def test_dashboard_and_rules_use_only_metrics_the_service_exports(
    live: ServiceProcess, http: aiohttp.ClientSession
) -> None:
    live_names = family_names(await _live_metrics(live, http))
    for source, exprs in (("dashboard", _exprs_in_dashboard()), ("rules", _exprs_in_rules())):
        used = {name for expr in exprs for name in METRIC_RE.findall(expr)}
        assert len(used) >= 5, (source, used)  # the check would be empty if the regex broke
        missing = sorted(used - live_names)
        assert not missing, f"{source} uses metrics /metrics does not export: {missing}"


class Secrets:
    """Every credential the lifecycle handled, with the parts that must not leak either."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def client(self, client_id: str, secret: str) -> None:
        self.values.add(secret)
        self.values.add(base64.b64encode(f"{client_id}:{secret}".encode()).decode())

    def token(self, raw: str) -> str:
        self.values.add(raw)
        if raw.startswith("twr_"):  # twr_<sid>.<gen>.<secret>.<tag>: the secret and tag parts
            _, _, secret, tag = raw.split(".")
            self.values.update({secret, tag, f"{secret}.{tag}"})
        elif raw.count(".") == 2:  # a JWT: its signature alone
            self.values.add(raw.rsplit(".", 1)[1])
        return raw

    def pair(self, body: dict[str, Any]) -> dict[str, Any]:
        self.token(body["access_token"])
        self.token(body["refresh_token"])
        return body


async def test_full_lifecycle_leaks_no_token_or_secret(
    redis_for_module: RedisServer, keyring: KeyRing, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    secrets = Secrets()
    for cid, (secret, _) in CLIENT_SECRETS.items():
        secrets.client(cid, secret)
    service = _service(
        tmp_path, redis_for_module.url, keyring, TOKENWARD_LOG_LEVEL="DEBUG", TOKENWARD_REFRESH_GRACE="1"
    )
    service.start()
    url = service.url
    statuses: list[int] = []

    async def call(method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with http.request(method, url + path, **kw) as resp:
            raw = await resp.read()
            statuses.append(resp.status)
            if resp.content_type.endswith("json") and raw:
                return resp.status, orjson.loads(raw)
            return resp.status, raw.decode(errors="replace")

    async def login(sub: str, **body: Any) -> dict[str, Any]:
        status, pair = await call("POST", "/v1/sessions", json={"sub": sub, **body}, headers=_basic("login"))
        assert status == 201, pair
        return secrets.pair(pair)

    async def refresh(token: str, **kw: Any) -> tuple[int, Any]:
        status, body = await call(
            "POST", "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token}, **kw
        )
        if status == 200:
            secrets.pair(body)
        return status, body

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    try:
        alice = await login("alice", scope="read write", device={"name": "laptop", "user_agent": "Firefox"})
        phone = await login("alice", scope="read", remember_me=True, device={"name": "phone"})
        bob = await login("bob", claims={"tenant": "t1"})
        # Rotation, grace (the same successor again), reuse after the window (session ended).
        s1, r1 = await refresh(alice["refresh_token"], headers={"X-Request-Id": "lifecycle-refresh-1"})
        s2, r2 = await refresh(alice["refresh_token"])
        assert s1 == s2 == 200 and r1["refresh_token"] == r2["refresh_token"]
        await asyncio.sleep(1.2)
        assert (await refresh(alice["refresh_token"]))[0] == 400
        assert (await refresh(r1["refresh_token"]))[0] == 400, "the session ended on reuse"
        # A confidential client refreshing, a narrower scope, a wrong client.
        s, b1 = await refresh(bob["refresh_token"], headers=_basic("login"))
        assert s == 200
        assert (await refresh(b1["refresh_token"], headers=_basic("admin")))[0] == 400
        # Introspection and forward-auth, good and bad.
        s, found = await call(
            "POST", "/oauth/introspect", data={"token": phone["access_token"]}, headers=_basic("gateway")
        )
        assert s == 200 and found["active"] is True
        s, found = await call(
            "POST", "/oauth/introspect", data={"token": phone["refresh_token"]}, headers=_basic("gateway")
        )
        assert s == 200
        assert (await call("GET", "/v1/authz/api/x?scope=read", headers=bearer(phone["access_token"])))[0] == 200
        assert (await call("GET", "/v1/authz?scope=admin", headers=bearer(phone["access_token"])))[0] == 403
        tampered_at = secrets.token(
            phone["access_token"][:-4] + ("AAAA" if not phone["access_token"].endswith("AAAA") else "BBBB")
        )
        assert (await call("POST", "/v1/authz", headers=bearer(tampered_at)))[0] == 401
        # The user's own session calls.
        s, mine = await call("GET", "/v1/me/sessions", headers=bearer(phone["access_token"]))
        assert s == 200 and len(mine["sessions"]) == 1
        tablet = await login("alice", device={"name": "tablet"})
        assert (await call("DELETE", f"/v1/me/sessions/{tablet['session_id']}", headers=bearer(phone["access_token"])))[
            0
        ] == 204
        extra = await login("alice")
        assert (await call("DELETE", "/v1/me/sessions?keep_current=true", headers=bearer(phone["access_token"])))[
            0
        ] == 200
        assert (await call("GET", "/v1/authz", headers=bearer(extra["access_token"])))[0] == 401
        # Admin calls.
        carol = await login("carol")
        await login("dave")
        assert (await call("GET", "/v1/users/carol/sessions", headers=_basic("admin")))[0] == 200
        assert (await call("DELETE", f"/v1/sessions/{carol['session_id']}", headers=_basic("admin")))[0] == 204
        assert (await call("DELETE", "/v1/users/dave/sessions", headers=_basic("admin")))[0] == 200
        claims = jwt.decode(bob["access_token"], options={"verify_signature": False})
        body = {"jti": claims["jti"], "exp": claims["exp"], "reason": "lifecycle test"}
        assert (await call("POST", "/v1/revocations", json=body, headers=_basic("admin")))[0] == 200
        body = {"sid": phone["session_id"], "reason": "lifecycle test"}
        assert (await call("POST", "/v1/revocations", json=body, headers=_basic("admin")))[0] == 200
        assert (await call("GET", "/v1/revocations", headers=_basic("admin")))[0] == 200
        # RFC 7009 by the holder and by a client with scope revoke.
        erin = await login("erin")
        assert (await call("POST", "/oauth/revoke", data={"token": erin["access_token"]}, headers=_basic("revoker")))[
            0
        ] == 200
        assert (await call("POST", "/oauth/revoke", data={"token": erin["refresh_token"]}))[0] == 200
        assert (await refresh(erin["refresh_token"]))[0] == 400
        # Errors: wrong secrets, tokens where they do not belong, credentials in the query.
        wrong = "wrong-secret-0123456789abcdefXYZ"
        secrets.client("login", wrong)
        assert (await call("POST", "/v1/sessions", json={"sub": "x"}, headers=_basic("login", wrong)))[0] == 401
        assert (await call("GET", "/metrics", headers=_basic("nobody")))[0] == 403
        frank = await login("frank")
        parts = frank["refresh_token"].split(".")
        parts[2] = "A" * len(parts[2])  # a wrong secret for the current generation
        forged_rt = secrets.token(".".join(parts))
        assert (await refresh(forged_rt))[0] == 400
        assert (await call("POST", "/oauth/token", params={"refresh_token": frank["refresh_token"]}))[0] == 400
        secret_in_query = {"client_id": "login", "client_secret": CLIENT_SECRETS["login"][0]}
        await call(
            "POST", "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "x", **secret_in_query}
        )
        s, _ = await call("GET", "/healthz", headers={"X-Request-Id": frank["refresh_token"]})
        assert s == 200
        assert (await call("GET", f"/v1/authz/{frank['access_token']}", headers=bearer(frank["refresh_token"])))[
            0
        ] == 401
        assert (await call("GET", "/v1/me/sessions", headers=bearer(frank["refresh_token"])))[0] == 401
        s, metrics_text = await call("GET", "/metrics", headers=_basic("admin"))
        assert s == 200
    finally:
        code = service.terminate() if service.proc is not None else 0
    log = service.log.read_text()
    service.log.unlink(missing_ok=True)
    assert code == 0, log[-3000:]

    # The run did what it claims: every outcome, audit lines, access lines (so the grep below means something).
    for outcome in ("rotated", "grace", "reuse_detected", "expired", "invalid"):
        assert value(metrics_text, "tokenward_refresh_total", outcome=outcome) >= 1, outcome
    not_json = [line for line in log.splitlines() if not line.startswith("{")]
    assert not not_json, not_json[:5]
    lines = [orjson.loads(line) for line in log.splitlines()]
    audit = [x for x in lines if x["logger"] == "tokenward.audit"]
    assert len(audit) >= 9, audit
    access = [x for x in lines if x["logger"] == "tokenward.access"]
    assert len(access) >= len(statuses) - 5
    assert any(x.get("request_id") == "lifecycle-refresh-1" and x.get("outcome") == "rotated" for x in access)
    assert {400, 401, 403, 404} & set(statuses) and 200 in statuses

    assert len(secrets.values) > 60
    leaked_log = sorted(v for v in secrets.values if v in log)
    leaked_metrics = sorted(v for v in secrets.values if v in metrics_text)
    assert not leaked_log, f"secrets in the log: {leaked_log}"
    assert not leaked_metrics, f"secrets in /metrics: {leaked_metrics}"
