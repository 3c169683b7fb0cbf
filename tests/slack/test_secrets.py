"""Tokens and the signing secret appear in no log line, no error, no status:
every logger is captured at DEBUG while the bot connects, reconnects, sends,
downloads a file, is refused, and refuses a forged request."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import orjson
import pytest

from callboard.adapters.slack.adapter import SlackAdapter
from callboard.adapters.slack.errors import SlackAPIError
from callboard.bench.harness import free_port
from callboard.engine.entities import MessageChain
from callboard.testing.fake_slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, Failure, FakeSlack
from tests.slack.conftest import ANN, BOT, running, slack_fleet
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_secrets_never_reach_logs_errors_or_status(
    tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    port = free_port()
    shown: list[str] = []
    with caplog.at_level(logging.DEBUG):
        async with running(slack_fleet(tmp_path, slack, mode=mode, port=port)) as fleet:
            if mode == "socket":
                await slack.wait_socket()
                slack.drop_socket()  # a reconnect, with the SDK logging
                await slack.wait_socket(2, timeout=20)
            else:
                await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
                slack.deliver_to(f"http://127.0.0.1:{port}/slack/{BOT}/events")
                status, body = await slack.post(
                    f"http://127.0.0.1:{port}/slack/{BOT}/events", b"{}", secret="forged0000000000000000"
                )
                assert status == 401
                shown.append(body.decode())
            slack.push(slack.message(slack.im(ANN), ANN, "hi"))
            await slack.wait_calls("chat.postMessage", 1, timeout=20)
            bot = fleet.stats.runtimes[BOT].api
            assert isinstance(bot, SlackAdapter)
            shared = slack.add_file(b"data", "f.txt", "text/plain", user=ANN)
            await bot.call_platform_api("download_file", {"file_id": shared["id"]})
            slack.fail("chat.postMessage", Failure.error("invalid_auth"))
            with pytest.raises(SlackAPIError) as refused:
                await bot.send_message("private", slack.im(ANN), MessageChain.of("x"))
            shown.append(str(refused.value))
            async with aiohttp.ClientSession() as http:
                for path in ("/status", "/readyz", "/metrics"):
                    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                        shown.append(await response.text())
    messages = [r.getMessage() for r in caplog.records]
    messages += [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    text = "\n".join(messages + shown)
    assert "chat.postMessage" in text  # the capture did see the traffic
    for secret in (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET):
        assert secret not in text
    assert orjson.dumps(shown)
