"""The dashboard in headless Chromium: live figures pushed over the stream, a failed run with
its retry button, the actor tree, each bot's config with secrets masked; and its data behind
the admin token."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callboard.actors.config_file import parse_fleet
from callboard.bench.harness import free_port
from tests.support import chat_client, eventually, running_fleet
from tests.web.browser import chromium

pytestmark = pytest.mark.timeout(300)
TOKEN = "dashboard-token-0123456789"
SECRET = "webhook-secret-never-shown"
SCREENSHOTS = Path("/tmp/callboard-screenshots")

FLEET = """
name: ops
engine:
  journal: {journal}
  admin: {{host: 127.0.0.1, port: 0, auth: token, token: {token}}}
bots:
  - id: demo
    adapter: {{type: web}}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: webhook
        continue: true
        handler_config:
          url: http://127.0.0.1:{dead}/hook
          secret: {secret}
          timeout: 1s
          retries: {{count: 0}}
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


def _wait(driver: Any, script: str, timeout: float = 30.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def _look(driver: Any, url: str, shot: Path) -> dict[str, Any]:
    driver.set_window_size(1400, 1200)
    driver.get(url)
    _wait(driver, "return document.getElementById('live').textContent === 'live'")
    _wait(driver, "return document.querySelector('#bots tr[data-bot=demo]') !== null")
    _wait(driver, "return document.querySelectorAll('#failed tbody tr').length >= 1")
    _wait(driver, "return document.querySelector('[data-path=\"/fleet/demo/sessions\"]') !== null")
    _wait(driver, "return document.querySelector('#bots tr[data-bot=demo] .failed-runs').textContent === '1'")
    seen = driver.execute_script(
        """
        const row = document.querySelector('#bots tr[data-bot=demo]');
        const failed = document.querySelector('#failed tbody tr');
        return {
          fleet: document.getElementById('fleet').textContent,
          connection: row.children[2].textContent,
          spark: row.querySelector('canvas') !== null,
          failedCells: [...failed.children].map(c => c.textContent),
          retry: failed.querySelector('button') !== null,
          config: document.getElementById('config').textContent,
          html: document.documentElement.outerHTML,
          engine: [...document.querySelectorAll('#engine .card span')].map(s => s.textContent),
        };
        """
    )
    driver.save_screenshot(str(shot))
    driver.execute_script("document.querySelector('#failed tbody tr button').click()")
    return dict(seen)


async def test_dashboard_in_chromium(tmp_path: Path) -> None:
    config = parse_fleet(
        FLEET.format(journal=tmp_path / "j.sqlite3", token=TOKEN, dead=free_port(), secret=SECRET)
    )
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("one that fails its webhook")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:

            async def failed() -> list[Any]:
                async with http.get(f"{fleet.base_url}/api/bots/demo/failed") as response:
                    return list(await response.json())

            await eventually(failed, timeout=20)
            shot = tmp_path / "dashboard.png"
            with chromium() as driver:
                seen = await asyncio.to_thread(_look, driver, f"{fleet.base_url}/admin/#token={TOKEN}", shot)
            retried = fleet.stats.runtimes["demo"].counters

            async def retried_twice() -> bool:
                return retried.failed_runs >= 2

            await eventually(retried_twice, timeout=20)  # the retry button ran the rule again
    SCREENSHOTS.mkdir(exist_ok=True)
    shutil.copy(shot, SCREENSHOTS / "dashboard.png")
    assert shot.stat().st_size > 10_000
    assert seen["fleet"] == "ops"
    assert "serving /web/demo/ws" in seen["connection"]
    assert seen["spark"] and seen["retry"]
    assert seen["failedCells"][0] == "demo" and seen["failedCells"][4] == "failed"
    assert "events/s" in seen["engine"] and "journal commits/s" in seen["engine"]
    assert '"handler_type": "webhook"' in seen["config"]
    assert SECRET not in seen["html"] and TOKEN not in seen["html"]


async def test_dashboard_data_needs_the_token(tmp_path: Path) -> None:
    config = parse_fleet(
        FLEET.format(journal=tmp_path / "j.sqlite3", token=TOKEN, dead=free_port(), secret=SECRET)
    )
    async with running_fleet(config) as fleet, aiohttp.ClientSession() as http:
        async with http.get(f"{fleet.base_url}/admin/") as page:
            assert page.status == 200 and "callboard" in await page.text()
        for path in ("/api/overview", "/api/stream"):
            async with http.get(f"{fleet.base_url}{path}") as refused:
                assert refused.status == 401, path
        async with http.get(
            f"{fleet.base_url}/api/overview", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as allowed:
            body = await allowed.json()
        assert body["fleet"] == "ops" and "demo" in body["config"]
        assert SECRET not in str(body)
