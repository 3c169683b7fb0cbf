"""The ``adapter:`` block of a Slack bot: the example file validates, secrets
come from the environment, and mistakes get clear errors that never repeat
the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.actors.config_file import ConfigError, load_fleet, parse_fleet
from callboard.adapters.slack.config import SlackAdapterConfig

ROOT = Path(__file__).resolve().parents[2]
BOT_TOKEN = "xoxb-1234-5678-SeCrEtBoTvAlUe"
APP_TOKEN = "xapp-1-A111-222-SeCrEtApPvAlUe"
SIGNING = "abcdef0123456789SeCrEtSiGn"


def test_the_example_fleet_validates_with_tokens_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    fleet = load_fleet(ROOT / "config" / "slack.example.yaml")
    (bot,) = [b for b in fleet.bots if b.adapter.type == "slack"]
    assert isinstance(bot.adapter, SlackAdapterConfig)
    assert bot.adapter.bot_token.get_secret_value() == BOT_TOKEN
    assert bot.adapter.mode == "socket" and bot.adapter.channel_messages == "mention"
    assert bot.adapter.thread_sessions and bot.adapter.base_url == "https://slack.com/api/"


def test_a_missing_token_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    with pytest.raises(ConfigError, match="environment variable SLACK_BOT_TOKEN is not set"):
        load_fleet(ROOT / "config" / "slack.example.yaml")


def _fleet(adapter: str) -> str:
    return f"bots:\n  - id: sl\n    adapter: {{type: slack, {adapter}}}\n"


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        (f'bot_token: "{APP_TOKEN}", app_token: "{APP_TOKEN}"', "bot_token must be a bot token"),
        (f'bot_token: "{BOT_TOKEN}", app_token: "{BOT_TOKEN}"', "app_token must be an app-level token"),
        (f'bot_token: "{BOT_TOKEN}"', "socket mode needs app_token"),
        (f'bot_token: "{BOT_TOKEN}", mode: http', "http mode needs signing_secret"),
        (f'bot_token: "{BOT_TOKEN}", mode: http, signing_secret: "short"', "signing_secret must be 16-128"),
        (
            f'bot_token: "{BOT_TOKEN}", app_token: "{APP_TOKEN}", base_url: "ftp://x/api/"',
            "http:// or https://",
        ),
        (f'bot_token: "{BOT_TOKEN}", app_token: "{APP_TOKEN}", mode: rtm', "mode"),
        (f'bot_token: "{BOT_TOKEN}", app_token: "{APP_TOKEN}", channel_messages: some', "channel_messages"),
        (f'bot_token: "{BOT_TOKEN}", app_token: "{APP_TOKEN}", colour: red', "unknown key"),
    ],
)
def test_mistakes_are_clear_errors(adapter: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_fleet(_fleet(adapter), "f.yaml")
    text = str(info.value)
    assert "f.yaml" in text and "bots[0].adapter" in text
    assert "SeCrEt" not in text


def test_http_mode_needs_no_app_token_and_base_url_gets_its_slash() -> None:
    config = SlackAdapterConfig(
        bot_token=BOT_TOKEN, mode="http", signing_secret=SIGNING, base_url="http://h/api"
    )
    assert config.base_url == "http://h/api/" and config.app_token is None
    assert "SeCrEt" not in repr(config)
