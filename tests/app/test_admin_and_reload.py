"""Admin endpoints and hot reload, in process and through a real `callboard run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from callboard.bench.harness import free_port
from tests.support import chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]


async def test_health_ready_metrics_actors(tmp_path: Path) -> None:
    async with running_fleet(fleet_config(tmp_path)) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("hello")
        await client.wait_for(lambda f: f["op"] == "message")
        chat = client.chat("c1")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{fleet.base_url}/healthz") as r:
                assert r.status == 200 and (await r.json()) == {"status": "ok"}
            async with http.get(f"{fleet.base_url}/readyz") as r:
                assert r.status == 200 and (await r.json())["ready"] is True
            async with http.get(f"{fleet.base_url}/metrics") as r:
                text = await r.text()
                assert r.headers["Content-Type"].startswith("text/plain")
            async with http.get(f"{fleet.base_url}/api/actors") as r:
                tree = await r.json()
            async with http.get(f"{fleet.base_url}/api/bots") as r:
                bots = await r.json()
            async with http.post(f"{fleet.base_url}/healthz") as r:
                assert r.status == 405
        assert 'callboard_bot_accepted_total{bot="demo"} 1.0' in text
        assert 'callboard_bot_connected{bot="demo"} 1.0' in text
        assert "callboard_actors " in text and "callboard_journal_commits_total" in text
        fleet_node = tree["children"][0]
        assert fleet_node["path"] == "/fleet"
        bot_node = next(c for c in fleet_node["children"] if c["name"] == "demo")
        assert {c["name"] for c in bot_node["children"]} == {"outbound", "sessions", "connection"}
        sessions = next(c for c in bot_node["children"] if c["name"] == "sessions")
        assert [c["path"] for c in sessions["children"]] == [f"/fleet/demo/sessions/private:{chat}"]
        assert bots[0]["id"] == "demo" and bots[0]["connected"] is True
        assert "send_message" in bots[0]["manifest"]["apis"]


async def test_readyz_reports_a_stopped_bot(tmp_path: Path) -> None:
    async with running_fleet(fleet_config(tmp_path)) as fleet:
        bot = fleet.system.lookup("/fleet/demo")
        assert bot is not None
        await bot.stop()
        async with aiohttp.ClientSession() as http, http.get(f"{fleet.base_url}/readyz") as r:
            assert r.status == 503
            assert any("demo" in p for p in (await r.json())["problems"])


async def test_readyz_after_a_reload_that_removes_a_bot(tmp_path: Path) -> None:
    async with running_fleet(fleet_config(tmp_path, bots=("keep", "drop"))) as fleet:
        result = await fleet.reload(fleet_config(tmp_path, bots=("keep",)))
        assert result.removed == ["drop"]
        await eventually(lambda: fleet.system.lookup("/fleet/drop") is None)
        async with aiohttp.ClientSession() as http, http.get(f"{fleet.base_url}/readyz") as r:
            body = await r.json()
            assert r.status == 200 and body["ready"] is True, body


async def test_reload_touches_only_changed_bots(tmp_path: Path) -> None:
    config = fleet_config(tmp_path, bots=("keep", "change", "drop"))
    async with running_fleet(config) as fleet:
        keep_before = fleet.system.lookup("/fleet/keep")
        change_before = fleet.system.lookup("/fleet/change")
        async with chat_client(fleet.base_url, "keep") as client:
            await client.subscribe("c1")
            await client.say("x")
            await client.wait_for(lambda f: f["op"] == "message")
            session = fleet.system.lookup(f"/fleet/keep/sessions/private:{client.chat('c1')}")
            new = fleet_config(tmp_path, bots=("keep", "change", "add"))
            new.bots[1].session.idle_ttl = 123
            result = await fleet.reload(new)
            assert (result.added, result.removed, result.changed, result.unchanged) == (
                ["add"],
                ["drop"],
                ["change"],
                ["keep"],
            )
            await eventually(lambda: fleet.system.lookup("/fleet/change") not in (None, change_before))
            await eventually(lambda: fleet.system.lookup("/fleet/drop") is None)
            await eventually(lambda: fleet.system.lookup("/fleet/add") is not None)
            # the unchanged bot and its live session were not touched
            assert fleet.system.lookup("/fleet/keep") is keep_before
            assert fleet.system.lookup(f"/fleet/keep/sessions/private:{client.chat('c1')}") is session
            await client.say("y")
            await client.wait_count("message", 2)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{fleet.base_url}/web/drop/") as r:
                assert r.status == 404
            async with http.get(f"{fleet.base_url}/web/add/") as r:
                assert r.status == 200
        assert fleet.stats.runtimes["change"].config.session.idle_ttl == 123


def _bots(port: int) -> list[str] | None:
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/bots", timeout=1) as r:
            return [b["id"] for b in json.load(r)]
    except OSError:
        return None


def _ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _wait(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("condition not met")


BOT = """  - id: {id}
    adapter: {{type: web}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


def test_sighup_reloads_the_file_and_sigterm_stops(tmp_path: Path) -> None:
    port = free_port()
    fleet = tmp_path / "fleet.yaml"
    head = f"name: live\nengine:\n  journal: {tmp_path / 'j.sqlite3'}\n  admin: {{port: {port}}}\nbots:\n"
    fleet.write_text(head + BOT.format(id="one"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "callboard.cli", "run", str(fleet)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert _wait(lambda: _bots(port) == ["one"])
        fleet.write_text(head + BOT.format(id="one") + BOT.format(id="two"))
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _bots(port) == ["one", "two"])
        fleet.write_text(head + BOT.format(id="two"))
        proc.send_signal(signal.SIGHUP)  # removes "one": readiness no longer waits for it
        assert _wait(lambda: _bots(port) == ["two"])
        assert _wait(lambda: _ready(port))
        fleet.write_text(head + "  - id: broken\n    adapter: {type: nope}\n")
        proc.send_signal(signal.SIGHUP)  # an invalid file is refused; the fleet keeps running
        time.sleep(1.0)
        assert _bots(port) == ["two"]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "reload refused" in output and "bots[0].adapter.type:" in output, output
        assert f"http://127.0.0.1:{port}/web/one/" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
