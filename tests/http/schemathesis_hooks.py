"""schemathesis hooks for the contract run (``SCHEMATHESIS_HOOKS=tests.http.schemathesis_hooks``).

Credentials go through the auth hook, so schemathesis knows them and its auth checks
(``ignored_auth``) strip or spoil them on purpose: a client holding exactly the scope each
endpoint needs, and a fresh access token of a fresh session for ``/v1/me/*`` and
forward-auth. Positive cases that name server state get real state in ``before_call``
(a live refresh token, a cursor of this deployment, ids in its partitions), so "valid data
should be accepted" keeps its meaning; negative cases are left as generated.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import unicodedata
import urllib.request
from typing import Any, Final

import schemathesis
from schemathesis import Case as AnyCase
from schemathesis.auths import AuthContext
from schemathesis.generation.meta import TestPhase
from schemathesis.hooks import HookContext

from service.sdk.identity import is_safe_sub

Case = AnyCase[Any]

#: The clients the service under test is configured with: (secret, scopes), one scope each.
CLIENTS: Final = {
    "login": ("login-secret-0123456789abcdef", {"sessions:write"}),
    "gateway": ("gateway-secret-0123456789abcdef", {"introspect"}),
    "admin": ("admin-secret-0123456789abcdef", {"admin"}),
    "events": ("events-secret-0123456789abcdef", {"events"}),
    "metrics": ("metrics-secret-0123456789abcdef", {"metrics"}),
}
#: Which client calls which operation; operations not named here are public, Bearer, or optional Basic.
CLIENT_FOR: Final = {
    ("POST", "/v1/sessions"): "login",
    ("POST", "/oauth/introspect"): "gateway",
    ("GET", "/metrics"): "metrics",
    ("DELETE", "/v1/sessions/{sid}"): "admin",
    ("GET", "/v1/users/{sub}/sessions"): "admin",
    ("DELETE", "/v1/users/{sub}/sessions"): "admin",
    ("POST", "/v1/revocations"): "admin",
    ("GET", "/v1/revocations"): "events",
    ("GET", "/v1/revocations/events"): "events",
}
#: The scope every fuzz session is granted; positive refreshes ask for a part of it.
GRANTED_SCOPE: Final = "read write"


def base_url() -> str:
    return os.environ["TOKENWARD_FUZZ_URL"]


def basic(client_id: str) -> str:
    raw = f"{client_id}:{CLIENTS[client_id][0]}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _call(method: str, path: str, *, headers: dict[str, str], body: bytes | None = None) -> Any:
    request = urllib.request.Request(base_url() + path, data=body, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback test service
        return json.loads(resp.read())


def login(sub: str) -> dict[str, Any]:
    """A fresh session for ``sub``: the 201 token pair."""
    body = json.dumps({"sub": sub, "scope": GRANTED_SCOPE, "device": {"name": "fuzz", "ip": "127.0.0.1"}})
    pair: dict[str, Any] = _call(
        "POST",
        "/v1/sessions",
        headers={"Authorization": basic("login"), "Content-Type": "application/json"},
        body=body.encode(),
    )
    return pair


def cursor() -> str:
    """The deployment's current events cursor."""
    snapshot: dict[str, Any] = _call("GET", "/v1/revocations", headers={"Authorization": basic("events")})
    return str(snapshot["cursor"])


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n


_turn = _Counter()


def _positive(case: Case) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _stateful(case: Case) -> bool:
    # The stateful phase fills ids and tokens from earlier responses (the document's links).
    return case.meta is not None and case.meta.phase.name == TestPhase.STATEFUL


@schemathesis.auth(refresh_interval=None)
class TokenwardAuth:
    """Basic for client endpoints; a new session's access token for end-user and gateway calls."""

    def get(self, case: Case, context: AuthContext) -> dict[str, str] | None:
        operation = context.operation
        path, method = operation.path, operation.method.upper()
        if path.startswith(("/v1/me/", "/v1/authz")):
            # A fresh session per case: DELETE /v1/me/sessions ends every session of its user.
            pair = login("fuzz-me" if path.startswith("/v1/me/") else "fuzz-gateway")
            return {"Authorization": f"Bearer {pair['access_token']}", "sid": pair["session_id"]}
        client = CLIENT_FOR.get((method, path))
        return {"Authorization": basic(client)} if client else None

    def set(self, case: Case, data: dict[str, str], context: AuthContext) -> None:
        case.headers["Authorization"] = data["Authorization"]
        if context.operation.path == "/v1/me/sessions/{sid}" and _positive(case) and not _stateful(case):
            # Log out the caller's own device: the 204 path, not only 404 for a made-up id.
            case.path_parameters = {**(case.path_parameters or {}), "sid": data["sid"]}


@schemathesis.hook
def before_call(context: HookContext, case: Case, kwargs: dict[str, Any]) -> None:
    """Positive cases that name server state get real state of this deployment."""
    if not _positive(case) or _stateful(case):
        return
    path, method = case.operation.path, case.method.upper()
    body = case.body if isinstance(case.body, dict) else None
    if (method, path) == ("POST", "/v1/sessions") and body is not None and isinstance(sub := body.get("sub"), str):
        # The sub rule has parts no pattern can say (NFC, format characters, a byte bound).
        sub = unicodedata.normalize("NFC", sub)
        body["sub"] = sub if is_safe_sub(sub) else "fuzz-sub"
    elif (method, path) == ("POST", "/oauth/token") and body is not None:
        body["refresh_token"] = login("fuzz-refresh")["refresh_token"]
        if "scope" in body:
            body["scope"] = "read"
    elif (method, path) in {("POST", "/oauth/revoke"), ("POST", "/oauth/introspect")} and body is not None:
        # Take turns: a live refresh token, a live access token, and whatever was generated.
        turn = _turn.next() % 3
        if turn < 2:
            pair = login("fuzz-holder")
            body["token"] = pair["refresh_token" if turn == 0 else "access_token"]
    elif (method, path) == ("DELETE", "/v1/sessions/{sid}"):
        # An existing session to end: the 204 path, not only 404 for a made-up id.
        case.path_parameters = {**(case.path_parameters or {}), "sid": login("fuzz-admin")["session_id"]}
    elif (method, path) == ("POST", "/v1/revocations") and body is not None:
        for kind in ("jti", "sid"):
            ident = body.get(kind)
            if isinstance(ident, str) and len(ident) >= 2:
                # ids name their partition in their first two hex digits; this deployment has one.
                body[kind] = "00" + ident[2:]
    elif path in {"/v1/revocations", "/v1/revocations/events"}:
        if case.query and "since" in case.query:
            case.query["since"] = cursor()
        if case.headers and "Last-Event-ID" in case.headers:
            case.headers["Last-Event-ID"] = cursor()
