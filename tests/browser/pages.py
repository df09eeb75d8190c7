"""Driving the demo page, and reading the server side of what the browser did."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis
from playwright.async_api import BrowserContext, Page

from tests.browser.conftest import Stack
from tests.conftest import basic

COOKIE = "__Secure-tokenward-refresh"


async def open_demo(context: BrowserContext, stack: Stack) -> Page:
    """A tab on the demo page, once its client has decided whether it is signed in."""
    page = await context.new_page()
    page.on("console", lambda msg: print(f"[{page.url}] console.{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: print(f"[{page.url}] page error: {err}"))
    page.on("response", lambda r: print(f"  {r.request.method} {r.url} -> {r.status}") if r.status >= 400 else None)
    await page.goto(f"{stack.app}/demo")
    await page.wait_for_function("window.demo && window.demo.ready")
    await page.evaluate("demo.ready")
    return page


async def sign_in(page: Page, device: str = "laptop") -> None:
    """Fill the login form with the demo user and wait for the signed-in state."""
    await page.fill("input[name=password]", "demo")
    await page.fill("input[name=device]", device)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector('#state[data-state="signed-in"]', timeout=10_000)


async def state(page: Page) -> str:
    """What the page shows: signed-in, signed-out or unknown."""
    value = await page.get_attribute("#state", "data-state")
    return value or ""


async def stats(page: Page) -> dict[str, Any]:
    """The client's counters in that tab."""
    result: dict[str, Any] = await page.evaluate("({...demo.tw.stats, state: demo.tw.state})")
    return result


def count_api(page: Page, stack: Stack) -> list[int]:
    """Every API answer the page receives (retried 401s included), appended as it arrives."""
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.startswith(f"{stack.app}/api/") else None)
    return statuses


async def sessions(http: aiohttp.ClientSession, stack: Stack, sub: str = "demo") -> list[dict[str, Any]]:
    """The user's live sessions, asked as an administrator."""
    async with http.get(f"{stack.tw}/v1/users/{sub}/sessions", headers=basic("admin")) as resp:
        assert resp.status == 200, await resp.text()
        rows: list[dict[str, Any]] = (await resp.json())["sessions"]
        return rows


async def revocation_reasons(stack: Stack, since: float) -> list[str]:
    """Reasons of the revocation events written since ``since`` (epoch seconds): a reuse shows here."""
    client = aioredis.Redis.from_url(stack.redis.url)
    try:
        entries: list[Any] = await client.xrange("tw:{0}:ev", min=str(int(since * 1000))) or []
    finally:
        await client.aclose()
    reasons = []
    for _, fields in entries:
        for value in (fields or {}).values():
            try:
                event = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and "reason" in event:
                reasons.append(str(event["reason"]))
    return reasons


async def token_refreshes(http: aiohttp.ClientSession, stack: Stack) -> dict[int, int]:
    """Tokenward's own count of POST /oauth/token answers, by status."""
    return await answered(http, stack, "POST", "/oauth/token")


async def answered(http: aiohttp.ClientSession, stack: Stack, method: str, route: str) -> dict[int, int]:
    """Tokenward's own count of answers to ``method route``, by status (from /metrics)."""
    async with http.get(f"{stack.tw}/metrics", headers=basic("admin")) as resp:
        text = await resp.text()
    counts: dict[int, int] = {}
    wanted = f'tokenward_http_requests_total{{method="{method}",route="{route}",'
    for line in text.splitlines():
        if line.startswith(wanted):
            status = int(line.split('status="')[1].split('"')[0])
            counts[status] = counts.get(status, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


async def wait_until(predicate: Any, within: float, what: str, interval: float = 0.1) -> None:
    """Poll an async predicate until it holds; fail naming ``what``."""
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)
