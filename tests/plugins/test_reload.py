"""Hot reload of one plugin (admin API, changed files, a reloaded fleet file)
while another plugin keeps serving from its own, untouched runner."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp
import pytest

from tests.plugins.support import EXAMPLES, FIXTURES, fleet_plugins, groups, plugin_fleet, say, soon, texts
from tests.support import ChatClient, chat_client, running_fleet

pytestmark = pytest.mark.timeout(60)

RULES = """
- event_type: message.received
  handler_type: plugin
  handler_config: {plugin_filter: [keyword-reply]}
  when: {chat_id: [a]}
- event_type: message.received
  handler_type: plugin
  handler_config: {plugin_filter: [echoer]}
  when: {chat_id: [b]}
"""


async def until_reply(client: ChatClient, chat: str, text: str, expected: str, timeout: float = 60) -> None:
    """Say ``text`` until the answer is ``expected`` (a reload is asynchronous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        before = len(texts(client, chat))
        await say(client, chat, text)
        await soon(lambda: len(texts(client, chat)) > before or None, timeout=5)  # noqa: B023
        if texts(client, chat)[-1] == expected:
            return
        assert loop.time() < deadline, f"still {texts(client, chat)[-1]!r}"
        await asyncio.sleep(0.1)


def copy_keyword_reply(tmp_path: Path) -> Path:
    folder = tmp_path / "keyword_reply"
    shutil.copytree(EXAMPLES / "keyword_reply", folder)
    return folder


def edit(folder: Path, old: str, new: str) -> None:
    file = folder / "plugin.py"
    file.write_text(file.read_text().replace(old, new))


def pid_of(fleet: object, name: str) -> object:
    return next(p["pid"] for p in fleet_plugins(fleet) if p["name"] == name)  # type: ignore[arg-type]


async def ask(client: ChatClient, chat: str, text: str, expected: str) -> None:
    before = len(texts(client, chat))
    await say(client, chat, text)
    await soon(lambda: len(texts(client, chat)) > before)
    assert texts(client, chat)[-1] == expected


async def test_admin_api_reloads_one_plugin_while_another_serves(tmp_path: Path) -> None:
    folder = copy_keyword_reply(tmp_path)
    plugins = f"""
    - path: {folder}
      config: {{keywords: {{hello: "Hi!"}}}}
    - path: {FIXTURES / "echoer"}
    """
    async with (
        running_fleet(plugin_fleet(tmp_path, plugins, RULES)) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await groups(client, "a", "b")
        await ask(client, "a", "hello", "Hi!")
        await soon(lambda: all(p["pid"] for p in fleet_plugins(fleet)))
        keyword_pid, echo_pid = pid_of(fleet, "keyword-reply"), pid_of(fleet, "echoer")
        edit(folder, "await ctx.reply(reply)", 'await ctx.reply(reply + " (v2)")')
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{fleet.base_url}/api/plugins/reload", json={"plugin": "keyword-reply"}
            ) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["status"] == "ready"
            async with http.post(f"{fleet.base_url}/api/plugins/reload", json={"plugin": "nope"}) as r:
                assert r.status == 404
            async with http.get(f"{fleet.base_url}/api/plugins") as r:
                listed = {p["name"]: p for p in await r.json()}
        await ask(client, "a", "hello", "Hi! (v2)")
        await ask(client, "b", "still there?", "echoer: still there?")
        # reloaded inside its runner: no process was restarted, the other one not touched
        assert pid_of(fleet, "keyword-reply") == keyword_pid and pid_of(fleet, "echoer") == echo_pid
        assert listed["keyword-reply"]["events"] == ["message.received"]
        assert listed["echoer"]["restarts"] == 0


async def test_changed_files_are_reloaded_by_the_watcher(tmp_path: Path) -> None:
    folder = copy_keyword_reply(tmp_path)
    runtime = """
    plugin_runtime:
      watch: true
      watch_interval: 100ms
    """
    plugins = f"""
    - path: {folder}
      config: {{keywords: {{hello: "Hi!"}}}}
    - path: {FIXTURES / "echoer"}
    """
    config = plugin_fleet(tmp_path, plugins, RULES, runtime=runtime)
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "a")
        await ask(client, "a", "hello", "Hi!")
        pid = pid_of(fleet, "keyword-reply")
        edit(folder, "await ctx.reply(reply)", 'await ctx.reply(reply + " (watched)")')
        await until_reply(client, "a", "hello", "Hi! (watched)")
        assert pid_of(fleet, "keyword-reply") == pid


async def test_a_reloaded_fleet_file_pushes_new_config_without_a_restart(tmp_path: Path) -> None:
    plugins = """
    - path: {folder}
      config: {{keywords: {{{keywords}}}}}
    - path: {echoer}
    """
    folder = EXAMPLES / "keyword_reply"
    old = plugin_fleet(
        tmp_path, plugins.format(folder=folder, keywords='hello: "Hi!"', echoer=FIXTURES / "echoer"), RULES
    )
    new = plugin_fleet(
        tmp_path, plugins.format(folder=folder, keywords='bye: "See you!"', echoer=FIXTURES / "echoer"), RULES
    )
    async with running_fleet(old) as fleet, chat_client(fleet.base_url) as client:
        await groups(client, "a")
        await ask(client, "a", "hello", "Hi!")
        pid = pid_of(fleet, "keyword-reply")
        result = await fleet.reload(new)
        assert result.restart_needed == []
        await until_reply(client, "a", "bye now", "See you!")
        assert pid_of(fleet, "keyword-reply") == pid


async def test_the_plugin_admin_api_needs_the_admin_token(tmp_path: Path) -> None:
    token = "plugin-admin-token-0123456789"
    plugins = f"""
    - path: {FIXTURES / "echoer"}
    """
    admin = f"{{host: 127.0.0.1, port: 0, auth: token, token: {token}}}"
    rules = "- {event_type: message.received, handler_type: plugin, handler_config: {}}"
    config = plugin_fleet(tmp_path, plugins, rules, admin=admin)
    async with running_fleet(config) as fleet, aiohttp.ClientSession() as http:
        url = f"{fleet.base_url}/api/plugins/reload"
        async with http.post(url, json={"plugin": "echoer"}) as r:
            assert r.status == 401
        async with http.get(f"{fleet.base_url}/api/plugins") as r:
            assert r.status == 401
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(url, json={"plugin": "echoer"}, headers=headers) as r:
            assert r.status == 200 and (await r.json())["name"] == "echoer"


async def test_a_reload_that_breaks_the_plugin_is_reported_and_a_fixed_one_recovers(tmp_path: Path) -> None:
    folder = copy_keyword_reply(tmp_path)
    plugins = f"""
    - path: {folder}
      config: {{keywords: {{hello: "Hi!"}}}}
    - path: {FIXTURES / "echoer"}
    """
    async with (
        running_fleet(plugin_fleet(tmp_path, plugins, RULES)) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await groups(client, "a", "b")
        await ask(client, "a", "hello", "Hi!")
        source = (folder / "plugin.py").read_text()
        (folder / "plugin.py").write_text(source + "\ndef broken(:\n")
        async with aiohttp.ClientSession() as http:
            url = f"{fleet.base_url}/api/plugins/reload"
            async with http.post(url, json={"plugin": "keyword-reply"}) as r:
                broken = await r.json()
            assert broken["status"] == "failed" and "SyntaxError" in broken["error"]
            await ask(client, "b", "others still answer", "echoer: others still answer")
            (folder / "plugin.py").write_text(source)
            async with http.post(url, json={"plugin": "keyword-reply"}) as r:
                assert (await r.json())["status"] == "ready"
        await ask(client, "a", "hello again", "Hi!")
