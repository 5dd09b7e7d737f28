"""The live page in a real browser (Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

import shutil
import time

import pytest

from leaderboard.devstack.stack import Stack
from tests.apiclient import Api
from tests.broadcaster.conftest import running_broadcaster

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make install)")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


async def test_the_page_shows_the_top10_updates_live_and_recovers_after_a_restart(
    empty_board: Api, stack: Stack
) -> None:
    from playwright.async_api import async_playwright

    api = empty_board
    for i in range(3):
        await api.complete(f"page-{i}", "verify-email")
    port_settings: dict[str, int] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            async with running_broadcaster(stack) as running:
                port_settings["ws_port"] = running.settings.ws_port
                await page.goto(running.http + "/")
                await page.wait_for_selector("#status[data-state=live]", timeout=10_000)
                await page.wait_for_selector("li[data-user=page-0]", timeout=10_000)
                assert await page.locator("#board li").count() == 3

                started = time.monotonic()
                await api.complete("page-star", "final-exam", {"examId": "p", "score": 99})
                star = page.locator("li[data-user=page-star]")
                await star.wait_for(timeout=5_000)
                print(f"page updated {time.monotonic() - started:.3f} s after the completion")
                assert await star.locator(".rank").inner_text() == "1"
                assert "entered" in (await star.get_attribute("class") or "")

            # The broadcaster is gone: the page says so, then reconnects to a new one.
            await page.wait_for_selector("#status[data-state=offline]", timeout=10_000)
            async with running_broadcaster(stack, ws_port=port_settings["ws_port"]):
                await page.wait_for_selector("#status[data-state=live]", timeout=30_000)
                await api.complete("page-late", "first-lesson")
                await page.locator("li[data-user=page-late]").wait_for(timeout=5_000)
        finally:
            await browser.close()
