"""The ``adapter:`` block of a Telegram bot: the example file validates,
secrets come from the environment, and mistakes get clear errors that never
repeat the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.actors.config_file import ConfigError, load_fleet, parse_fleet
from callboard.adapters.telegram.config import TelegramAdapterConfig

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "987654:AAexample-Token_value"


def test_the_example_fleet_validates_with_the_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEGRAM_TOKEN", TOKEN)
    fleet = load_fleet(ROOT / "config" / "telegram.example.yaml")
    (bot,) = [b for b in fleet.bots if b.adapter.type == "telegram"]
    assert isinstance(bot.adapter, TelegramAdapterConfig)
    assert bot.adapter.token.get_secret_value() == TOKEN and bot.adapter.mode == "polling"
    assert bot.adapter.base_file_url == "https://api.telegram.org/file/bot"


def test_a_missing_token_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEGRAM_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="environment variable TELEGRAM_TOKEN is not set"):
        load_fleet(ROOT / "config" / "telegram.example.yaml")


def _fleet(adapter: str) -> str:
    return f"bots:\n  - id: tg\n    adapter: {{type: telegram, {adapter}}}\n"


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        (f'token: "{TOKEN}\\n"', "token does not look like a bot token"),
        ('token: "not-a-token"', "token does not look like a bot token"),
        (f'token: "{TOKEN}", mode: webhook', "webhook mode needs webhook_url and secret_token"),
        (
            f'token: "{TOKEN}", mode: webhook, webhook_url: "https://h/x", secret_token: "has space"',
            "secret_token must be 1-256 characters",
        ),
        (f'token: "{TOKEN}", base_url: "ftp://x/bot"', "must be an http:// or https:// URL"),
        (f'token: "{TOKEN}", base_url: "http://x/api/"', "must end in '/bot'"),
        (f'token: "{TOKEN}", allowed_updates: [message, mesage]', "item 1 is not an update kind"),
        (f'token: "{TOKEN}", poll_timeout: 30, stale_after: 35', "stale_after must be longer"),
        (f'token: "{TOKEN}", mode: pull', "mode"),
        (f'token: "{TOKEN}", colour: red', "unknown key"),
    ],
)
def test_mistakes_are_clear_errors(adapter: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_fleet(_fleet(adapter), "f.yaml")
    assert "bots[0].adapter" in str(info.value)
    assert "AAexample-Token_value" not in str(info.value)


def test_file_url_follows_a_self_hosted_base_url() -> None:
    config = TelegramAdapterConfig(token=TOKEN, base_url="http://bot-api.local:8081/bot")
    assert config.base_file_url == "http://bot-api.local:8081/file/bot"
    assert config.stale_seconds == 3 * (30 + 10)
