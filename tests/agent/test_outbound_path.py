"""Handlers' platform calls go through the outbound path (HandlerContext.api), on a
platform with real limits: the Telegram adapter against the fake Bot API.

A webhook's reaction meets Telegram's flood control and is retried after its
retry_after; an agent streams its answer into one message edited in place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callboard.testing.fake_openai import FakeOpenAI, Reply
from callboard.testing.fake_telegram import Failure, FakeBotAPI, private_chat, user
from callboard.testing.webhook_receiver import Answer, WebhookReceiver
from tests.support import API_KEY, eventually
from tests.telegram.conftest import BOT, running, telegram_fleet

pytestmark = pytest.mark.timeout(60)
ANN = user(1001, "Ann")
PRIVATE = private_chat(ANN)


@pytest.fixture
async def api() -> AsyncIterator[FakeBotAPI]:
    server = await FakeBotAPI().start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = await WebhookReceiver().start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_webhook_reaction_is_retried_after_flood_control(
    tmp_path: Path, api: FakeBotAPI, receiver: WebhookReceiver
) -> None:
    handlers = f"""
- event_type: message.received
  handler_type: webhook
  handler_config: {{url: "{receiver.url}", response_actions: true}}
"""
    async with running(telegram_fleet(tmp_path, api, handlers=handlers)) as fleet:
        api.add_chat(PRIVATE)
        message = api.message(PRIVATE, ANN, "react please")
        receiver.default = Answer(
            body={
                "actions": [
                    {
                        "type": "add_reaction",
                        "params": {"message_id": str(message["message_id"]), "reaction": "👍"},
                    }
                ]
            }
        )
        api.fail("setMessageReaction", Failure.flood(1))
        api.push("message", message)
        (done,) = await api.wait_calls("setMessageReaction", 1, timeout=20)
        refused = api.calls_of("setMessageReaction")[0]
        counters = fleet.stats.runtimes[BOT].counters
        await eventually(lambda: counters.runs == 1)
    assert refused.status == 429 and done.at - refused.at >= 0.95  # waited Telegram's retry_after
    assert counters.send_retries == 1 and counters.failed_runs == 0


async def test_an_agent_streams_by_editing_one_telegram_message(tmp_path: Path, api: FakeBotAPI) -> None:
    model = await FakeOpenAI(api_key=API_KEY).start()
    try:
        model.script(
            Reply(text="Telegram shows this answer growing word by word.", chunk_size=6, chunk_delay=0.05)
        )
        handlers = f"""
- event_type: message.received
  handler_type: agent
  handler_config:
    runner: openai
    runner_config: {{base_url: "{model.base_url}", api_key: "{API_KEY}", model: fake}}
    stream_interval: 100ms
"""
        async with running(telegram_fleet(tmp_path, api, handlers=handlers)):
            api.add_chat(PRIVATE)
            api.push("message", api.message(PRIVATE, ANN, "stream it"))
            await api.wait_calls("sendMessage", 1, timeout=20)
            await eventually(
                lambda: any(c["text"].endswith("word by word.") for c in api.answered("editMessageText")),
                timeout=20,
            )
    finally:
        await model.stop()
    (sent,) = api.answered("sendMessage")
    edits = api.answered("editMessageText")
    assert len(edits) >= 2 and len(sent["text"]) < len(edits[-1]["text"])
    assert len({str(e["message_id"]) for e in edits}) == 1  # one message, edited in place
