"""Socket Mode through a running engine against the fake Slack: envelopes are
acknowledged only after the journal has their events, replies go out through
chat.postMessage, the bot's own messages never come back in, and the
connection recovers from drops, refreshes and silence."""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
from pathlib import Path

import aiohttp
import pytest

from callboard.adapters.slack.adapter import SlackAdapter
from callboard.engine.entities import Image
from callboard.engine.events import FeedbackReceived, MessageReceived, PlatformSpecific
from callboard.testing.fake_slack import APP_TOKEN, BOT_TOKEN, BOT_USER, Failure, FakeSlack
from tests.slack.conftest import ANN, BOT, GENERAL, running, slack_fleet, stored_events, texts
from tests.support import eventually, stall_appends

pytestmark = pytest.mark.timeout(60)


async def test_a_dm_is_journaled_acknowledged_and_echoed(tmp_path: Path, slack: FakeSlack) -> None:
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket()
        dm = slack.im(ANN)
        event_id = slack.push(slack.message(dm, ANN, "hello &lt;world&gt;"))
        calls = await slack.wait_calls("chat.postMessage", 1)
        assert calls[0]["channel"] == dm
        assert calls[0]["text"] == "hello &lt;world&gt;"
        await slack.wait_acked()
        assert slack.acks[0] == event_id  # then the echo of the reply
        events = await stored_events(fleet)
        received = [e for e in events if isinstance(e, MessageReceived)]
        assert len(received) == 1 and received[0].text == "hello <world>"
        assert received[0].chat_type == "private" and received[0].chat_id == dm
        assert received[0].sender.id == ANN
        # the reply came back as an event (Slack echoes the bot's own messages): not stored
        await eventually(lambda: not slack.pending)
        assert len([e for e in await stored_events(fleet) if isinstance(e, MessageReceived)]) == 1
        assert fleet.stats.runtimes[BOT].api.adapter_name == "slack"


async def test_many_messages_keep_their_order_and_are_answered_once(tmp_path: Path, slack: FakeSlack) -> None:
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket()
        dm = slack.im(ANN)
        sent = [f"m{i}" for i in range(200)]
        for text in sent:
            slack.push(slack.message(dm, ANN, text))
        await slack.wait_calls("chat.postMessage", len(sent), timeout=30)
        assert texts(slack) == sent
        await slack.wait_acked()
        events = await stored_events(fleet)
        assert [e.text for e in events if isinstance(e, MessageReceived)] == sent
        assert slack.max_open == 1


async def test_a_redelivered_event_is_acknowledged_and_handled_once(tmp_path: Path, slack: FakeSlack) -> None:
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket()
        dm = slack.im(ANN)
        event = slack.message(dm, ANN, "once")
        event_id = slack.push(event)
        await slack.wait_calls("chat.postMessage", 1)
        await slack.wait_acked()
        # Slack sends an event again when it missed the ack: same event, new envelope
        slack.push(event, event_id=event_id)
        await slack.wait_acked()
        assert slack.served[event_id] == 2
        assert texts(slack) == ["once"]
        assert len([e for e in await stored_events(fleet) if isinstance(e, MessageReceived)]) == 1


async def test_no_ack_before_the_commit_and_a_redelivery_meanwhile_is_dropped(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket()
        stall_appends(monkeypatch, fleet, seconds=1.5, count=1)
        slack.redeliver_after = 0.3
        dm = slack.im(ANN)
        event_id = slack.push(slack.message(dm, ANN, "slow"))
        await eventually(lambda: slack.served[event_id] >= 2)
        assert event_id in slack.pending  # not acknowledged while the append is not durable
        await slack.wait_calls("chat.postMessage", 1)
        await slack.wait_acked()
        assert texts(slack) == ["slow"]
        assert len([e for e in await stored_events(fleet) if isinstance(e, MessageReceived)]) == 1


@pytest.mark.parametrize("fault", ["drop", "disconnect", "mute"])
async def test_the_connection_recovers(tmp_path: Path, slack: FakeSlack, fault: str) -> None:
    async with running(slack_fleet(tmp_path, slack)):
        await slack.wait_socket()
        dm = slack.im(ANN)
        slack.push(slack.message(dm, ANN, "before"))
        await slack.wait_calls("chat.postMessage", 1)
        if fault == "drop":
            slack.drop_socket()
        elif fault == "disconnect":
            slack.disconnect()
        else:
            slack.mute()
        slack.push(slack.message(dm, ANN, "after"))
        if fault == "mute":
            await eventually(lambda: slack.opened >= 2, timeout=20)
            slack.mute(False)
        await slack.wait_calls("chat.postMessage", 2, timeout=30)
        await slack.wait_acked()
        assert collections.Counter(texts(slack)) == {"before": 1, "after": 1}
        assert slack.opened >= 2


async def test_a_mention_in_a_channel_is_answered_once_in_its_thread_session(
    tmp_path: Path, slack: FakeSlack
) -> None:
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket()
        chatter = slack.message(GENERAL, ANN, "not for the bot")
        slack.push(chatter)
        mention = slack.message(GENERAL, ANN, f"<@{BOT_USER}> ping")
        slack.push(mention)
        slack.push(slack.app_mention(mention))  # Slack sends both for a mention
        in_thread = slack.message(GENERAL, ANN, f"<@{BOT_USER}> pong", thread_ts=mention["ts"])
        slack.push(in_thread)
        await slack.wait_calls("chat.postMessage", 2)
        await slack.wait_acked()
        posts = slack.answered("chat.postMessage")
        assert [(p["text"], p.get("thread_ts")) for p in posts] == [("ping", None), ("pong", mention["ts"])]
        received = [e for e in await stored_events(fleet) if isinstance(e, MessageReceived)]
        assert [e.session_key().name for e in received] == [
            f"group:{GENERAL}",
            f"group:{GENERAL}:{mention['ts']}",
        ]


@pytest.mark.parametrize(
    ("method", "code"), [("auth.test", "invalid_auth"), ("apps.connections.open", "token_revoked")]
)
async def test_a_refused_token_stops_the_bot_with_a_clear_error(
    tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture, method: str, code: str
) -> None:
    slack.fail(method, Failure.error(code))
    with caplog.at_level(logging.INFO):
        async with running(slack_fleet(tmp_path, slack)) as fleet:
            await eventually(lambda: BOT not in fleet.stats.runtimes)
            await asyncio.sleep(1.5)  # and no retry after a backoff would have passed
            assert len(slack.calls_of(method)) == 1
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert f"Slack refused the token on {method} ({code})" in messages
    assert BOT_TOKEN not in messages and APP_TOKEN not in messages


async def test_transient_failures_at_start_are_retried(tmp_path: Path, slack: FakeSlack) -> None:
    slack.fail("auth.test", Failure.server_error(503))
    slack.fail("apps.connections.open", Failure.ratelimited(1), Failure.drop())
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket(timeout=30)
        slack.push(slack.message(slack.im(ANN), ANN, "made it"))
        await slack.wait_calls("chat.postMessage", 1)
        assert fleet.stats.connections[BOT][0]
        assert len(slack.calls_of("apps.connections.open")) == 3


async def test_app_uninstalled_stops_the_bot(tmp_path: Path, slack: FakeSlack) -> None:
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket()
        slack.push({"type": "app_uninstalled"})
        await eventually(lambda: BOT not in fleet.stats.runtimes)
        assert not slack.pending  # acknowledged: it is in the journal
        events = await stored_events(fleet)
        assert [e.type for e in events] == ["platform.specific"]


async def test_a_busy_engine_leaves_envelopes_unacknowledged_until_it_can_take_them(
    tmp_path: Path, slack: FakeSlack
) -> None:
    slack.redeliver_after = 0.5
    async with running(slack_fleet(tmp_path, slack, session="max_pending: 5")) as fleet:
        await slack.wait_socket()
        dm = slack.im(ANN)
        sent = [f"b{i}" for i in range(40)]
        for text in sent:
            slack.push(slack.message(dm, ANN, text))
        await slack.wait_calls("chat.postMessage", len(sent), timeout=40)
        await slack.wait_acked()
        assert sorted(texts(slack)) == sorted(sent) and len(texts(slack)) == len(sent)
        assert max(slack.served.values()) >= 2  # some were refused and came again
        events = [e for e in await stored_events(fleet) if isinstance(e, MessageReceived)]
        assert len(events) == len(sent)


async def test_a_command_after_a_mention_and_interactions_over_the_socket(
    tmp_path: Path, slack: FakeSlack
) -> None:
    async with running(slack_fleet(tmp_path, slack)) as fleet:
        await slack.wait_socket()
        asked = slack.message(GENERAL, ANN, f"<@{BOT_USER}> /echo hi there")
        slack.push(asked)
        await slack.wait_calls("chat.postMessage", 1)
        assert texts(slack) == ["hi there"]  # the command stage saw "/echo hi there"
        slack.push_interactive(slack.block_action(GENERAL, asked["ts"], ANN, "vote", "dislike"))
        slack.push_command(slack.slash_command(GENERAL, ANN, "/callboard", "help"))
        await slack.wait_acked()
        events = await stored_events(fleet)
        feedback = [e for e in events if isinstance(e, FeedbackReceived)]
        assert len(feedback) == 1 and feedback[0].feedback_type == 2
        assert [e.action for e in events if isinstance(e, PlatformSpecific)] == ["slash_command"]


async def test_a_websocket_that_will_not_open_is_abandoned_and_retried(
    tmp_path: Path, slack: FakeSlack
) -> None:
    slack.refuse_sockets = 1_000  # the SDK would retry this one URL forever
    config = slack_fleet(tmp_path, slack, request_timeout="1")
    async with running(config) as fleet:
        await eventually(lambda: len(slack.calls_of("apps.connections.open")) >= 2, timeout=20)
        slack.refuse_sockets = 0
        await slack.wait_socket(timeout=30)
        await asyncio.sleep(1.5)  # no abandoned client opens a second socket later
        assert slack.opened == 1 and slack.max_open == 1
        slack.push(slack.message(slack.im(ANN), ANN, "finally"))
        await slack.wait_calls("chat.postMessage", 1)
        assert fleet.stats.connections[BOT][0]


async def test_a_shared_file_arrives_as_an_image_and_downloads_with_the_bot_token(
    tmp_path: Path, slack: FakeSlack
) -> None:
    async with running(slack_fleet(tmp_path, slack, handlers="")) as fleet:
        await slack.wait_socket()
        photo = slack.add_file(b"\x89PNG fake bytes", "cat.png", "image/png", user=ANN)
        slack.push(slack.message(slack.im(ANN), ANN, "my cat", files=[photo]))
        await slack.wait_acked()
        (event,) = [e for e in await stored_events(fleet) if isinstance(e, MessageReceived)]
        (image,) = event.message_chain.components(Image)
        assert image.file_id == photo["id"] and image.mime == "image/png" and event.text == "my cat"
        bot = fleet.stats.runtimes[BOT].api
        assert isinstance(bot, SlackAdapter)
        url = await bot.get_file_url(image.file_id)
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 403  # the URL alone is not enough: Slack wants the bot token
        got = await bot.call_platform_api("download_file", {"file_id": image.file_id})
        assert base64.b64decode(got["content_base64"]) == b"\x89PNG fake bytes"
        assert got["mimetype"] == "image/png"
