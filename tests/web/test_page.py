"""The chat page in a real browser: type, send, see the stored mark and the reply."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support import fleet_config, running_fleet
from tests.web.browser import chromium

pytestmark = pytest.mark.timeout(300)


def _wait(driver: Any, script: str, timeout: float = 20.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def _chat(driver: Any, url: str) -> list[str]:
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, "return document.getElementById('status').textContent === 'connected'")
    box = driver.find_element(By.ID, "text")
    for text in ("hello from a browser", "/echo works"):
        box.send_keys(text)
        driver.find_element(By.ID, "send").click()
    _wait(driver, "return document.querySelectorAll('.msg.bot').length >= 2")
    _wait(
        driver,
        "return [...document.querySelectorAll('.msg.me .meta')].every(m => m.textContent.includes('stored'))",
    )
    bot = driver.execute_script(
        "return [...document.querySelectorAll('.msg.bot')].map(e => e.firstChild.textContent)"
    )
    me = driver.find_element(By.ID, "me").text
    # reloading keeps the session (its cookie) and does not show old bot messages again:
    # the page subscribes to the same chat from the last seq it saw
    driver.refresh()
    _wait(driver, "return document.getElementById('status').textContent === 'connected'")
    _wait(driver, f"return document.getElementById('me').textContent === {me!r}")
    again = driver.execute_script("return document.querySelectorAll('.msg.bot').length")
    return [*bot, f"after reload: {again}", me.startswith("guest-")]


async def test_chat_page_in_chromium(tmp_path: Path) -> None:
    async with running_fleet(fleet_config(tmp_path)) as fleet:
        url = f"{fleet.base_url}/web/demo/"
        with chromium() as driver:
            seen = await asyncio.to_thread(_chat, driver, url)
    assert seen == ["hello from a browser", "works", "after reload: 0", True]
