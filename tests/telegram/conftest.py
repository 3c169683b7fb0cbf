"""Fixtures for the Telegram adapter: the fake Bot API, fleet files whose bot
talks to it, and readers of what the engine stored."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import telegram as tg

from callboard.actors.config import FleetConfig
from callboard.testing.fake_telegram import TOKEN, FakeBotAPI, user
from tests import support
from tests.support import PIPELINE_ECHO as ECHO
from tests.support import RATE_LIMITS_OFF as UNLIMITED

TELEGRAM = support.PlatformBot(bot="tg", file="telegram-test.yaml")
BOT = TELEGRAM.bot
running = TELEGRAM.running
stored_events = TELEGRAM.stored_events


def telegram_fleet(
    tmp_path: Path,
    api: FakeBotAPI,
    *,
    adapter: str = UNLIMITED,
    handlers: str = ECHO,
    port: int = 0,
    token: str = TOKEN,
    window: str = "0",
) -> FleetConfig:
    """A fleet with one Telegram bot ``tg`` polling ``api`` (1 s long polls)."""
    adapter_block = api.adapter_yaml(token) + "request_timeout: 2\n" + textwrap.dedent(adapter)
    return TELEGRAM.fleet(tmp_path, adapter_block, handlers=handlers, port=port, window=window)


@pytest.fixture
async def api() -> AsyncIterator[FakeBotAPI]:
    async with support.serving(FakeBotAPI().start()) as server:
        yield server


def me() -> tg.User:
    return tg.User(
        id=int(TOKEN.split(":")[0]), first_name="Callboard Test", is_bot=True, username="callboard_test_bot"
    )


def people() -> dict[str, dict[str, Any]]:
    return {
        "ann": user(1001, "Ann", username="ann", last_name="Lee", language_code="en"),
        "bob": user(1002, "Bob", username="bob"),
        "cy": user(1003, "Cy"),
    }
