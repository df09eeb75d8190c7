"""A script on the app's own origin against the HttpOnly refresh cookie (issue 15, finding 1).

The page cannot read the cookie, but it can set cookies of its own on ``path=/oauth``: enough
of them push the ``Cookie`` header that Chromium sends to ``/oauth/token`` past the service's
header limit. Over HTTP/2 the browser sends each cookie as its own field (RFC 9113 §8.2.3), so
nginx's per-field limit never sees the whole header; nginx joins them into one line for the
upstream. Before the fix, aiohttp's own 400 answer echoed the start of that line, the refresh
token first (the oldest cookie of the longest path goes first), readable by the page.

The stack is the deployment's: Debian's Chromium over TLS and HTTP/2 to nginx running
``deploy/nginx/browser-sessions.conf``, the demo app behind it as the login backend, a real
``tokenward serve`` in cookie mode on a real Redis.
"""

from __future__ import annotations

import re
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Response

from service.keys import KeyRing
from tests.browser.conftest import demo_app_env
from tests.browser.pages import COOKIE, sign_in
from tests.conftest import CLIENT_SECRETS, basic
from tests.support.browser import ResourceServerProcess
from tests.support.processes import Nginx, ServiceProcess, write_config
from tests.support.redis_servers import RedisServer, free_port
from tests.support.tls import self_signed

# Chromium keeps at most 4096 bytes of name and value per cookie. With the refresh cookie,
# 3, 5 and 7 of these make Cookie headers of ~12, ~20 and ~28 kB: past aiohttp's default
# 8190-byte field limit, past twice that, and just inside what nginx forwards over HTTP/2
# (large_client_header_buffers, 4 x 8k by default, bounds the whole header list there).
PADDING_STEPS = (3, 5, 7)
PADDING_BYTES = 4000
FRAGMENT = 12  # the length of a secret's piece that must never come back
TOKEN_LIKE = re.compile(r"twr_[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")

SET_PADDING = """([count, size]) => {
  const values = [];
  for (let i = 0; i < count; i++) {
    const bytes = crypto.getRandomValues(new Uint8Array(size / 2));
    const value = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    document.cookie = `pad${i}=${value}; path=/oauth; Secure; SameSite=Strict`;
    values.push(value);
  }
  return values;
}"""
# What a script on the page can do with an answer: everything but Set-Cookie (never shown to scripts).
POST_FROM_PAGE = """async ([path, body]) => {
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST", credentials: "include", cache: "no-store",
      headers: {"Content-Type": "application/x-www-form-urlencoded", "X-Tokenward-CSRF": "1"},
      body,
    });
  } catch (err) {
    return {status: 0, headers: "", body: String(err)};
  }
  return {status: resp.status, headers: [...resp.headers].map(([k, v]) => `${k}: ${v}`).join("\\n"),
          body: await resp.text()};
}"""
CLEAR_PADDING = """(count) => {
  for (let i = 0; i < count; i++) document.cookie = `pad${i}=; path=/oauth; Max-Age=0; Secure`;
}"""


@dataclass(frozen=True)
class Proxied:
    """The app's origin (nginx, which also reaches Tokenward's browser endpoints) and
    Tokenward's own address behind it (for the test's administrator calls)."""

    app: str
    tokenward: ServiceProcess


@pytest.fixture(scope="module")
def proxied(keyring: KeyRing) -> Iterator[Proxied]:
    """Redis, Tokenward in cookie mode, the demo app, and nginx with TLS + HTTP/2 in front of both."""
    redis = RedisServer().start()
    directory = Path(tempfile.mkdtemp(prefix="tw-padding-"))
    tokenward = ServiceProcess(
        {
            "TOKENWARD_REDIS_URL": redis.url,
            **write_config(directory, keyring, CLIENT_SECRETS),
            # Long enough that the demo client never refreshes by itself during a test.
            "TOKENWARD_ACCESS_TTL": "300",
        }
    )
    resource = ResourceServerProcess(demo_app_env(tokenward.url, redis.url), port=free_port())
    nginx = Nginx(tokenward.url, resource.url, "browser-sessions.conf", tls=self_signed(directory))
    # The browser reaches Tokenward only through the app's origin, as in the deployment.
    tokenward.env["TOKENWARD_COOKIE_ORIGINS"] = nginx.url
    resource.env["PUBLIC_TOKENWARD_URL"] = nginx.url
    try:
        tokenward.start()
        resource.start()
        nginx.start()
        yield Proxied(nginx.url, tokenward)
    finally:
        nginx.stop()
        resource.stop()
        tokenward.stop()
        redis.close()


@pytest.fixture(autouse=True)
def _fresh_demo_user() -> None:
    """The directory's fixture of this name signs out the demo user of the other stack (which
    this module does not start); here ``signed_in`` signs out this stack's."""


@pytest.fixture(name="context")
async def _context(browser: Browser, proxied: Proxied) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(ignore_https_errors=True)
    try:
        yield context
    finally:
        await context.close()


async def signed_in(context: BrowserContext, proxied: Proxied, http: aiohttp.ClientSession) -> tuple[Page, str]:
    """The demo page through nginx, signed in; the refresh token as Chromium keeps it."""
    async with http.delete(f"{proxied.tokenward.url}/v1/users/demo/sessions", headers=basic("admin")) as resp:
        assert resp.status == 200, await resp.text()
    page = await context.new_page()
    page.on("console", lambda msg: print(f"console.{msg.type}: {msg.text}"))
    await page.goto(f"{proxied.app}/demo")
    await page.wait_for_function("window.demo && window.demo.ready")
    await page.evaluate("demo.ready")
    await sign_in(page, device="padding target")
    (token,) = [c["value"] for c in await context.cookies() if c["name"] == COOKIE]
    assert token.startswith("twr_")
    return page, token


def fragments(secret: str) -> set[str]:
    """Every piece of ``secret`` that must not come back."""
    return {secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}


def leaks(text: str, secrets_sent: list[str]) -> list[str]:
    """The pieces of ``secrets_sent`` that ``text`` contains (as sets of windows: a log of a
    few hundred kB against ~30 kB of padding stays quick)."""
    seen = fragments(text)
    return sorted(piece for secret in secrets_sent for piece in fragments(secret) & seen)


async def wire_view(response: Response) -> tuple[str, list[str]]:
    """Everything but the body of an answer as the network saw it, and its Set-Cookie values."""
    pairs = await response.headers_array()
    head = "\n".join(f"{h['name']}: {h['value']}" for h in pairs)
    return head, [h["value"] for h in pairs if h["name"].lower() == "set-cookie"]


def unset(head: str) -> str:
    """Header lines but Set-Cookie, which ``unintended_cookies`` judges (a rotation's new
    cookie rightly names the same session)."""
    return "\n".join(line for line in head.splitlines() if not line.lower().startswith("set-cookie:"))


def unintended_cookies(set_cookies: list[str], status: int, path: str) -> list[str]:
    """Set-Cookie values an answer did not mean to send: only our refresh cookie may be set,
    to a new token on a successful rotation, or cleared (empty, Max-Age=0) otherwise."""
    wrong = []
    for value in set_cookies:
        name, _, rest = value.partition("=")
        token = rest.split(";", 1)[0]
        clearing = token == "" and "max-age=0" in value.lower()
        rotated = status == 200 and path == "/oauth/token" and TOKEN_LIKE.fullmatch(token) is not None
        if name != COOKIE or not (clearing or rotated):
            wrong.append(value)
    return wrong


async def attempts(http: aiohttp.ClientSession, proxied: Proxied, candidates: set[str]) -> dict[str, int]:
    """Each token-like string (and each with its tag completed) tried as the refresh cookie."""
    tried: dict[str, int] = {}
    for found in sorted(candidates):
        parts = found.split(".")
        forms = {found}
        if len(parts) == 4:
            forms.add(".".join([*parts[:3], (parts[3] + "0" * 16)[:16]]))
        for form in forms:
            async with http.post(
                f"{proxied.app}/oauth/token",
                data={"grant_type": "refresh_token"},
                headers={"Cookie": f"{COOKIE}={form}", "Origin": proxied.app, "X-Tokenward-CSRF": "1"},
                ssl=False,
            ) as resp:
                tried[form] = resp.status
    return tried


async def test_padding_cookies_never_bring_back_the_refresh_token(
    context: BrowserContext, proxied: Proxied, http: aiohttp.ClientSession
) -> None:
    """Padding cookies on /oauth past the header limit; the answers to /oauth/token and
    /oauth/revoke, whatever their status, hold no piece of any cookie sent, set no cookie
    they did not mean to, and nothing the page can read from them refreshes.

    The jar grows in steps up to what nginx forwards over HTTP/2 (about 32 kB of headers), so
    the service's header limit is crossed wherever it lies below that."""
    page, _ = await signed_in(context, proxied, http)
    steps = [(count, "/oauth/token", "grant_type=refresh_token") for count in PADDING_STEPS]
    steps.append((PADDING_STEPS[-1], "/oauth/revoke", "token_type_hint=refresh_token"))
    seen: list[dict[str, Any]] = []
    all_sent: list[str] = []
    for count, path, body in steps:
        padding: list[str] = await page.evaluate(SET_PADDING, [count, PADDING_BYTES])
        sent = [c["value"] for c in await context.cookies() if c["name"] == COOKIE] + padding
        all_sent.extend(sent)
        async with page.expect_request(f"{proxied.app}{path}") as info:
            answer = await page.evaluate(POST_FROM_PAGE, [path, body])
        request = await info.value
        cookie_header = (await request.all_headers()).get("cookie", "")
        response = await request.response()
        head, set_cookies = await wire_view(response) if response is not None else ("", [])
        seen.append(
            {
                "path": path,
                "cookie_header_bytes": len(cookie_header),
                "status": answer["status"],
                "page_body": answer["body"][:200],
                "leaks": leaks(answer["body"] + "\n" + unset(head), sent),
                "unintended_cookies": unintended_cookies(set_cookies, answer["status"], path),
                "token_like": TOKEN_LIKE.findall(answer["body"] + "\n" + answer["headers"]),
            }
        )
    for row in seen:
        print(f"\n{row}")
    # The attack did reach past the service's old limit: the browser sent the padded jar.
    assert max(row["cookie_header_bytes"] for row in seen) > 3 * 8190, seen
    # Whatever the page can read is then tried as a refresh token from anywhere.
    used = await attempts(http, proxied, {t for row in seen for t in row["token_like"]})
    print(f"token-like strings the page extracted, tried as refresh tokens: {used}")
    assert all(not (row["leaks"] or row["unintended_cookies"]) for row in seen), seen
    assert all(row["token_like"] == [] for row in seen), seen
    assert 200 not in used.values(), used

    # Nor did any of it reach the service's log (aiohttp's own error lines quoted the header).
    logged = leaks(proxied.tokenward.log.read_text(errors="replace"), all_sent)
    assert logged == [], logged

    # Nothing else happened to the session: once the padding is gone it refreshes, unless the
    # service took the padded logout as the logout it was (a limit above what nginx forwards).
    await page.evaluate(CLEAR_PADDING, PADDING_STEPS[-1])
    refreshed = await page.evaluate(POST_FROM_PAGE, ["/oauth/token", "grant_type=refresh_token"])
    assert refreshed["status"] == (400 if seen[-1]["status"] == 200 else 200), refreshed


async def test_error_answers_set_no_cookie_they_did_not_mean(
    context: BrowserContext, proxied: Proxied, http: aiohttp.ClientSession
) -> None:
    """Every answer of the browser endpoints, errors included, carries no piece of the cookies
    the browser sent and sets only the refresh cookie: a new one on a rotation, else a clearing one."""
    page, token = await signed_in(context, proxied, http)
    marker = secrets.token_hex(16)
    await page.evaluate(f"document.cookie = 'other={marker}; path=/oauth; Secure'")
    cases = [
        ("/oauth/token", "grant_type=password"),  # unsupported_grant_type
        ("/oauth/token", "grant_type=refresh_token&grant_type=refresh_token"),  # repeated parameter
        ("/oauth/token", "grant_type=refresh_token&scope=%00"),  # a control byte
        ("/oauth/token", "grant_type=refresh_token&refresh_token=twr_" + "0" * 40),  # two token sources
        ("/oauth/revoke", "token=twr_" + "0" * 40),  # a token that is not one
        ("/oauth/token", "grant_type=refresh_token"),  # a real rotation: the one Set-Cookie allowed
        ("/oauth/revoke", "token_type_hint=refresh_token"),  # logout: a clearing cookie
        ("/oauth/token", "grant_type=refresh_token"),  # after logout: invalid_grant
    ]
    rows = []
    for path, body in cases:
        async with page.expect_response(f"{proxied.app}{path}") as info:
            answer = await page.evaluate(POST_FROM_PAGE, [path, body])
        response = await info.value
        head, set_cookies = await wire_view(response)
        jar = [c["value"] for c in await context.cookies() if c["name"] == COOKIE]
        sent = [token, marker]
        rows.append(
            {
                "case": f"{path} {body[:60]}",
                "status": answer["status"],
                "leaks": leaks(answer["body"] + "\n" + unset(head), sent),
                "unintended_cookies": unintended_cookies(set_cookies, answer["status"], path),
                "set_cookie": [v.split(";", 1)[0][:40] for v in set_cookies],
            }
        )
        token = jar[0] if jar else token
    for row in rows:
        print(f"\n{row}")
    assert all(not row["leaks"] and not row["unintended_cookies"] for row in rows), rows
    statuses = [row["status"] for row in rows]
    assert statuses[5] == 200 and statuses[6] == 200 and statuses[7] in (400, 401), statuses
    assert all(400 <= status < 500 for status in statuses[:5]), statuses


def altered(token: str) -> set[str]:
    """``token`` with its tag cut (at 0, 8, 9 or 15 characters) and zero-filled, or its last
    character changed: what the echo used to show, completed by guesswork."""
    head, _, tag = token.rpartition(".")
    forged = {f"{head}.{(tag[:kept] + '0' * 16)[:16]}" for kept in (0, 8, 9, 15)}
    forged.add(f"{head}.{tag[:15]}{'1' if tag[15] != '1' else '2'}")
    forged.discard(token)  # a tag that happens to end in zeros is the real one
    return forged


async def test_the_echoed_prefix_with_any_tag_refreshes_nothing(
    context: BrowserContext, proxied: Proxied, http: aiohttp.ClientSession
) -> None:
    """Finding 1(c): what the echo used to show (the token up to part of its tag), completed
    with any tag, is refused. A refresh token counts only whole: for the current generation,
    and for the previous one within the retry grace (which hands out the same successor)."""
    page, token = await signed_in(context, proxied, http)
    rotated = await page.evaluate(POST_FROM_PAGE, ["/oauth/token", "grant_type=refresh_token"])
    assert rotated["status"] == 200, rotated
    (current,) = [c["value"] for c in await context.cookies() if c["name"] == COOKIE]
    in_grace = await attempts(http, proxied, altered(token))
    latest = await attempts(http, proxied, altered(current))
    print(f"\nthe previous token (in grace) with altered tags: {in_grace}")
    print(f"the current token with altered tags: {latest}")
    assert len(in_grace) == len(latest) == 5 and 200 not in {*in_grace.values(), *latest.values()}, (in_grace, latest)


async def test_what_nginx_forwards_is_what_its_config_says(
    context: BrowserContext, proxied: Proxied, http: aiohttp.ClientSession
) -> None:
    """The limits deploy/nginx/browser-sessions.conf documents: over HTTP/1.1 one Cookie line
    fits an 8k buffer (a value of 8182 bytes reaches Tokenward, 8183 gets nginx's own 400); over
    HTTP/2 the jar reaches Tokenward as one line of ~28 kB (the padding test) and past the 32k
    header list nginx refuses the request itself. Neither refusal echoes anything."""
    reached = {}
    for size in (8182, 8183):
        cookie = "a=" + secrets.token_hex(size)[: size - 2]
        async with http.post(
            f"{proxied.app}/oauth/token", headers={"Cookie": cookie, "Origin": proxied.app}, ssl=False
        ) as resp:
            text = await resp.text()
            reached[size] = (resp.status, "Request Header Or Cookie Too Large" in text, leaks(text, [cookie]))
    print(f"\nHTTP/1.1 Cookie value bytes -> (status, nginx's own refusal, leaks): {reached}")
    assert reached[8182][:2] != (400, True) and reached[8183] == (400, True, []), reached

    page, token = await signed_in(context, proxied, http)
    padding: list[str] = await page.evaluate(SET_PADDING, [9, PADDING_BYTES])
    answer = await page.evaluate(POST_FROM_PAGE, ["/oauth/token", "grant_type=refresh_token"])
    print(f"HTTP/2 with a ~36 kB jar: {answer['status']} {answer['body'][:120]!r}")
    assert answer["status"] in (0, 400) and not leaks(answer["body"], [token, *padding]), answer
    await page.evaluate(CLEAR_PADDING, 9)
