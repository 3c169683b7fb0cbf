"""The long connection end to end: lark-oapi's real ws client against the fake
platform's frame protocol, each event answered only after the journal has it."""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path

import pytest

from callboard.app import Running
from callboard.engine.events import MessageReceived
from callboard.testing.fake_lark import APP_SECRET, Failure, FakeLark
from tests.lark.conftest import ANN, BOT, lark_fleet, running, stored_events
from tests.support import eventually, stall_appends

pytestmark = pytest.mark.timeout(60)


async def test_a_message_is_stored_answered_and_echoed(tmp_path: Path, lark: FakeLark) -> None:
    lark.add_user(ANN, "Ann")
    chat = lark.p2p(ANN)
    async with running(lark_fleet(tmp_path, lark)) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0], timeout=20)
        event_id = lark.push(lark.message_event(chat, ANN, "hello"))
        await lark.wait_calls("send_message", 1)
        await lark.wait_acked()
        assert lark.texts_sent() == ["hello"]
        assert lark.acked(event_id) == 1
        events = await stored_events(fleet)
        assert len(events) == 1 and isinstance(events[0], MessageReceived)
        assert events[0].chat_type == "private" and events[0].chat_id == chat
        assert events[0].sender.id == ANN


async def connected(fleet: Running) -> None:
    await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0], timeout=20)


def texts(lark: FakeLark, chat: str, words: list[str]) -> list[str]:
    return [lark.push(lark.message_event(chat, ANN, word)) for word in words]


async def handled_once(fleet: Running, count: int) -> None:
    events = await stored_events(fleet)
    keys = collections.Counter(e.dedup_key for e in events)
    assert len(keys) == count and set(keys.values()) == {1}, keys
    await eventually(lambda: fleet.stats.runtimes[BOT].counters.handled_events == count)


async def test_an_event_is_answered_only_after_the_journal_committed(
    tmp_path: Path, lark: FakeLark, monkeypatch: pytest.MonkeyPatch
) -> None:
    lark.add_user(ANN, "Ann")
    chat = lark.p2p(ANN)
    async with running(lark_fleet(tmp_path, lark, handlers="")) as fleet:
        await connected(fleet)
        stall_appends(monkeypatch, fleet, seconds=1.5, count=1)  # a slow disk
        (event_id,) = texts(lark, chat, ["slow"])
        await eventually(lambda: lark.served(event_id) == 1)
        await asyncio.sleep(1.0)
        assert lark.acked(event_id) == 0  # delivered, not yet durable: not answered
        await lark.wait_acked()
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(1,)]


async def test_redeliveries_are_handled_once(tmp_path: Path, lark: FakeLark) -> None:
    lark.add_user(ANN, "Ann")
    chat = lark.p2p(ANN)
    async with running(lark_fleet(tmp_path, lark)) as fleet:
        await connected(fleet)
        payload = lark.message_event(chat, ANN, "once")
        lark.push(payload)
        lark.push(payload)  # the same event again
        again = lark.envelope("im.message.receive_v1", payload["event"])  # same message, new event id
        lark.push(again)
        await lark.wait_acked()
        await lark.wait_calls("send_message", 1)
        await handled_once(fleet, 1)
        await asyncio.sleep(0.3)
        assert lark.texts_sent() == ["once"]


async def test_a_dropped_connection_reconnects_and_loses_nothing(tmp_path: Path, lark: FakeLark) -> None:
    lark.add_user(ANN, "Ann")
    chat = lark.p2p(ANN)
    async with running(lark_fleet(tmp_path, lark)) as fleet:
        await connected(fleet)
        texts(lark, chat, ["before"])
        await lark.wait_calls("send_message", 1)
        lark.hold("send_message")
        await lark.drop_connections()
        texts(lark, chat, ["while away 1", "while away 2"])  # queued: nobody is connected
        lark.release()
        await lark.wait_calls("send_message", 3, timeout=20)
        await lark.wait_acked()
        assert lark.texts_sent() == ["before", "while away 1", "while away 2"]
        assert fleet.system.metrics.restarts["LarkConnection"] >= 1
        await handled_once(fleet, 3)
    assert lark.overlaps == 0  # the old socket was closed before a new one opened


async def test_a_silent_connection_is_replaced(tmp_path: Path) -> None:
    lark = await FakeLark(ping_interval=1).start()
    try:
        lark.add_user(ANN, "Ann")
        chat = lark.p2p(ANN)
        async with running(lark_fleet(tmp_path, lark, adapter="stale_after: 2.5")) as fleet:
            await connected(fleet)
            first = lark.connects
            lark.silence()  # open, but no pongs and no events
            texts(lark, chat, ["lost in silence"])
            await eventually(lambda: lark.connects > first, timeout=20)
            lark.silence(False)
            await lark.wait_calls("send_message", 1, timeout=20)
            assert fleet.system.metrics.restarts["LarkConnection"] >= 1
            assert lark.texts_sent() == ["lost in silence"]
    finally:
        await lark.close()


async def test_endpoint_failures_are_retried(tmp_path: Path, lark: FakeLark) -> None:
    lark.fail("ws_endpoint", Failure.server_error(503), Failure.error(1, "system busy", status=200))
    lark.add_user(ANN, "Ann")
    async with running(lark_fleet(tmp_path, lark)) as fleet:
        await connected(fleet)
        texts(lark, lark.p2p(ANN), ["finally"])
        await lark.wait_calls("send_message", 1)
        assert len(lark.calls_of("ws_endpoint")) == 3


async def test_rejected_credentials_stop_the_bot_with_a_clear_error(
    tmp_path: Path, lark: FakeLark, caplog: pytest.LogCaptureFixture
) -> None:
    lark.app_secret = "another secret"
    with caplog.at_level(logging.INFO):
        async with running(lark_fleet(tmp_path, lark)) as fleet:
            await eventually(lambda: BOT not in fleet.stats.runtimes)
            await asyncio.sleep(1.5)  # no retry after a backoff either
            assert len(lark.calls_of("tenant_access_token")) == 1
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "Lark rejected the app's credentials" in messages and "check app_id and app_secret" in messages
    assert APP_SECRET not in messages


async def test_two_bots_each_run_their_own_long_connection(tmp_path: Path, lark: FakeLark) -> None:
    """lark-oapi keeps one module-level loop; two clients on two threads must not share it."""
    other = await FakeLark().start()
    try:
        for server in (lark, other):
            server.add_user(ANN, "Ann")
        first = lark_fleet(tmp_path, lark)
        second = lark_fleet(tmp_path, other)
        bot = second.bots[0].model_copy(update={"id": "lk2"})
        config = first.model_copy(update={"bots": [first.bots[0], bot]})
        async with running(config) as fleet:
            await eventually(
                lambda: all(fleet.stats.connections.get(b, (False, ""))[0] for b in (BOT, "lk2"))
            )
            for round_ in range(3):
                texts(lark, lark.p2p(ANN), [f"a{round_}"])
                texts(other, other.p2p(ANN), [f"b{round_}"])
            await lark.wait_calls("send_message", 3)
            await other.wait_calls("send_message", 3)
            assert lark.texts_sent() == ["a0", "a1", "a2"] and other.texts_sent() == ["b0", "b1", "b2"]
    finally:
        await other.close()


async def test_a_full_backlog_holds_events_back_in_order(tmp_path: Path, lark: FakeLark) -> None:
    """A session may hold 2 unhandled events; a debounce window keeps them unhandled for a
    while. Later events wait (unanswered) instead of being refused, and keep their order."""
    lark.add_user(ANN, "Ann")
    chat = lark.p2p(ANN)
    config = lark_fleet(tmp_path, lark, handlers="", window="0.6s")
    bot = config.bots[0]
    session = bot.session.model_copy(update={"max_pending": 2})
    config = config.model_copy(update={"bots": [bot.model_copy(update={"session": session})]})
    async with running(config) as fleet:
        await connected(fleet)
        words = [f"w{i}" for i in range(6)]
        texts(lark, chat, words)
        await lark.wait_acked(timeout=30)
        events = await stored_events(fleet)
        assert [e.text for e in events if isinstance(e, MessageReceived)] == words
        assert fleet.stats.runtimes[BOT].in_flight.refused > 0  # the backlog did push back
        assert all(d.answers == [200] for d in lark.deliveries.values())  # none answered as failed


async def test_card_actions_and_the_welcome_over_the_long_connection(tmp_path: Path, lark: FakeLark) -> None:
    lark.add_chat("oc_new", name="New group", members=[ANN])
    config = lark_fleet(tmp_path, lark, handlers="", adapter='bot_added_welcome: "Hello, team!"')
    async with running(config) as fleet:
        await connected(fleet)
        added = lark.envelope(
            "im.chat.member.bot.added_v1",
            {"chat_id": "oc_new", "name": "New group", "operator_id": {"open_id": ANN}},
        )
        lark.push(added)
        lark.push(added)  # redelivered: still one welcome
        action = {
            "operator": {"open_id": ANN},
            "token": "c-9",
            "action": {"tag": "button", "value": {"feedback_type": 1}},
            "context": {"open_message_id": "om_card", "open_chat_id": "oc_new"},
        }
        lark.push(lark.envelope("card.action.trigger", action))
        await lark.wait_acked()
        await lark.wait_calls("send_message", 1)
        await asyncio.sleep(0.3)
        assert lark.texts_sent() == ["Hello, team!"] and lark.sent[0]["chat_id"] == "oc_new"
        kinds = [type(e).__name__ for e in await stored_events(fleet)]
        assert kinds == ["BotInvitedToGroup", "FeedbackReceived"]


async def test_the_outbound_honours_lark_rate_limits_and_refusals(tmp_path: Path, lark: FakeLark) -> None:
    """Through the echo pipeline: 99991400 is retried after Lark's reset time, a bad token
    is fetched again at once, and a permanent refusal is not repeated."""
    lark.add_user(ANN, "Ann")
    chat = lark.p2p(ANN)
    async with running(lark_fleet(tmp_path, lark)) as fleet:
        await connected(fleet)
        lark.fail("send_message", Failure.rate_limited(1), Failure.token_invalid())
        started = asyncio.get_running_loop().time()
        texts(lark, chat, ["limited"])
        await lark.wait_calls("send_message", 1)
        assert asyncio.get_running_loop().time() - started >= 0.9  # waited for the reset
        codes = [c.code for c in lark.calls_of("send_message")]
        assert codes == [99991400, 99991663, 0], codes
        lark.fail("send_message", Failure.error(230002, "the bot is not in the chat"))
        texts(lark, chat, ["refused"])
        await eventually(lambda: len(lark.calls_of("send_message")) == 4)
        await asyncio.sleep(1.0)
        assert len(lark.calls_of("send_message")) == 4  # permanent: not retried
        assert lark.texts_sent() == ["limited"]


async def test_an_event_split_into_frames_is_reassembled(tmp_path: Path, lark: FakeLark) -> None:
    lark.add_user(ANN, "Ann")
    lark.split_frames = 3
    async with running(lark_fleet(tmp_path, lark)) as fleet:
        await connected(fleet)
        texts(lark, lark.p2p(ANN), ["a long message " * 50])
        await lark.wait_acked()
        await lark.wait_calls("send_message", 1)
        assert lark.texts_sent() == ["a long message " * 50]
        assert [d.answers for d in lark.deliveries.values()] == [[200]]  # one answer for the three frames
