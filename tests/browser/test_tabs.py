"""Two tabs of one origin sharing one session through many refresh cycles, in Chromium."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import pytest
from playwright.async_api import Browser

from tests.browser.conftest import ACCESS_TTL, Stack
from tests.browser.pages import (
    count_api,
    open_demo,
    revocation_reasons,
    sessions,
    sign_in,
    state,
    stats,
    token_refreshes,
    wait_until,
)

NO_WEB_LOCKS = "Object.defineProperty(Navigator.prototype, 'locks', {get: () => undefined, configurable: true});"


@pytest.mark.parametrize(
    ("lock", "cycles"),
    [("web-locks", 20), ("broadcast-channel", 10)],
)
async def test_two_tabs_refresh_cycles(
    browser: Browser, stack: Stack, http: aiohttp.ClientSession, lock: str, cycles: int
) -> None:
    """Two tabs, 2-second access tokens, 20 refresh cycles (10 on the BroadcastChannel fallback
    lock): no logout, no reuse detection, no 4xx on the API, one refresh per cycle for both tabs."""
    started = time.time()
    context = await browser.new_context()
    if lock == "broadcast-channel":
        await context.add_init_script(NO_WEB_LOCKS)
    a = await open_demo(context, stack)
    api_a = count_api(a, stack)
    await sign_in(a, device=f"two tabs ({lock})")
    b = await open_demo(context, stack)
    api_b = count_api(b, stack)
    assert await state(b) == "signed-in"
    first_b = await stats(b)
    assert first_b["lock"] == lock
    assert first_b["refreshes"] == 0, "the second tab took the first tab's token instead of refreshing"
    before = await token_refreshes(http, stack)
    (sid,) = [s["id"] for s in await sessions(http, stack)]

    for page in (a, b):
        await page.evaluate("demo.loop = setInterval(() => demo.callApi(), 150)")

    async def enough() -> bool:
        done: int = (await stats(a))["refreshes"] + (await stats(b))["refreshes"]
        return done >= cycles

    await wait_until(enough, within=cycles * ACCESS_TTL * 3 + 30, what=f"{cycles} refresh cycles", interval=0.5)
    for page in (a, b):
        await page.evaluate("clearInterval(demo.loop)")
    await asyncio.sleep(0.5)  # let the calls in flight land

    sa, sb = await stats(a), await stats(b)
    after = await token_refreshes(http, stack)
    print(
        f"\n[{lock}] tab A: {sa['refreshes']} refreshes, {sa['received']} tokens from tab B; "
        f"tab B: {sb['refreshes']} refreshes, {sb['received']} from tab A; "
        f"API answers A {len(api_a)} B {len(api_b)}; server 200s: {after.get(200, 0) - before.get(200, 0)}"
    )
    assert sa["state"] == sb["state"] == "signedin"
    assert await state(a) == await state(b) == "signed-in"
    for page in (a, b):
        names = await page.evaluate("demo.events.map(e => e.name)")
        assert "signedout" not in names[names.index("signedin") :], names
    # Every refresh the server answered is one a tab counted: nothing refreshed behind our back,
    # and no refresh was refused.
    assert after.get(200, 0) - before.get(200, 0) == sa["refreshes"] + sb["refreshes"]
    assert {s: n - before.get(s, 0) for s, n in after.items() if s != 200 and n != before.get(s, 0)} == {}
    # One refresh per token lifetime across both tabs: a tab that received a token did not also
    # refresh it (two refreshes of one token would come milliseconds apart).
    times = sorted(sa["refreshLog"] + sb["refreshLog"])
    gaps = [(t2 - t1) / 1000 for t1, t2 in itertools.pairwise(times)]
    assert min(gaps) > 0.5, gaps
    assert sa["received"] > 0 and sb["received"] > 0
    # The API saw only 200s, and plenty of them.
    assert set(api_a) == set(api_b) == {200}, (api_a, api_b)
    assert len(api_a) > cycles and len(api_b) > cycles
    # The same session is alive, and nothing was taken for a replay.
    assert [s["id"] for s in await sessions(http, stack)] == [sid]
    assert "refresh_token_reuse" not in await revocation_reasons(stack, started)
    await context.close()
