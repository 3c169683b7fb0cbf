"""The example plugins in examples/plugins/, end to end over the web chat."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from callboard.actors.config_file import ConfigError, load_fleet, parse_fleet
from tests.plugins.support import (
    EXAMPLES,
    ROOT,
    fleet_plugins,
    fleet_text,
    groups,
    plugin_fleet,
    say,
    soon,
    texts,
)
from tests.support import chat_client, running_fleet

pytestmark = pytest.mark.timeout(60)

ALL_PLUGINS = """
- event_type: "*"
  handler_type: plugin
  handler_config: {}
"""


async def test_welcome_greets_in_the_group(tmp_path: Path) -> None:
    plugins = f"""
    - path: {EXAMPLES / "welcome"}
      config: {{template: "Welcome {{member}} to {{group}}! We are {{count}} now."}}
    """
    config = plugin_fleet(tmp_path, plugins, ALL_PLUGINS)
    async with running_fleet(config) as fleet, chat_client(fleet.base_url, user="ann") as client:
        await client.join("g1", name="Team")
        await client.subscribe("g1", group=True)
        await soon(lambda: texts(client, "g1"))
        assert texts(client, "g1") == ["Welcome ann to Team! We are 1 now."]


async def test_moderator_deletes_banned_words_and_acts_on_repeat_offenders(tmp_path: Path) -> None:
    plugins = f"""
    - path: {EXAMPLES / "moderator"}
      config: {{banned: [spam], mute_after: 2, mute_seconds: 60}}
    - path: {EXAMPLES / "keyword_reply"}
      config: {{keywords: {{spam: "I would have answered"}}}}
    """
    config = plugin_fleet(tmp_path, plugins, ALL_PLUGINS)
    async with running_fleet(config) as fleet, chat_client(fleet.base_url, user="max") as client:
        await groups(client, "g1")
        sent = await say(client, "g1", "buy SPAM now")
        first = await client.wait_for(lambda f: f["op"] == "deleted")
        ack = await client.wait_for(lambda f: f["op"] == "ack" and f["client_msg_id"] == sent)
        assert first["message_id"] == ack["message_id"]
        await soon(lambda: texts(client, "g1"))
        assert texts(client, "g1") == ["max: message removed (banned word); strike 1 of 2"]
        await say(client, "g1", "hello all")  # fine: nothing happens
        await say(client, "g1", "more spam")
        await soon(lambda: len(client.of("deleted")) == 2)
        await soon(lambda: len(texts(client, "g1")) == 2)
        # the moderator runs first (priority 100) and stops the keyword plugin
        assert not [t for t in texts(client, "g1") if "would have answered" in t]
        assert texts(client, "g1")[1] == "max is muted for 60s"
        muted = await client.wait_for(lambda f: f["op"] == "muted")
        assert muted["user_id"] == client.user_id and muted["duration"] == 60
        refused = await say(client, "g1", "let me speak")  # the web chat enforces the mute
        error = await client.wait_for(lambda f: f["op"] == "error" and f["client_msg_id"] == refused)
        assert error["code"] == "muted"
        moderator = next(p for p in fleet_plugins(fleet) if p["name"] == "moderator")
        assert moderator["counters"]["refused"] == 0


async def test_weather_validates_its_config_and_masks_its_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    plugins = f"""
    - path: {EXAMPLES / "weather"}
      config:
        api_key: sk-very-secret-1234
        units: imperial
        stations: {{Paris: {{lat: 48.86, lon: 2.35, readings: {{temp: 20, sky: sunny}}}}}}
    """
    config = plugin_fleet(tmp_path, plugins, ALL_PLUGINS)
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("/weather paris", chat_id="c1")
        await soon(lambda: texts(client, client.chat("c1")))
        assert texts(client, client.chat("c1")) == ["Paris: 68.0°F, sunny"]
        await soon(lambda: [r for r in caplog.records if r.name == "callboard.plugin.weather"])
    lines = [r.getMessage() for r in caplog.records if r.name == "callboard.plugin.weather"]
    assert any("key=***" in line for line in lines)
    assert not any("sk-very-secret-1234" in r.getMessage() for r in caplog.records)


def test_a_bad_plugin_config_names_file_line_and_key(tmp_path: Path) -> None:
    plugins = f"""
    - path: {EXAMPLES / "weather"}
      config:
        api_key: sk-very-secret-1234
        stations:
          paris: {{lat: 123, lon: 2.35, readings: {{temp: 20}}}}
    """
    text = fleet_text(tmp_path, plugins, ALL_PLUGINS)
    with pytest.raises(ConfigError) as error:
        parse_fleet(text, "test.yaml")
    [problem] = error.value.problems
    assert problem.key == "plugins[0].config.stations.paris.lat"
    assert problem.line == 1 + next(i for i, line in enumerate(text.splitlines()) if "lat: 123" in line)
    assert str(problem).startswith(f"test.yaml:{problem.line}: ")
    assert "less than or equal to 90" in problem.message
    assert "sk-very-secret" not in str(error.value)


def test_the_example_fleet_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEATHER_API_KEY", "example-key")
    monkeypatch.chdir(ROOT)  # the example's plugin paths are relative to the repository root
    config = load_fleet(ROOT / "config" / "plugins.example.yaml")
    assert [p.name for p in config.plugins] == ["moderator", "keyword-reply", "welcome", "weather"]
