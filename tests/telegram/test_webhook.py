"""Webhook mode: setWebhook on start, deliveries checked against the secret
header and answered 200 only once stored, deleteWebhook on stop, and a
webhook someone else removed set again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from callboard.actors.config import FleetConfig
from callboard.app import Running
from callboard.bench.harness import free_port
from callboard.testing.fake_telegram import SECRET_HEADER, FakeBotAPI, private_chat
from tests.support import eventually, stall_appends
from tests.telegram.conftest import (
    BOT,
    UNLIMITED,
    people,
    running,
    stored_events,
    telegram_fleet,
)

pytestmark = pytest.mark.timeout(60)

SECRET = "s3cret-Token_1"
ANN = people()["ann"]
CHAT = private_chat(ANN)


def webhook_fleet(tmp_path: Path, api: FakeBotAPI, port: int, extra: str = "") -> tuple[FleetConfig, str]:
    url = f"http://127.0.0.1:{port}/telegram/{BOT}/webhook"
    adapter = (
        f"{UNLIMITED}\nmode: webhook\nwebhook_url: {url}\nsecret_token: {SECRET}\nmax_connections: 5\n{extra}"
    )
    return telegram_fleet(tmp_path, api, adapter=adapter, port=port), url


async def connected(fleet: Running) -> None:
    await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])


async def post(url: str, body: bytes, secret: str | None = SECRET) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_webhook_is_set_and_deliveries_are_answered(tmp_path: Path, api: FakeBotAPI) -> None:
    port = free_port()
    config, url = webhook_fleet(tmp_path, api, port, "allowed_updates: [message, callback_query]")
    api.add_chat(CHAT)
    async with running(config) as fleet:
        await connected(fleet)
        (call,) = api.calls_of("setWebhook")
        assert call["url"] == url and call["secret_token"] == SECRET
        assert call["allowed_updates"] == ["message", "callback_query"] and call["max_connections"] == 5
        for text in ("one", "two"):
            api.push("message", api.message(CHAT, ANN, text))
        await api.wait_calls("sendMessage", 2)
        assert [c["text"] for c in api.answered("sendMessage")] == ["one", "two"]
        await api.wait_confirmed()
        assert api.webhook is not None and api.webhook.statuses == [200, 200]
        assert fleet.stats.connections[BOT] == (
            True,
            f"webhook /telegram/{BOT}/webhook as @callboard_test_bot",
        )
        assert not api.calls_of("getUpdates")
    # stopped: the webhook is deleted, so Telegram keeps what comes next for later
    assert len(api.calls_of("deleteWebhook")) == 1 and api.webhook is None


async def test_wrong_or_missing_secret_is_refused_before_the_journal(tmp_path: Path, api: FakeBotAPI) -> None:
    port = free_port()
    config, url = webhook_fleet(tmp_path, api, port)
    update = orjson.dumps({"update_id": 1, "message": api.message(CHAT, ANN, "sneaky")})
    async with running(config) as fleet:
        await connected(fleet)
        for secret in ("wrong", None, SECRET + "x"):
            status, body = await post(url, update, secret)
            assert (status, body) == (401, {"ok": False, "error": "wrong secret token"})
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(0,)]
        status, _ = await post(url, update)
        assert status == 200
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(1,)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "integer update_id"),
        (b'{"update_id": "7"}', "integer update_id"),
    ],
)
async def test_bad_bodies_get_400_with_a_reason(
    tmp_path: Path, api: FakeBotAPI, body: bytes, reason: str
) -> None:
    port = free_port()
    config, url = webhook_fleet(tmp_path, api, port)
    async with running(config) as fleet:
        await connected(fleet)
        status, answer = await post(url, body)
        assert status == 400 and reason in str(answer["error"])
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(0,)]


async def test_a_redelivered_update_is_handled_once(tmp_path: Path, api: FakeBotAPI) -> None:
    port = free_port()
    config, url = webhook_fleet(tmp_path, api, port)
    api.add_chat(CHAT)
    update = orjson.dumps({"update_id": 99, "message": api.message(CHAT, ANN, "only once")})
    async with running(config) as fleet:
        await connected(fleet)
        assert (await post(url, update))[0] == 200
        assert (await post(url, update))[0] == 200  # Telegram retried: still acknowledged
        await api.wait_calls("sendMessage", 1)
        await eventually(lambda: fleet.stats.runtimes[BOT].counters.duplicates == 1)
        assert len(await stored_events(fleet)) == 1
        await asyncio.sleep(0.3)
        assert len(api.answered("sendMessage")) == 1


async def test_the_answer_waits_for_the_journal(
    tmp_path: Path, api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    config, url = webhook_fleet(tmp_path, api, port)
    async with running(config) as fleet:
        await connected(fleet)
        stall_appends(monkeypatch, fleet, seconds=1.5, count=1)  # a slow disk
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = asyncio.ensure_future(
            post(url, orjson.dumps({"update_id": 5, "message": api.message(CHAT, ANN, "x")}))
        )
        await asyncio.sleep(1.0)
        assert not answer.done()  # not acknowledged while the append is not durable
        assert (await answer)[0] == 200
        assert loop.time() - started >= 1.5


async def test_a_webhook_removed_elsewhere_is_set_again(tmp_path: Path, api: FakeBotAPI) -> None:
    port = free_port()
    config, url = webhook_fleet(tmp_path, api, port, "webhook_check_interval: 0.5")
    async with running(config) as fleet:
        await connected(fleet)
        await api._delete_webhook(None, {}, {})  # type: ignore[arg-type]  # another deployment did this
        await api.wait_calls("setWebhook", 2)
        assert api.webhook is not None and api.webhook.url == url
        assert fleet.system.metrics.restarts["TelegramConnection"] == 1


async def test_delivery_errors_reported_by_telegram_show_in_readiness(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    port = free_port()
    config, _ = webhook_fleet(tmp_path, api, port, "webhook_check_interval: 0.3")
    async with running(config) as fleet:
        await connected(fleet)
        assert api.webhook is not None
        api.webhook.last_error_message = "SSL error {error:0A000086:SSL routines::certificate verify failed}"
        detail = "Telegram reports webhook errors: SSL error"
        await eventually(lambda: detail in fleet.stats.connections[BOT][1])
        assert fleet.stats.connections[BOT][0] is False
        async with aiohttp.ClientSession() as http, http.get(f"{fleet.base_url}/readyz") as response:
            assert response.status == 503 and detail in await response.text()
        api.webhook.last_error_message = None
        await eventually(lambda: fleet.stats.connections[BOT][0] is True)
