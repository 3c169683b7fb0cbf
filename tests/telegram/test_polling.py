"""Long polling against the fake Bot API through a running engine: the offset
is confirmed only after the journal has the updates, failures reconnect with
backoff, and every update is handled exactly once."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from pathlib import Path

import pytest

from callboard.app import Running
from callboard.engine.events import MessageReceived, PlatformSpecific
from callboard.testing.fake_telegram import Failure, FakeBotAPI, group_chat, private_chat
from tests.support import eventually, stall_appends
from tests.telegram.conftest import (
    BOT,
    ECHO,
    UNLIMITED,
    people,
    running,
    stored_events,
    telegram_fleet,
)

pytestmark = pytest.mark.timeout(90)

ANN = people()["ann"]
CHAT = private_chat(ANN)


def push_texts(api: FakeBotAPI, texts: list[str], chat: dict[str, object] = CHAT) -> list[int]:
    api.add_chat(chat)
    return [api.push("message", api.message(chat, ANN, text)) for text in texts]


def replies(api: FakeBotAPI) -> list[str]:
    return [c["text"] for c in api.answered("sendMessage")]


async def handled_once(fleet: Running, update_ids: list[int]) -> None:
    """Each update is in the journal once, and every event was handled."""
    events = await stored_events(fleet)
    stored = collections.Counter(e.raw["update_id"] for e in events)
    assert set(update_ids) <= set(stored) and set(stored.values()) == {1}, stored
    assert await fleet.journal.query("SELECT COUNT(*) FROM events WHERE done_at IS NULL") == [(0,)]


async def next_poll_held(api: FakeBotAPI) -> None:
    """Hold getUpdates and wait until the engine's next poll is waiting on the hold."""
    api.hold("getUpdates")
    await eventually(lambda: api.waiting["getupdates"] == 1)


async def test_updates_are_polled_answered_and_confirmed(tmp_path: Path, api: FakeBotAPI) -> None:
    async with running(
        telegram_fleet(tmp_path, api, adapter=UNLIMITED + "\nallowed_updates: [message, chat_member]")
    ) as fleet:
        ids = push_texts(api, ["one", "two", "three"])
        await api.wait_calls("sendMessage", 3)
        assert replies(api) == ["one", "two", "three"]
        await api.wait_confirmed()
        await eventually(lambda: fleet.stats.runtimes[BOT].counters.handled_events == 3)
        await handled_once(fleet, ids)
        polls = api.calls_of("getUpdates")
        assert polls[0].params.get("offset") is None
        assert polls[0]["allowed_updates"] == ["message", "chat_member"] and polls[0]["timeout"] == 1
        assert any(p.params.get("offset") == ids[-1] + 1 for p in polls)
        # the bot told who it is, and deleted no webhook it did not have
        assert api.calls_of("getMe") and not api.calls_of("deleteWebhook")
        assert fleet.stats.connections[BOT][0] is True
    assert api.conflicts == 0


async def test_offset_moves_only_after_the_journal_committed(
    tmp_path: Path, api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(telegram_fleet(tmp_path, api, handlers="")) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        stall_appends(monkeypatch, fleet, seconds=2.0, count=5)  # a slow disk
        ids = push_texts(api, [f"m{i}" for i in range(5)])
        await eventually(lambda: all(api.served[u] == 1 for u in ids))
        await asyncio.sleep(1.5)
        # delivered, not yet durable: no getUpdates has confirmed them
        assert [u["update_id"] for u in api.pending] == ids
        assert not any(c.params.get("offset", 0) > ids[0] for c in api.calls_of("getUpdates"))
        await api.wait_confirmed()
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(5,)]
        assert fleet.system.metrics.restarts["TelegramConnection"] == 0


@pytest.mark.parametrize(
    "failure",
    [
        Failure.server_error(500),
        Failure.server_error(502),
        Failure.invalid_json(),
        Failure.drop(),
        Failure.truncate(),
    ],
    ids=["500", "502", "invalid-json", "dropped", "truncated"],
)
async def test_a_failed_poll_reconnects_and_loses_nothing(
    tmp_path: Path, api: FakeBotAPI, failure: Failure
) -> None:
    async with running(telegram_fleet(tmp_path, api)) as fleet:
        first = push_texts(api, ["before"])
        await api.wait_calls("sendMessage", 1)
        await next_poll_held(api)
        second = push_texts(api, ["after 1", "after 2"])
        api.fail("getUpdates", failure)  # the held poll carries them, and fails
        api.release()
        await api.wait_calls("sendMessage", 3, timeout=20)
        assert replies(api) == ["before", "after 1", "after 2"]
        await api.wait_confirmed()
        assert fleet.system.metrics.restarts["TelegramConnection"] == 1
        # a fresh getMe after the restart: the connection really was rebuilt
        assert len(api.calls_of("getMe")) == 2
        await eventually(lambda: fleet.stats.runtimes[BOT].counters.handled_events == 3)
        await handled_once(fleet, first + second)
    assert api.conflicts == 0


async def test_a_batch_lost_in_transit_is_read_again_and_deduplicated(
    tmp_path: Path, api: FakeBotAPI
) -> None:
    """The updates reach the journal; the poll that would confirm them fails;
    the restarted connection reads them again and the journal drops them."""
    async with running(telegram_fleet(tmp_path, api)) as fleet:
        await next_poll_held(api)
        ids = push_texts(api, ["a", "b", "c"])
        api.fail("getUpdates", Failure.none(), Failure.server_error(502))  # deliver, then fail to confirm
        api.release()
        await api.wait_confirmed(timeout=20)
        assert [api.served[u] for u in ids] == [2, 2, 2]  # read twice
        runtime = fleet.stats.runtimes[BOT]
        await eventually(lambda: runtime.counters.duplicates == 3)
        assert fleet.system.metrics.restarts["TelegramConnection"] == 1
        await api.wait_calls("sendMessage", 3)
        assert replies(api) == ["a", "b", "c"]  # answered once
        await eventually(lambda: runtime.counters.handled_events == 3)
        await handled_once(fleet, ids)


async def test_a_rejected_token_stops_the_bot_with_a_clear_error(
    tmp_path: Path, api: FakeBotAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.fail("getMe", Failure.unauthorized())
    with caplog.at_level(logging.INFO):
        async with running(telegram_fleet(tmp_path, api)) as fleet:
            await eventually(lambda: BOT not in fleet.stats.runtimes)
            assert len(api.calls_of("getMe")) == 1  # no retry
            await_free = time.monotonic() + 2.5
            while time.monotonic() < await_free:  # and still none after a backoff would have passed
                assert len(api.calls_of("getMe")) == 1
                await asyncio.sleep(0.1)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "Telegram rejected the bot token on getMe" in messages and "check the token" in messages
    assert api.token not in messages


async def test_404_from_the_bot_api_stops_the_bot_too(tmp_path: Path, api: FakeBotAPI) -> None:
    async with running(telegram_fleet(tmp_path, api)) as fleet:
        push_texts(api, ["hello"])
        await api.wait_calls("sendMessage", 1)
        api.fail("getUpdates", Failure.http(404, "Not Found"))
        await eventually(lambda: BOT not in fleet.stats.runtimes)
        assert fleet.system.metrics.restarts["TelegramConnection"] == 0


async def test_a_silent_connection_restarts_and_its_batch_still_reaches_sessions(
    tmp_path: Path, api: FakeBotAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Health is freshness: a poller stuck on a stalled journal is restarted.
    Stopping waits for the batch it had appended, so those events are routed
    (none sits accepted but never handled); the new poller reads the batch
    again and the journal drops the copies."""
    adapter = UNLIMITED + "\nstale_after: 3.5"
    async with running(telegram_fleet(tmp_path, api, adapter=adapter)) as fleet:
        ids = push_texts(api, ["warm-up"])
        await api.wait_calls("sendMessage", 1)
        stall_appends(monkeypatch, fleet, seconds=5.0, count=2)  # a stalled disk
        ids += push_texts(api, ["x", "y"])
        await api.wait_calls("sendMessage", 3, timeout=30)
        await api.wait_confirmed(timeout=20)
        assert fleet.system.metrics.restarts["TelegramConnection"] == 1
        assert "StaleConnection('getUpdates has not answered for 4s')" in caplog.text
        assert replies(api) == ["warm-up", "x", "y"]
        assert [api.served[u] for u in ids[1:]] == [2, 2]
        await eventually(lambda: fleet.stats.runtimes[BOT].counters.handled_events == 3)
        await handled_once(fleet, ids)
    assert api.conflicts == 0


async def test_an_update_ptb_cannot_parse_does_not_wedge_the_bot(tmp_path: Path, api: FakeBotAPI) -> None:
    async with running(telegram_fleet(tmp_path, api)) as fleet:
        ids = push_texts(api, ["before"])
        broken = {"update_id": 424242, "message": {"message_id": 1, "chat": CHAT, "text": "no date"}}
        api.push_raw(broken)
        ids += push_texts(api, ["after"])
        await api.wait_calls("sendMessage", 2)
        await api.wait_confirmed()
        events = await stored_events(fleet)
        kinds = [(type(e).__name__, getattr(e, "action", None)) for e in events]
        assert kinds == [
            ("MessageReceived", None),
            ("PlatformSpecific", "unparsed_update"),
            ("MessageReceived", None),
        ]
        unparsed = events[1]
        assert isinstance(unparsed, PlatformSpecific) and unparsed.data == broken
        assert fleet.system.metrics.restarts["TelegramConnection"] == 0
        assert replies(api) == ["before", "after"]


async def test_a_webhook_left_behind_is_removed_before_polling(tmp_path: Path, api: FakeBotAPI) -> None:
    api.webhook_retry = 60.0  # nothing listens there; the fake would retry
    await api._set_webhook(None, {"url": "http://127.0.0.1:9/elsewhere"}, {})  # type: ignore[arg-type]
    async with running(telegram_fleet(tmp_path, api)):
        push_texts(api, ["hi"])
        await api.wait_calls("sendMessage", 1)
        assert len(api.calls_of("deleteWebhook")) == 1 and api.webhook is None


async def test_group_and_topic_replies(tmp_path: Path, api: FakeBotAPI) -> None:
    forum = group_chat(-100777, "Forum", is_forum=True)
    api.add_chat(forum)
    async with running(
        telegram_fleet(
            tmp_path,
            api,
            handlers=ECHO.replace("{type: echo}", "{type: reply, text: 'got {text}', quote: true}"),
        )
    ) as fleet:
        message = api.message(forum, ANN, "in topic", thread=9)
        api.push("message", message)
        (call,) = await api.wait_calls("sendMessage", 1)
        assert call["text"] == "got in topic"
        assert call["chat_id"] == -100777 and call["message_thread_id"] == 9
        assert call["reply_parameters"]["message_id"] == message["message_id"]
        (event,) = await stored_events(fleet)
        assert isinstance(event, MessageReceived) and event.session_key().name == "group:-100777:9"
