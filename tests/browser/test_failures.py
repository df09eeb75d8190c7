"""The client's failure paths in Chromium: offline during a refresh, a refresh answer lost after
the server rotated, and a 401 from the API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from playwright.async_api import Browser, Route

from tests.browser.conftest import Stack
from tests.browser.pages import (
    COOKIE,
    count_api,
    open_demo,
    revocation_reasons,
    sessions,
    sign_in,
    state,
    stats,
    wait_until,
)

NEXT_TOKEN = "new Promise(r => demo.tw.addEventListener('token', r, {once: true}))"


async def test_offline_during_a_refresh_and_back(browser: Browser, stack: Stack, http: aiohttp.ClientSession) -> None:
    """The tab goes offline just before its refresh is due and stays away past the token's
    expiry; back online it refreshes (retries, not a logout) and is still signed in."""
    started = time.time()
    context = await browser.new_context()
    page = await open_demo(context, stack)
    await sign_in(page, device="offline tab")
    (sid,) = [s["id"] for s in await sessions(http, stack)]
    # Go offline right after a refresh, so the next one falls inside the offline spell.
    await page.evaluate(NEXT_TOKEN)
    base = await stats(page)
    await context.set_offline(True)
    await asyncio.sleep(3.5)
    offline = await stats(page)
    assert offline["retries"] > base["retries"], "no refresh was attempted while offline"
    assert offline["refreshes"] == base["refreshes"]
    assert await state(page) == "signed-in"
    await context.set_offline(False)

    async def refreshed() -> bool:
        return bool((await stats(page))["refreshes"] > base["refreshes"])

    await wait_until(refreshed, within=15, what="a refresh after coming back online")
    assert await state(page) == "signed-in"
    assert await page.evaluate("demo.callApi()") == 200
    assert [s["id"] for s in await sessions(http, stack)] == [sid]
    assert "refresh_token_reuse" not in await revocation_reasons(stack, started)
    await context.close()


async def test_refresh_answer_lost_after_the_server_rotated(
    browser: Browser, stack: Stack, http: aiohttp.ClientSession
) -> None:
    """The harder case: the refresh reaches the server, which rotates, and the answer is lost
    (the connection drops). The client retries with the old cookie and the grace window gives it
    the very successor the lost answer carried: still signed in, no theft alarm."""
    started = time.time()
    context = await browser.new_context()
    page = await open_demo(context, stack)
    await sign_in(page, device="lossy tab")
    (sid,) = [s["id"] for s in await sessions(http, stack)]
    lost: dict[str, Any] = {}

    async def lose_first_answer(route: Route) -> None:
        request = route.request
        if request.method != "POST" or lost:
            await route.continue_()
            return
        # Send the browser's own request to the server ourselves, then drop the connection.
        (cookie,) = [c for c in await context.cookies(f"{stack.tw}/oauth/token") if c["name"] == COOKIE]
        headers = {**await request.all_headers(), "cookie": f"{COOKIE}={cookie['value']}"}
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-length", "host")}
        async with http.post(request.url, data=request.post_data, headers=headers) as resp:
            lost["status"] = resp.status
            lost["set_cookie"] = resp.headers.getall("Set-Cookie")
            lost["body"] = await resp.json()
        lost["old"] = cookie["value"]
        await route.abort("connectionreset")

    await page.route(f"{stack.tw}/oauth/token", lose_first_answer)
    base = await stats(page)

    async def recovered() -> bool:
        return bool(lost and (await stats(page))["refreshes"] > base["refreshes"])

    await wait_until(recovered, within=15, what="the retried refresh")
    after = await stats(page)
    assert lost["status"] == 200, lost
    assert after["retries"] > base["retries"]
    (successor,) = [c for c in await context.cookies(f"{stack.tw}/oauth/token") if c["name"] == COOKIE]
    lost_value = lost["set_cookie"][0].split(";")[0].split("=", 1)[1]
    assert successor["value"] == lost_value != lost["old"], "the retry did not get the same successor"
    assert await state(page) == "signed-in"
    assert await page.evaluate("demo.callApi()") == 200
    assert [s["id"] for s in await sessions(http, stack)] == [sid]
    assert "refresh_token_reuse" not in await revocation_reasons(stack, started)
    await context.close()


async def test_api_401_gives_one_refresh_and_one_retry(browser: Browser, stack: Stack) -> None:
    """A 401 from the API makes the client refresh once and retry once; an API that keeps
    answering 401 gets exactly two requests and one refresh, and the caller sees the 401."""
    context = await browser.new_context()
    page = await open_demo(context, stack)
    await sign_in(page, device="401 tab")
    api = count_api(page, stack)
    refusals = {"left": 1}

    async def refuse(route: Route) -> None:
        if refusals["left"] > 0:
            refusals["left"] -= 1
            await route.fulfill(status=401, body='{"error":"invalid_token"}', content_type="application/json")
        else:
            await route.continue_()

    await page.route(f"{stack.app}/api/hello", refuse)
    # Start right after a refresh, so the client's own next one (1.3 s on) stays out of the count.
    await page.evaluate(NEXT_TOKEN)
    base = await stats(page)
    assert await page.evaluate("demo.callApi()") == 200
    once = await stats(page)
    assert api == [401, 200]
    assert once["refreshes"] == base["refreshes"] + 1

    refusals["left"] = 1000
    await page.evaluate(NEXT_TOKEN)
    once = await stats(page)
    api.clear()
    assert await page.evaluate("demo.callApi()") == 401
    twice = await stats(page)
    assert api == [401, 401]
    assert twice["refreshes"] == once["refreshes"] + 1
    assert await state(page) == "signed-in"
    await context.close()
