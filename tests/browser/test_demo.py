"""The demo page in Chromium: logout across tabs, "my devices" with a second device, screenshots."""

from __future__ import annotations

import os
import time
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import Stack
from tests.browser.pages import COOKIE, open_demo, sessions, sign_in, state, wait_until
from tests.factories import bearer

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "demo.png"
# The README's screenshot is refreshed on request only, so a test run leaves the checkout clean.
UPDATE_DOCS = os.environ.get("TOKENWARD_UPDATE_DOCS") == "1"


@pytest.fixture(name="shots", scope="session")
def _shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the demo's screenshots go (the path is printed, to look at them)."""
    path = tmp_path_factory.mktemp("demo-screenshots")
    print(f"\nscreenshots: {path}")
    return path


async def shoot(page: Page, path: Path) -> None:
    png = await page.screenshot(path=str(path), full_page=True)
    assert len(png) > 10_000  # a rendered page, not a blank one


async def test_logout_in_one_tab_signs_out_the_other(
    browser: Browser, stack: Stack, http: aiohttp.ClientSession, shots: Path
) -> None:
    """Log out here in tab A: tab B shows signed out at once, its next API call fails, and the
    token it held is refused by the API too (the server ended the session, not just the tabs)."""
    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    a = await open_demo(context, stack)
    await shoot(a, shots / "1-signed-out.png")
    await sign_in(a, device="two tabs")
    b = await open_demo(context, stack)
    assert await state(b) == "signed-in"
    assert await b.evaluate("demo.callApi()") == 200
    held = await b.evaluate("demo.tw.accessToken")

    clicked = time.monotonic()
    await a.click("#logout")
    await b.wait_for_selector('#state[data-state="signed-out"]', timeout=5_000)
    reached = time.monotonic() - clicked
    print(f"\nlogout in tab A reached tab B after {reached * 1000:.0f} ms")
    await a.wait_for_selector('#state[data-state="signed-out"]', timeout=5_000)
    await shoot(b, shots / "4-signed-out-by-the-other-tab.png")

    await b.click("#call-api")
    await b.wait_for_function("document.getElementById('api-result').textContent.startsWith('401')")
    assert await state(b) == "signed-out"
    assert "logout" in (await b.text_content("#reason") or "")
    async with http.get(f"{stack.app}/api/hello", headers=bearer(held)) as resp:
        assert resp.status == 401
    assert await sessions(http, stack) == []
    assert [c for c in await context.cookies(f"{stack.tw}/oauth/token") if c["name"] == COOKIE] == []
    await context.close()


async def test_revoking_a_device_signs_it_out(
    browser: Browser, stack: Stack, http: aiohttp.ClientSession, shots: Path
) -> None:
    """Two devices (two browser contexts); the laptop revokes the phone in "my devices": the phone
    shows signed out within a refresh, its API calls fail; the laptop stays signed in. Then "log
    out everywhere" on the laptop ends the rest."""
    laptop_ctx = await browser.new_context(viewport={"width": 1000, "height": 700})
    phone_ctx = await browser.new_context(viewport={"width": 1000, "height": 700})
    laptop = await open_demo(laptop_ctx, stack)
    phone = await open_demo(phone_ctx, stack)
    await sign_in(laptop, device="laptop")
    await sign_in(phone, device="phone")
    await laptop.click("#reload-devices")
    await laptop.wait_for_function("document.querySelectorAll('#devices tr').length === 2")
    assert await laptop.text_content("#devices tr:has(.badge)") is not None
    assert "this device" in (await laptop.text_content("#devices tr:has-text('laptop')") or "")
    await laptop.click("#call-api")
    await laptop.wait_for_function("document.getElementById('api-result').textContent.startsWith('200')")
    await shoot(laptop, shots / "2-signed-in-with-devices.png")
    if UPDATE_DOCS:
        await shoot(laptop, DOCS_SCREENSHOT)

    await laptop.click("#devices tr:has-text('phone') button.revoke")
    await phone.wait_for_selector('#state[data-state="signed-out"]', timeout=10_000)
    await shoot(phone, shots / "3-revoked-device.png")
    assert await phone.evaluate("demo.callApi()") == 401
    await laptop.wait_for_function("document.querySelectorAll('#devices tr').length === 1")
    assert await state(laptop) == "signed-in"
    assert await laptop.evaluate("demo.callApi()") == 200
    assert [s["device_name"] for s in await sessions(http, stack)] == ["laptop"]

    await laptop.click("#logout-all")
    await laptop.wait_for_selector('#state[data-state="signed-out"]', timeout=5_000)
    await shoot(laptop, shots / "5-logged-out-everywhere.png")
    assert await sessions(http, stack) == []

    async def phone_token_refused() -> bool:
        return bool(await phone.evaluate("demo.callApi()") == 401)

    await wait_until(phone_token_refused, within=5, what="the phone's API call to fail")
    await laptop_ctx.close()
    await phone_ctx.close()


async def test_demo_login_backend(stack: Stack, http: aiohttp.ClientSession) -> None:
    """The DEMO ONLY login: the fixed user gets Tokenward's cookie relayed and no refresh token in
    the body; anything else is refused without a cookie (and never a 500)."""
    login = f"{stack.app}/demo/login"
    for body in (
        {"username": "demo", "password": "wrong"},
        {"username": "démo", "password": "démo"},
        {"username": "alice", "password": "demo"},
    ):
        async with http.post(login, json=body) as resp:
            assert resp.status == 401, body
            assert "Set-Cookie" not in resp.headers
    for raw in (b"not json", b"[1, 2]"):
        async with http.post(login, data=raw, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400
    async with http.post(login, json={"username": "demo", "password": "demo", "device": "curl"}) as resp:
        assert resp.status == 201
        answer = await resp.json()
        (cookie,) = resp.headers.getall("Set-Cookie")
    assert "refresh_token" not in answer and answer["token_type"] == "Bearer"
    assert cookie.startswith(f"{COOKIE}=twr_") and "HttpOnly" in cookie and "Path=/oauth" in cookie
    assert [s["device_name"] for s in await sessions(http, stack)] == ["curl"]
