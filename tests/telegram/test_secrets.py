"""The bot token is in every Bot API URL; it must appear in no log line, no
error, no status page. Every logger is captured at DEBUG while the connection
starts, fails, reconnects, is refused, and fetches a file URL."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from callboard.adapters.telegram.adapter import TelegramAdapter
from callboard.adapters.telegram.config import TelegramAdapterConfig
from callboard.adapters.telegram.errors import TelegramAPIError
from callboard.testing.fake_telegram import Failure, FakeBotAPI, private_chat, user
from tests.support import eventually
from tests.telegram.conftest import BOT, running, telegram_fleet

pytestmark = pytest.mark.timeout(60)


async def test_token_never_reaches_logs_errors_or_status(
    tmp_path: Path, api: FakeBotAPI, caplog: pytest.LogCaptureFixture
) -> None:
    ann = user(1001, "Ann")
    api.add_chat(private_chat(ann))
    file_id = api.add_file(b"data", path="photos/p.jpg")
    with caplog.at_level(logging.DEBUG):
        async with running(telegram_fleet(tmp_path, api)) as fleet:
            api.fail("getUpdates", Failure.truncate())  # a reconnect, with PTB and httpx logging
            api.push("message", api.message(private_chat(ann), ann, "hi"))
            await api.wait_calls("sendMessage", 1, timeout=20)
            bot = fleet.stats.runtimes[BOT].api
            assert isinstance(bot, TelegramAdapter)
            url = await bot.get_file_url(file_id)
            assert api.token in url  # the download URL needs it: the caller must keep it secret
            with pytest.raises(TelegramAPIError) as refused:
                await bot.get_file_url("missing")
            async with aiohttp.ClientSession() as http:
                for path in ("/readyz", "/api/bots", "/metrics", "/api/actors"):
                    async with http.get(fleet.base_url + path) as response:
                        assert api.token not in await response.text()
            api.fail("getUpdates", Failure.unauthorized())  # and finally the token is refused
            await eventually(lambda: BOT not in fleet.stats.runtimes, timeout=20)
    assert fleet.system.metrics.restarts["TelegramConnection"] == 1
    assert api.token not in str(refused.value)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Set Bot API URL" in logged and "getFile" in logged  # PTB's URL-printing logs were there
    assert "rejected the bot token" in logged
    assert api.token not in logged and api.token not in caplog.text
    assert api.token.split(":")[1] not in caplog.text  # not even the secret half


def test_config_never_shows_the_token() -> None:
    token = "42:AAsecret-part_xyz"
    config = TelegramAdapterConfig(
        token=token, mode="webhook", webhook_url="https://x/y", secret_token="hook-secret"
    )
    for text in (repr(config), str(config), config.model_dump_json()):
        assert "AAsecret-part_xyz" not in text and "hook-secret" not in text
