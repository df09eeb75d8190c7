"""The browser under test is Debian's Chromium, and its absence fails the run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.support import browser as support


async def test_the_browser_is_debians_chromium(browser: Browser) -> None:
    """Playwright drives /usr/bin/chromium, not a browser of its own."""
    proc = await asyncio.create_subprocess_exec(support.find_chromium(), "--version", stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    assert browser.version in out, (browser.version, out)


def test_a_missing_chromium_fails_loudly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Chromium: an error naming the fix, never a skip."""
    monkeypatch.setattr(support, "CHROMIUM", tmp_path / "chromium")
    with pytest.raises(RuntimeError, match="install-system-deps"):
        support.find_chromium()
