"""The live page in a real browser (Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

import shutil
import time

import pytest

from leaderboard_tools.devstack.stack import Stack
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


async def test_the_page_switches_boards(empty_board: Api, stack: Stack) -> None:
    from playwright.async_api import async_playwright

    api = empty_board
    # Someone with a week's score but no all-time top-10 place is not needed: the all-time
    # board was emptied, the weekly one was not; tell them apart by the season in the footer.
    await api.complete("switch-0", "verify-email")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page()
            async with running_broadcaster(stack) as running:
                await page.goto(running.http + "/")
                await page.wait_for_selector("li[data-user=switch-0]", timeout=10_000)
                assert await page.locator("#picker option").all_inner_texts() == [
                    "All time",
                    "This week",
                ]
                assert await page.locator("#season").inner_text() == ""
                await page.select_option("#picker", "weekly")
                await page.wait_for_selector("#season:has-text('season')", timeout=10_000)
                assert "board=weekly" in page.url
                await page.wait_for_selector("#status[data-state=live]", timeout=10_000)
                # A change on the weekly board shows up live.
                await api.complete("switch-star", "final-exam", {"examId": "s", "score": 99})
                await page.locator("li[data-user=switch-star]").wait_for(timeout=5_000)
        finally:
            await browser.close()
