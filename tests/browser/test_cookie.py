"""The refresh-token cookie as Chromium keeps it, and what other origins can do with it (CSRF)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Request

from tests.browser.conftest import Stack
from tests.browser.pages import (
    COOKIE,
    answered,
    open_demo,
    revocation_reasons,
    sessions,
    sign_in,
    state,
    stats,
    wait_until,
)
from tests.support.redis_servers import free_port

DAY = 86400  # TOKENWARD_REFRESH_IDLE_TTL's default: a new session's remaining lifetime

ATTACKER_PAGE = "<!doctype html><title>elsewhere</title>"
SUBMIT_FORM = """([action, fields]) => {
  const form = document.createElement("form");
  form.method = "POST";
  form.action = action;
  form.target = "_blank";
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement("input");
    input.name = name;
    input.value = value;
    form.append(input);
  }
  document.body.append(form);
  form.submit();
}"""
FETCH_WITH_HEADER = """(url) => fetch(url, {
  method: "POST", credentials: "include",
  headers: {"Content-Type": "application/x-www-form-urlencoded", "X-Tokenward-CSRF": "1"},
  body: "grant_type=refresh_token",
}).then(r => "answered " + r.status, e => "refused: " + e)"""
FETCH_NO_CORS = """(url) => fetch(url, {
  method: "POST", mode: "no-cors", credentials: "include",
  headers: {"Content-Type": "application/x-www-form-urlencoded"},
  body: "token_type_hint=refresh_token",
}).then(r => r.type, e => "refused: " + e)"""


@pytest.fixture(name="attacker_port")
async def _attacker_port() -> AsyncIterator[int]:
    """A real server on loopback for the other origin's page (a page Playwright made up would
    count as a public address, and Chromium's local-network protection would stop its fetches
    before CORS had a say)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=ATTACKER_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def test_cookie_flags_as_the_browser_keeps_them(browser: Browser, stack: Stack) -> None:
    """HttpOnly, Secure, SameSite=Strict, host-only, Path=/oauth, Max-Age = the session's life;
    page scripts cannot read it even on its own path, and it never travels outside /oauth."""
    context = await browser.new_context()
    page = await open_demo(context, stack)
    sent: list[Request] = []
    context.on("request", lambda r: sent.append(r))
    await sign_in(page, device="cookie jar")
    (cookie,) = [c for c in await context.cookies() if c["name"] == COOKIE]
    print(f"\ncookie as Chromium keeps it: { {k: v for k, v in cookie.items() if k != 'value'} }")
    assert cookie["domain"] == "127.0.0.1"  # host-only: no Domain attribute (a domain cookie shows a leading dot)
    assert cookie["path"] == "/oauth"
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Strict"
    assert abs(cookie["expires"] - (time.time() + DAY)) < 120

    assert COOKIE not in await page.evaluate("document.cookie")
    # On a page under /oauth itself, where a script-readable cookie of that path would show.
    probe = await context.new_page()
    await probe.route(
        f"{stack.tw}/oauth/probe", lambda r: r.fulfill(body="<title>probe</title>", content_type="text/html")
    )
    await probe.goto(f"{stack.tw}/oauth/probe")
    assert await probe.evaluate("document.cookie = 'probe=1; path=/oauth'; document.cookie") == "probe=1"

    # It goes to the token endpoint, and not to the API or to /v1 on the same host.
    await page.evaluate("demo.callApi()")
    await page.evaluate("demo.loadDevices()")
    await page.evaluate("demo.tw.logout()")
    carried: dict[str, bool] = {}
    for request in sent:
        path = request.url.split("/", 3)[3].split("?")[0]
        carries = COOKIE in (await request.all_headers()).get("cookie", "")
        carried[path] = carried.get(path, False) or carries
    print(f"cookie carried by path: {carried}")
    assert carried["oauth/revoke"] is True
    assert carried["api/hello"] is False
    assert carried["v1/me/sessions"] is False
    assert carried["demo/login"] is False
    assert [c for c in await context.cookies() if c["name"] == COOKIE] == []  # logout deleted it
    await context.close()


@pytest.mark.parametrize("site", ["same-site", "cross-site"])
async def test_another_origin_cannot_refresh_or_log_out(
    browser: Browser, stack: Stack, http: aiohttp.ClientSession, site: str, attacker_port: int
) -> None:
    """From a page of another origin (same site: 127.0.0.1 on another port, where SameSite does
    not help and the browser does send the cookie; cross site: localhost), forms and fetches
    cannot refresh or log out; the session and its cookie are untouched afterwards."""
    started = time.time()
    context = await browser.new_context()
    page = await open_demo(context, stack)
    await sign_in(page, device=f"csrf target ({site})")
    (sid,) = [s["id"] for s in await sessions(http, stack)]
    evil = f"http://{'127.0.0.1' if site == 'same-site' else 'localhost'}:{attacker_port}"
    attacker = await context.new_page()
    await attacker.goto(f"{evil}/")

    answers: list[dict[str, Any]] = []
    for path, fields in (
        ("/oauth/token", {"grant_type": "refresh_token"}),
        ("/oauth/revoke", {"token_type_hint": "refresh_token"}),
    ):
        # Submitted into a new window (a top-level navigation, where SameSite applies in full).
        url = f"{stack.tw}{path}"
        async with context.expect_event("response", lambda r, url=url: r.url == url) as info:
            await attacker.evaluate(SUBMIT_FORM, [url, fields])
        resp = await info.value
        answers.append(
            {
                "path": path,
                "status": resp.status,
                "set_cookie": "set-cookie" in await resp.all_headers(),
                "cookie_sent": COOKIE in (await resp.request.all_headers()).get("cookie", ""),
            }
        )
    print(f"\n[{site}] form posts from {evil}: {answers}")
    for answer in answers:
        assert answer["status"] in (400, 403) and not answer["set_cookie"], answer
        # Same site, the browser sends the cookie: only the server's Origin + header check stops it.
        assert answer["cookie_sent"] is (site == "same-site"), answer
        if site == "same-site":
            assert answer["status"] == 403, answer

    # A script there cannot add the CSRF header: its preflight is refused, the POST never leaves.
    async def refused_preflights() -> int:
        # A preflight matches no route of the table (the CORS middleware answers it).
        return (await answered(http, stack, "OPTIONS", "unmatched")).get(403, 0)

    preflights = await refused_preflights()
    posts = await answered(http, stack, "POST", "/oauth/token")
    result = await attacker.evaluate(FETCH_WITH_HEADER, f"{stack.tw}/oauth/token")
    assert result.startswith("refused: TypeError"), result
    assert await refused_preflights() == preflights + 1
    assert await answered(http, stack, "POST", "/oauth/token") == posts
    # A no-cors POST does leave (without the header); the server refuses it. (Chromium's opaque
    # response blocking may turn the refused JSON answer into a network error for the script.)
    async with attacker.expect_response(f"{stack.tw}/oauth/revoke") as info:
        seen = await attacker.evaluate(FETCH_NO_CORS, f"{stack.tw}/oauth/revoke")
        assert seen in ("opaque", "refused: TypeError: Failed to fetch"), seen
    assert (await info.value).status == (403 if site == "same-site" else 400)

    # Untouched: the same session, the same cookie, no revocation at all; the app refreshes on.
    assert [s["id"] for s in await sessions(http, stack)] == [sid]
    # The cookie's generation counts rotations: exactly the page's own refreshes (the page keeps
    # refreshing its 2-second tokens meanwhile), none by the other origin.
    (after,) = [c["value"] for c in await context.cookies(f"{stack.tw}/oauth/token") if c["name"] == COOKIE]
    assert int(after.split(".")[1]) == (await stats(page))["refreshes"]
    assert await revocation_reasons(stack, started) == []
    base = (await stats(page))["refreshes"]

    async def refreshed() -> bool:
        return bool((await stats(page))["refreshes"] > base)

    await wait_until(refreshed, within=10, what="the app's next refresh")
    assert await state(page) == "signed-in"
    assert await page.evaluate("demo.callApi()") == 200
    await context.close()
