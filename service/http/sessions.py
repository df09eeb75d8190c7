"""Session endpoints for the login backend, the end user and administrators."""

from __future__ import annotations

import ipaddress
from typing import Any

import orjson
from aiohttp import web

from .. import state
from ..errors import InvalidRequest
from ..sdk.identity import UnsafeSub, check_sub
from ..sessions import Device
from ..tokens import RESERVED_CLAIMS
from . import auth, cookies, parsing
from .oauth import token_response

MAX_CLAIMS_BYTES = 2048


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(data), content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _sub(value: str) -> str:
    if not value or len(value) > 255 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidRequest("sub must be 1-255 printable characters")
    return value


def _login_sub(value: str) -> str:
    """A new session's sub must be a safe identifier (``sdk.identity``: one rule, SDK and service).

    The older, wider rule (``_sub``) still addresses sessions opened before this one applied.
    """
    try:
        return check_sub(value)
    except UnsafeSub as exc:
        raise InvalidRequest(exc.reason) from None


def _claims(data: dict[str, Any]) -> dict[str, Any] | None:
    claims = data.get("claims")
    if claims is None:
        return None
    if not isinstance(claims, dict):
        raise InvalidRequest("claims must be a JSON object")
    if any(not name or not parsing.printable(name) for name in claims):
        raise InvalidRequest("a claim name is empty or holds a control character")
    reserved = sorted(RESERVED_CLAIMS & claims.keys())
    if reserved:
        raise InvalidRequest(f"claims may not set reserved names: {', '.join(reserved)}")
    try:
        encoded = orjson.dumps(claims)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255), though it reads 1024
        raise InvalidRequest("claims nest too deeply") from None
    if len(encoded) > MAX_CLAIMS_BYTES:
        raise InvalidRequest(f"claims must encode to at most {MAX_CLAIMS_BYTES} bytes")
    return claims


def _device(data: dict[str, Any]) -> Device:
    raw = data.get("device")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidRequest("device must be a JSON object")
    ip = parsing.string(raw, "ip", max_len=45)
    if ip:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise InvalidRequest("device.ip is not an IP address") from None
    return Device(
        name=parsing.string(raw, "name", max_len=100),
        user_agent=parsing.string(raw, "user_agent", max_len=256),
        ip=ip,
    )


async def create(request: web.Request) -> web.Response:
    """POST /v1/sessions (scope sessions:write): log a user in."""
    client = await auth.client(request, "sessions:write")
    settings = request.app[state.SETTINGS]
    data = await parsing.json_object(request, settings.max_body_bytes)
    sub = _login_sub(parsing.string(data, "sub", required=True, max_len=255))
    delivery = parsing.string(data, "delivery", max_len=16) or "body"
    if delivery not in ("body", "cookie"):
        raise InvalidRequest("delivery must be body or cookie")
    if delivery == "cookie" and not settings.cookie_mode:
        raise InvalidRequest("cookie delivery is off on this server (TOKENWARD_COOKIE_ORIGINS is not set)")
    raw_scope = parsing.string(data, "scope", max_len=1024)
    pair = await request.app[state.SESSIONS].create(
        sub=sub,
        client_id=client.id,
        scope=parsing.scope(raw_scope) if raw_scope else "",
        claims=_claims(data),
        remember_me=parsing.boolean(data, "remember_me"),
        device=_device(data),
    )
    if delivery == "cookie":
        return cookies.login_response(pair, settings)
    return token_response(pair, status=201)


async def my_sessions(request: web.Request) -> web.Response:
    """GET /v1/me/sessions."""
    claims = await auth.user(request)
    rows = await request.app[state.SESSIONS].list(claims.sub, current_sid=claims.sid)
    return _json({"sessions": [r.as_dict() for r in rows]})


async def end_my_session(request: web.Request) -> web.Response:
    """DELETE /v1/me/sessions/{sid}: log out one of my devices."""
    claims = await auth.user(request)
    await request.app[state.SESSIONS].end(request.match_info["sid"], owner=claims.sub, reason="logout")
    return web.Response(status=204)


async def end_my_sessions(request: web.Request) -> web.Response:
    """DELETE /v1/me/sessions[?keep_current=true]: log out everywhere (or the other devices)."""
    claims = await auth.user(request)
    keep = parsing.query(request, "keep_current")
    keep = "false" if keep is None else keep.lower()
    if keep not in ("true", "false", "1", "0"):
        raise InvalidRequest("keep_current must be true or false")
    keep_sid = claims.sid if keep in ("true", "1") else ""
    ended = await request.app[state.SESSIONS].end_all(claims.sub, keep_sid=keep_sid, reason="logout_all")
    return _json({"ended": ended})


async def user_sessions(request: web.Request) -> web.Response:
    """GET /v1/users/{sub}/sessions (scope admin)."""
    await auth.client(request, "admin")
    sub = _sub(request.match_info["sub"])
    rows = await request.app[state.SESSIONS].list(sub)
    return _json({"sessions": [r.as_dict() for r in rows]})


async def end_session(request: web.Request) -> web.Response:
    """DELETE /v1/sessions/{sid} (scope admin)."""
    await auth.client(request, "admin")
    await request.app[state.SESSIONS].end(request.match_info["sid"], reason="admin")
    return web.Response(status=204)


async def end_user_sessions(request: web.Request) -> web.Response:
    """DELETE /v1/users/{sub}/sessions (scope admin): log out everywhere, e.g. after a password change."""
    await auth.client(request, "admin")
    sub = _sub(request.match_info["sub"])
    ended = await request.app[state.SESSIONS].end_all(sub, reason="admin_logout_all")
    return _json({"ended": ended})


async def revocations(request: web.Request) -> web.Response:
    """POST /v1/revocations (scope admin): ``{jti, exp} | {sid} | {sub}`` with a ``reason`` kept for audit."""
    await auth.client(request, "admin")
    data = await parsing.json_object(request, request.app[state.SETTINGS].max_body_bytes)
    kinds = [k for k in ("jti", "sid", "sub") if k in data]
    if len(kinds) != 1:
        raise InvalidRequest("give exactly one of jti, sid or sub")
    kind = kinds[0]
    ident = parsing.string(data, kind, required=True, max_len=255)
    reason = parsing.string(data, "reason", max_len=200) or "admin"
    exp = data.get("exp", 0)
    if isinstance(exp, float) and exp.is_integer():
        # JSON has one number type: 1795418393.0 is the same expiry as 1795418393.
        exp = int(exp)
    if kind == "jti" and (not isinstance(exp, int) or isinstance(exp, bool) or not 0 < exp < 2**41):
        raise InvalidRequest("exp (the token's expiry, epoch seconds) is required with jti")
    if kind == "sub":
        ident = _sub(ident)
    # The audit line (who, what, why) is written where the revocation is acknowledged.
    await request.app[state.REVOKER].revoke_id(kind, ident, exp=exp, reason=reason)
    return _json({"revoked": kind}, status=200)
