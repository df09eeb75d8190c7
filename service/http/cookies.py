"""Cookie mode: a browser's refresh token in an HttpOnly cookie, and the CSRF checks guarding it.

The cookie is ``__Secure-tokenward-refresh``: host-only (no ``Domain``), ``HttpOnly``,
``Secure``, ``SameSite=Strict`` (or Lax), ``Path=/oauth`` so it travels only to the token and
revoke endpoints, ``Max-Age`` = the session's remaining lifetime. Not ``__Host-``: that prefix
forces ``Path=/`` and the refresh token would ride along with every request to the host.

A call is cookie-authenticated when cookie mode is on, the form names no token, and the
request carries the cookie or the CSRF header. Such a call needs ``X-Tokenward-CSRF: 1`` (a
header no cross-site form or simple request can set) AND an ``Origin`` on
``TOKENWARD_COOKIE_ORIGINS``; the check runs before anything reads Redis, so a refused call
leaves the session exactly as it was. A token in both the cookie and the form is refused:
which one the caller meant is a guess.

Two different cookies of the name are refused too. Only a host-only cookie for this path is
ever set here, so a second one was planted by another host of the same site (``Domain=`` the
parent, a longer ``Path`` to be sent first): the "cookie tossing" that ``__Host-`` would have
prevented. Refusing turns a planted session (the victim signed into the attacker's account)
into a sign-out, which a planted cookie could cause anyway.

An ``invalid_grant`` answer never clears the cookie: answers can overtake each other, and a
stale tab's refusal must not delete the successor cookie another tab's answer just set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import orjson
from aiohttp import web

from ..config import Settings
from ..errors import CsrfRefused, InvalidGrant, InvalidRequest
from ..sessions import TokenPair

COOKIE_NAME: Final = "__Secure-tokenward-refresh"
COOKIE_PATH: Final = "/oauth"
CSRF_HEADER: Final = "X-Tokenward-CSRF"
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def read_cookies(request: web.Request) -> tuple[str, ...]:
    """Every distinct value of the refresh-token cookie, in the order sent.

    Parsed here because ``request.cookies`` keeps one value per name and hides a planted twin.
    """
    values: dict[str, None] = {}
    for header in request.headers.getall("Cookie", ()):
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name == COOKIE_NAME and value:
                values[value] = None
    return tuple(values)


def check_csrf(request: web.Request, settings: Settings) -> None:
    """Refuse (CsrfRefused) unless the CSRF header is there and the Origin is allowed."""
    if request.headers.getall(CSRF_HEADER, []) != ["1"]:
        raise CsrfRefused(f"a cookie-authenticated call needs the header {CSRF_HEADER}: 1")
    origins = request.headers.getall("Origin", [])
    if len(origins) != 1:
        raise CsrfRefused("a cookie-authenticated call needs one Origin header")
    if origins[0] not in settings.cookie_origins:
        raise CsrfRefused("this origin may not use the session cookie")


def cookie_tokens(
    request: web.Request, settings: Settings, form: Mapping[str, str], field: str
) -> tuple[str, ...] | None:
    """The refresh-token cookies of a cookie-authenticated call, after the CSRF checks.

    None when the call is not cookie-authenticated (cookie mode off, or no cookie and no
    CSRF header, or the token in the form's ``field``); empty when it passed the checks but
    carries no cookie (a browser whose cookie expired or was cleared); more than one value
    only when a cookie was planted (the caller decides: refresh refuses, logout ends all).
    """
    if not settings.cookie_mode:
        return None
    found = read_cookies(request)
    if field in form:
        if found:
            raise InvalidRequest(f"a refresh token in both the cookie and the form's {field}: send one")
        return None
    if not found and CSRF_HEADER not in request.headers:
        return None
    check_csrf(request, settings)
    return found


def one_cookie(found: tuple[str, ...]) -> str:
    """The refresh token to spend; refuses none (signed out) and several (a planted twin)."""
    if not found:
        raise InvalidGrant("no session cookie: sign in again")
    if len(found) > 1:
        raise InvalidRequest(f"several {COOKIE_NAME} cookies: one was set by another host of this site")
    return found[0]


def set_cookie_header(settings: Settings, value: str, max_age: int) -> str:
    """The ``Set-Cookie`` value carrying ``value`` for ``max_age`` seconds (0 deletes it)."""
    return (
        f"{COOKIE_NAME}={value}; Path={COOKIE_PATH}; Max-Age={max(max_age, 0)}; "
        f"HttpOnly; Secure; SameSite={settings.cookie_samesite}"
    )


def _json(body: dict[str, object], status: int) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=NO_STORE)


def login_response(pair: TokenPair, settings: Settings) -> web.Response:
    """201 for ``POST /v1/sessions`` with cookie delivery: the usual body minus the refresh token."""
    resp = _json(
        {
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
            "refresh_expires_in": pair.refresh_expires_in,
            "session_id": pair.session_id,
            "scope": pair.scope,
        },
        201,
    )
    resp.headers.add("Set-Cookie", set_cookie_header(settings, pair.refresh_token, pair.refresh_expires_in))
    return resp


def refresh_response(pair: TokenPair, settings: Settings) -> web.Response:
    """200 for a refresh by cookie: only the access token in the body, the successor in the cookie."""
    resp = _json(
        {"access_token": pair.access_token, "token_type": "Bearer", "expires_in": pair.expires_in, "scope": pair.scope},
        200,
    )
    resp.headers.add("Set-Cookie", set_cookie_header(settings, pair.refresh_token, pair.refresh_expires_in))
    return resp


def logout_response(settings: Settings) -> web.Response:
    """200 for a revoke by cookie: the cookie is deleted (``Max-Age=0``)."""
    resp = web.Response(status=200, headers=NO_STORE)
    resp.headers.add("Set-Cookie", set_cookie_header(settings, "", 0))
    return resp
