"""The API contract: service/openapi.json against the real router, the OpenAPI 3.1 meta-schema, and
schemathesis fuzzing the live service on real Redis with every check it has."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import redis.asyncio as aioredis
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.clients import Client, ClientRegistry, hash_secret
from service.config import Secret, Settings
from service.http.edge import UNMATCHED
from service.keys import KeyRing
from tests.http.schemathesis_hooks import CLIENTS, basic
from tests.support.processes import ROOT, ServiceProcess, write_config
from tests.support.redis_servers import RedisCluster, RedisServer

DOC_PATH = ROOT / "service" / "openapi.json"
OPENAPI_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: Answered by the error middleware on every Redis-backed operation (the store, or its timeout).
NO_REDIS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/.well-known/jwks.json", "/client/tokenward.js"}
#: Operations the rate limits (another branch) will answer 429 on; documented ahead of them.
RATE_LIMITED = {("post", "/oauth/token"), ("post", "/oauth/revoke"), ("post", "/oauth/introspect")}
#: schemathesis budget: cases per operation and phase, and a fixed seed so a run can be replayed.
MAX_EXAMPLES = 25
SEED = 20261123


def load_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DOC_PATH.read_text())
    return doc


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in OPENAPI_METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow a local ``$ref`` (one level is all the document uses)."""
    if isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return target
    return node


def routed(settings: Settings, keyring: KeyRing, clients: ClientRegistry) -> set[tuple[str, str]]:
    """(path template, method) for every route the app serves, in OpenAPI's spelling."""
    app = create_app(settings, keyring=keyring, clients=clients)
    out: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        if resource.name == UNMATCHED:
            continue  # the edge's catch-all: it answers only 404 and 405 for what nothing else serves
        # aiohttp spells a pattern-restricted variable {name:regex}; OpenAPI only {name}.
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", resource.canonical)
        methods = {route.method.lower() for route in resource}
        if "*" in methods:
            methods = set(OPENAPI_METHODS)
        elif "get" in methods:
            # aiohttp answers HEAD for every GET route by itself (allow_head); not an operation of ours.
            methods.discard("head")
        out |= {(path, m) for m in methods}
    return out


def test_every_route_is_documented_and_nothing_else(keyring: KeyRing, clients: ClientRegistry) -> None:
    documented = {(path, method) for path, method, _ in operations(load_doc())}
    served = routed(Settings(), keyring, clients)
    assert served - documented == set(), "routes missing from service/openapi.json"
    assert documented - served == set(), "documented operations the router does not serve"
    assert len(served) >= 30


def test_the_route_comparison_sees_a_new_route(
    keyring: KeyRing, clients: ClientRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison is not vacuous: a route added to the app shows up as undocumented."""
    from service import app as app_module
    from service.http import health, routes

    def with_extra(app: web.Application) -> None:
        routes.setup_routes(app)
        app.router.add_get("/v1/undocumented/{x:[0-9]+}", health.healthz)

    monkeypatch.setattr(app_module, "setup_routes", with_extra)
    served = routed(Settings(), keyring, clients)
    documented = {(path, method) for path, method, _ in operations(load_doc())}
    assert served - documented == {("/v1/undocumented/{x}", "get")}


def schemas_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON Schema in the document: ``schema`` members and ``components.schemas``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("schema", "itemSchema") and isinstance(value, dict):
                yield value
            elif key == "schemas" and isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, dict))
            yield from schemas_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from schemas_in(value)


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs_in(value)


def validate_openapi(doc: dict[str, Any]) -> None:
    """The OpenAPI 3.1 meta-schema (the one schemathesis ships, via jsonschema_rs), every embedded
    schema against JSON Schema 2020-12, and every $ref resolving inside the document."""
    schemathesis.openapi.from_dict(copy.deepcopy(doc)).validate()
    for schema in schemas_in(doc):
        jsonschema_rs.meta.validate(schema)
    for ref in refs_in(doc):
        assert ref.startswith("#/"), ref
        resolve(doc, {"$ref": ref})


def test_document_is_valid_openapi_3_1() -> None:
    doc = load_doc()
    assert doc["openapi"].startswith("3.1.")
    validate_openapi(doc)
    assert sum(1 for _ in schemas_in(doc)) > 50


def test_examples_match_their_schemas() -> None:
    doc = load_doc()
    checked = 0
    for _, _, op in operations(doc):
        for media in op.get("requestBody", {}).get("content", {}).values():
            if "example" in media:
                # The refs point into the document: validate with the document's components at hand.
                schema = {"allOf": [media["schema"]], "components": doc["components"]}
                jsonschema_rs.validator_for(schema).validate(media["example"])
                checked += 1
    assert checked >= 5


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["paths"]["/healthz"]["get"]["responses"]["200"].pop("description"),
        lambda d: d["paths"]["/oauth/token"]["post"].update(parameters=[{"name": "x", "in": "nowhere"}]),
        lambda d: d["components"]["schemas"]["Problem"].update(type="objet"),
        lambda d: d["components"]["schemas"]["Session"].update(required="id"),
        lambda d: d["paths"]["/healthz"]["get"]["responses"]["200"].update(
            content={"a/b": {"schema": {"$ref": "#/x"}}}
        ),
    ],
    ids=["response-without-description", "bad-parameter-location", "bad-type", "bad-required", "dangling-ref"],
)
def test_the_validation_refuses_a_broken_document(breakage: Any) -> None:
    doc = load_doc()
    breakage(doc)
    with pytest.raises((jsonschema_rs.ValidationError, KeyError, AssertionError)):
        validate_openapi(doc)


def response_codes(op: dict[str, Any]) -> set[str]:
    return set(op["responses"])


def error_media_type(doc: dict[str, Any], op: dict[str, Any], status: str) -> str:
    response = resolve(doc, op["responses"][status])
    content = response.get("content", {})
    assert len(content) == 1, (status, content)
    return str(next(iter(content)))


def test_every_operation_documents_the_errors_the_middleware_gives() -> None:
    """The statuses each kind of operation can get from the shared layers, in the right error shape."""
    doc = load_doc()
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        codes = response_codes(op)
        security = op["security"]
        if {"clientBasic": []} in security:
            assert "401" in codes, where
            if {} not in security:  # a required client needs a scope, so can lack it
                assert "403" in codes, where
        if {"accessBearer": []} in security:
            assert "401" in codes, where
        if "requestBody" in op:
            assert {"400", "413", "415"} <= codes, where
        if path not in NO_REDIS:
            assert "503" in codes, where
            retry = resolve(doc, op["responses"]["503"])["headers"]["Retry-After"]
            assert retry["required"] is True, where
        assert ("429" in codes) == ((method, path) in RATE_LIMITED), where
        for code in codes:
            if code < "400" or path == "/readyz" or (path.startswith("/v1/authz") and code in ("401", "403")):
                continue  # readiness says why in its own JSON; forward-auth denies with a bare challenge
            expected = "application/json" if path.startswith("/oauth/") else "application/problem+json"
            assert error_media_type(doc, op, code) == expected, (where, code)


async def test_the_document_is_served_as_kept(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert resp.headers["Cache-Control"].startswith("public")
    assert await resp.read() == DOC_PATH.read_bytes()


# --- schemathesis against the live service ---------------------------------------------------------


@pytest.fixture
def live_service(
    redis_server: RedisServer | RedisCluster, redis_client: aioredis.Redis, keyring: KeyRing, tmp_path: Path
) -> Iterator[ServiceProcess]:
    env = write_config(tmp_path, keyring, dict(CLIENTS))
    # Cookie mode on, so `delivery: cookie` is as valid as the document says.
    cookie = {"TOKENWARD_COOKIE_ORIGINS": "https://app.example.test"}
    service = ServiceProcess({"TOKENWARD_REDIS_URL": redis_server.url, **cookie, **env}).start()
    yield service
    service.stop()


def served_statuses(service: ServiceProcess) -> dict[tuple[str, str], set[int]]:
    """Statuses the service answered per (method, route template), from its own /metrics."""
    import urllib.request

    request = urllib.request.Request(service.url + "/metrics", headers={"Authorization": basic("metrics")})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    out: dict[tuple[str, str], set[int]] = {}
    pattern = r'tokenward_http_requests_total\{method="(\w+)",route="([^"]+)",status="(\d+)"\}'
    for method, route, status in re.findall(pattern, text):
        out.setdefault((method.lower(), route), set()).add(int(status))
    return out


SCHEMATHESIS_CONFIG = ROOT / "tests" / "http" / "schemathesis.toml"


def test_the_run_has_every_check_on() -> None:
    """All of schemathesis's checks, in every phase; in the stateful phase all but the two that
    cannot hold for single-use tokens (the reasons are in schemathesis.toml)."""
    from schemathesis.config import SchemathesisConfig
    from schemathesis.config._checks import ChecksConfig

    project = SchemathesisConfig.from_path(str(SCHEMATHESIS_CONFIG)).projects.get_default()
    names = [field for field in ChecksConfig.__dataclass_fields__ if not field.startswith("_")]
    names.remove("max_response_time")  # not a check without a limit to hold responses to
    assert len(names) >= 14
    for phase in ("examples", "coverage", "fuzzing", "stateful"):
        config = project.checks_config_for(phase=phase)
        off = {name for name in names if not config.get_by_name(name=name).enabled}
        expected = {"positive_data_acceptance", "ensure_resource_availability"} if phase == "stateful" else set()
        assert off == expected, phase


@pytest.mark.timeout(300)
def test_schemathesis_finds_nothing_against_the_live_service(live_service: ServiceProcess, tmp_path: Path) -> None:
    """Every check, positive and negative cases, all four phases (examples, coverage, fuzzing, and
    stateful along the document's links), credentials through the auth hook; zero failures."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(SCHEMATHESIS_CONFIG),
        "run",
        f"{live_service.url}/openapi.json",
        "--mode",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.http.schemathesis_hooks",
        "TOKENWARD_FUZZ_URL": live_service.url,
        "PYTHONPATH": str(ROOT),
    }
    started = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280, check=False)
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    at = output.rfind("SUMMARY")
    summary = output[output.rfind("\n", 0, at) + 1 :] if at >= 0 else output[-4000:]
    print(f"schemathesis ({elapsed:.1f} s, exit {done.returncode}):\n{summary}")
    assert done.returncode == 0, output[-20000:]
    assert "No issues found" in output
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, phase

    # The run reached every operation and generated a real amount of cases...
    doc = load_doc()
    tested = re.search(r"Tested: (\d+)", output)
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert tested and generated, summary
    # GET /openapi.json is the schema itself: schemathesis leaves it out.
    assert int(tested[1]) == sum(1 for _ in operations(doc)) - 1
    assert int(generated[1]) == int(generated[2]) >= 20 * int(tested[1])

    # ...and the credentials worked: every operation answered a success at least once (so the
    # negative cases were refused for what they got wrong, not for missing credentials), and
    # the authenticated ones were also refused credentials at least once.
    statuses = served_statuses(live_service)
    for path, method, op in operations(doc):
        if path == "/openapi.json":
            continue
        got = statuses.get((method, path), set())
        assert any(200 <= s < 300 for s in got), (method, path, got)
        if op["security"] and {} not in op["security"]:
            assert 401 in got, (method, path, got)
    assert all(s < 500 for got in statuses.values() for s in got), statuses


# --- what schemathesis cannot provoke: Redis gone ---------------------------------------------------


def check_response(
    doc: dict[str, Any], path: str, method: str, status: int, headers: Any, body: bytes | None, content_type: str
) -> None:
    """The answer is documented for the operation: status, required headers, media type, body schema."""
    op = doc["paths"][path][method]
    assert str(status) in op["responses"], (method, path, status)
    response = resolve(doc, op["responses"][str(status)])
    for name, spec in response.get("headers", {}).items():
        spec = resolve(doc, spec)
        if spec.get("required"):
            assert name in headers, (method, path, name)
            jsonschema_rs.validator_for(spec["schema"]).validate(headers[name])
    content = response.get("content", {})
    if not content or body is None:  # None: the answer to HEAD has no body to check
        return
    assert content_type in content, (method, path, content_type)
    schema = {"allOf": [content[content_type]["schema"]], "components": doc["components"]}
    jsonschema_rs.validator_for(schema).validate(json.loads(body))


def client_auth(client_id: str) -> dict[str, str]:
    return {"Authorization": basic(client_id)}


#: A request each Redis-backed operation would serve, with the credentials it needs.
FAKE_REFRESH = "twr_00" + "A" * 22 + ".0." + "B" * 32 + "." + "0" * 16
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


def redis_backed_requests(access_token: str) -> dict[tuple[str, str], dict[str, Any]]:
    user = {"Authorization": f"Bearer {access_token}"}
    out: dict[tuple[str, str], dict[str, Any]] = {
        ("post", "/oauth/token"): {
            "data": f"grant_type=refresh_token&refresh_token={FAKE_REFRESH}",
            "headers": FORM_HEADERS,
        },
        ("post", "/oauth/revoke"): {"data": f"token={FAKE_REFRESH}", "headers": FORM_HEADERS},
        ("post", "/oauth/introspect"): {
            "data": f"token={FAKE_REFRESH}",
            "headers": {**FORM_HEADERS, **client_auth("gateway")},
        },
        ("post", "/v1/sessions"): {"json": {"sub": "zoe"}, "headers": client_auth("login")},
        ("delete", "/v1/sessions/{sid}"): {"path": {"sid": "00abcdef"}, "headers": client_auth("admin")},
        ("get", "/v1/me/sessions"): {"headers": user},
        ("delete", "/v1/me/sessions"): {"headers": user},
        ("delete", "/v1/me/sessions/{sid}"): {"path": {"sid": "00abcdef"}, "headers": user},
        ("get", "/v1/users/{sub}/sessions"): {"path": {"sub": "zoe"}, "headers": client_auth("admin")},
        ("delete", "/v1/users/{sub}/sessions"): {"path": {"sub": "zoe"}, "headers": client_auth("admin")},
        ("post", "/v1/revocations"): {"json": {"sub": "zoe"}, "headers": client_auth("admin")},
        ("get", "/v1/revocations"): {"headers": client_auth("events")},
        ("get", "/v1/revocations/events"): {"headers": client_auth("events")},
    }
    for method in OPENAPI_METHODS:
        out[(method, "/v1/authz")] = {"headers": user}
        out[(method, "/v1/authz/{tail}")] = {"path": {"tail": "a/b"}, "headers": user}
    return out


async def test_every_redis_backed_operation_answers_its_documented_503(
    aiohttp_client: Any, settings: Settings, keyring: KeyRing
) -> None:
    """503 with Retry-After in the endpoint's error shape, for every operation that needs Redis."""
    registry = ClientRegistry(
        {cid: Client(cid, hash_secret(secret), frozenset(scopes)) for cid, (secret, scopes) in CLIENTS.items()}
    )
    server = RedisServer().start()
    try:
        app = create_app(dataclasses.replace(settings, redis_url=Secret(server.url)), keyring=keyring, clients=registry)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        resp = await client.post("/v1/sessions", json={"sub": "zoe"}, headers=client_auth("login"))
        assert resp.status == 201
        token = (await resp.json())["access_token"]
    finally:
        server.close()

    doc = load_doc()
    requests = redis_backed_requests(token)
    backed = [(path, method) for path, method, _ in operations(doc) if path not in NO_REDIS]
    assert {(m, p) for p, m in backed} == set(requests), "a request for each Redis-backed operation"
    for path, method in backed:
        spec = requests[(method, path)]
        url = path.format(**spec.get("path", {}))
        kwargs = {k: v for k, v in spec.items() if k in ("data", "json", "headers")}
        resp = await client.request(method.upper(), url, **kwargs)
        assert resp.status == 503, (method, path, resp.status, await resp.text())
        body = None if method == "head" else await resp.read()
        check_response(doc, path, method, resp.status, resp.headers, body, resp.content_type)
        assert resp.headers["Retry-After"] == "1"
    resp = await client.get("/readyz")
    check_response(doc, "/readyz", "get", resp.status, resp.headers, await resp.read(), resp.content_type)
    assert resp.status == 503


async def test_wrong_scope_and_oversized_bodies_get_their_documented_answers(
    aiohttp_client: Any, settings: Settings, keyring: KeyRing, redis_client: aioredis.Redis
) -> None:
    """403 for a client without the endpoint's scope, 413 for a body over the cap and 415 for a
    compressed one, on every operation that can give them; schemathesis sends none of them (its
    client always has the scope)."""
    registry = ClientRegistry(
        {cid: Client(cid, hash_secret(secret), frozenset(scopes)) for cid, (secret, scopes) in CLIENTS.items()}
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, keyring=keyring, clients=registry))
    resp = await client.post("/v1/sessions", json={"sub": "zoe"}, headers=client_auth("login"))
    requests = redis_backed_requests((await resp.json())["access_token"])
    requests[("get", "/metrics")] = {"headers": client_auth("metrics")}
    doc = load_doc()
    forbidden = bodies = 0
    for path, method, op in operations(doc):
        spec = requests.get((method, path))
        url = path.format(**(spec or {}).get("path", {}))
        if "403" in op["responses"] and {} not in op["security"] and {"clientBasic": []} in op["security"]:
            assert spec is not None, (method, path)
            # Any other client: each holds one scope, so never this endpoint's as well.
            other = "login" if spec["headers"] != client_auth("login") else "gateway"
            headers = {**spec["headers"], **client_auth(other)}
            kwargs = {k: v for k, v in spec.items() if k in ("data", "json")}
            resp = await client.request(method.upper(), url, headers=headers, **kwargs)
            assert resp.status == 403, (method, path, await resp.text())
            check_response(doc, path, method, 403, resp.headers, await resp.read(), resp.content_type)
            forbidden += 1
        if "requestBody" in op:
            assert spec is not None, (method, path)
            media = next(iter(op["requestBody"]["content"]))
            headers = {**spec["headers"], "Content-Type": media}
            resp = await client.request(method.upper(), url, headers=headers, data=b"x" * (settings.max_body_bytes + 1))
            assert resp.status == 413, (method, path, await resp.text())
            check_response(doc, path, method, 413, resp.headers, await resp.read(), resp.content_type)
            headers["Content-Encoding"] = "gzip"  # never inflated: refused unread (issue 15, finding 10)
            resp = await client.request(method.upper(), url, headers=headers, data=b"\x1f\x8b not gzip")
            assert resp.status == 415, (method, path, await resp.text())
            check_response(doc, path, method, 415, resp.headers, await resp.read(), resp.content_type)
            bodies += 1
    assert (forbidden, bodies) == (9, 5)
