"""The unified platform API and every platform action, called on a running
bot's adapter against the fake Slack: what went over the wire, what came back,
and how refusals are classified."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callboard.adapters.slack.adapter import SlackAdapter
from callboard.adapters.slack.errors import SlackAPIError
from callboard.adapters.slack.render import RenderError
from callboard.app import Running
from callboard.engine.entities import At, File, Forward, Image, MessageChain, Plain, User
from callboard.engine.events import MessageReceived
from callboard.engine.platform import NotSupportedError
from callboard.testing.fake_slack import BOT_USER, Failure, FakeSlack
from tests.slack.conftest import ANN, BOB, BOT, GENERAL, SECRET_ROOM, running, slack_fleet
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def fleet(tmp_path: Path, slack: FakeSlack) -> AsyncIterator[Running]:
    async with running(slack_fleet(tmp_path, slack, handlers="")) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        yield fleet


def adapter(fleet: Running) -> SlackAdapter:
    api = fleet.stats.runtimes[BOT].api
    assert isinstance(api, SlackAdapter)
    return api


# ---------------------------------------------------------------------- messages


async def test_send_text_blocks_and_uploads(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    chain = MessageChain.of(
        "hi ",
        At(target=ANN),
        Image(url="https://img.example/a.png"),
        File(name="notes.txt", data=b"hello file"),
    )
    result = await bot.send_message("group", GENERAL, chain)
    post = slack.answered("chat.postMessage")[0]
    assert post["channel"] == GENERAL and post["text"] == f"hi <@{ANN}>"
    assert [b["type"] for b in post["blocks"]] == ["section", "image"]
    assert result.message_id == post.params.get("ts") or result.message_id == slack.messages[GENERAL][0]["ts"]
    assert [c.method for c in slack.calls if c.method.startswith("files.")] == [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    assert result.raw is not None and len(result.raw["files"]) == 1
    file_id = result.raw["files"][0]
    assert slack.contents[file_id] == b"hello file" and slack.files[file_id]["name"] == "notes.txt"
    shared = slack.messages[GENERAL][-1]
    assert shared["files"][0]["id"] == file_id


async def test_reply_goes_into_the_thread(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    parent = slack.message(GENERAL, ANN, "question")
    event = MessageReceived(
        bot_id=BOT,
        adapter="slack",
        chat_type="group",
        chat_id=GENERAL,
        message_id=parent["ts"],
        message_chain=MessageChain.of("question"),
        sender=User(id=ANN),
    )
    await bot.reply_message(event, MessageChain.of("answer"), quote_origin=True)
    assert slack.answered("chat.postMessage")[-1]["thread_ts"] == parent["ts"]
    await bot.reply_message(event, MessageChain.of("inline"))
    assert slack.answered("chat.postMessage")[-1].get("thread_ts") is None
    await bot.send_message("group", GENERAL, MessageChain.of("in thread"), thread_id=parent["ts"])
    assert slack.answered("chat.postMessage")[-1]["thread_ts"] == parent["ts"]


async def test_edit_delete_forward_and_react(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    sent = await bot.send_message("group", GENERAL, MessageChain.of("draft"))
    assert sent.message_id is not None
    await bot.edit_message("group", GENERAL, sent.message_id, MessageChain.of("final <text>"))
    update = slack.answered("chat.update")[0]
    assert update["ts"] == sent.message_id and update["text"] == "final &lt;text&gt;"
    assert slack.messages[GENERAL][0]["text"] == "final &lt;text&gt;"
    with pytest.raises(RenderError):
        await bot.edit_message("group", GENERAL, sent.message_id, MessageChain.of(File(name="x", data=b"1")))
    forwarded = await bot.forward_message("group", GENERAL, sent.message_id, "private", slack.im(ANN))
    link = slack.answered("chat.postMessage")[-1]["text"]
    assert link.startswith("<https://fake.slack.example/archives/C0GENERAL/p") and forwarded.message_id
    theirs = slack.message(GENERAL, ANN, "nice")
    await bot.add_reaction("group", GENERAL, theirs["ts"], ":thumbsup:")
    assert slack.reactions[(GENERAL, theirs["ts"])] == [(BOT_USER, "thumbsup")]
    await bot.delete_message("group", GENERAL, sent.message_id)
    assert all(m["ts"] != sent.message_id for m in slack.messages[GENERAL])
    with pytest.raises(SlackAPIError) as refused:
        await bot.delete_message("group", GENERAL, theirs["ts"])
    assert refused.value.code == "cant_delete_message" and refused.value.permanent


async def test_get_message_from_history_and_from_a_thread(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    parent = slack.message(GENERAL, ANN, "top <@U0BOB>")
    reply = slack.message(GENERAL, BOB, "in thread", thread_ts=parent["ts"])
    got = await bot.get_message("group", GENERAL, parent["ts"])
    assert got.message_id == parent["ts"] and list(got.message_chain) == [Plain(text="top "), At(target=BOB)]
    assert got.sender.id == ANN and got.chat_type == "group"
    threaded = await bot.get_message("group", GENERAL, reply["ts"])
    assert threaded.text == "in thread" and threaded.thread_id == parent["ts"]
    assert len(slack.calls_of("conversations.replies")) == 1
    with pytest.raises(SlackAPIError):
        await bot.get_message("group", GENERAL, "1.000001")


# ---------------------------------------------------------------------- groups and users


async def test_group_info_list_and_members_paginated(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    for i in range(230):
        slack.add_channel(f"C1{i:04d}", f"room-{i}", members=[ANN], bot=i % 2 == 0)
    many = [f"U9{i:04d}" for i in range(450)]
    slack.add_channel("C0BIG", "big", members=many)
    info = await bot.get_group_info(GENERAL)
    assert (info.id, info.name, info.member_count, info.raw["channel_type"]) == (
        GENERAL,
        "general",
        3,
        "channel",
    )
    groups = await bot.get_group_list()
    ids = {g.id for g in groups}
    assert GENERAL in ids and SECRET_ROOM in ids and "C0BIG" in ids
    assert len([i for i in ids if i.startswith("C1")]) == 115  # only the rooms the bot is in
    assert len(slack.calls_of("conversations.list")) >= 2  # more than one page
    members = await bot.get_group_member_list("C0BIG")
    assert [m.user.id for m in members] == [*many, BOT_USER]
    assert len(slack.calls_of("conversations.members")) == 3


async def test_rename_kick_and_leave(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    await bot.set_group_name(GENERAL, "town-square")
    assert slack.channels[GENERAL]["name"] == "town-square"
    with pytest.raises(SlackAPIError, match="invalid_name_specials"):
        await bot.set_group_name(GENERAL, "Not Valid")
    await bot.kick_member(GENERAL, BOB)
    assert BOB not in slack.members[GENERAL]
    await bot.leave_group(SECRET_ROOM)
    assert BOT_USER not in slack.members[SECRET_ROOM]


async def test_user_info_is_cached(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    user = await bot.get_user_info(ANN)
    again = await bot.get_user_info(ANN)
    assert user == again
    assert (user.id, user.nickname, user.username, user.raw["real_name"]) == (ANN, "ann", "ann", "Ann Lee")
    assert len(slack.calls_of("users.info")) == 1
    with pytest.raises(SlackAPIError, match="user_not_found"):
        await bot.get_user_info("U0NOBODY")


async def test_files_upload_url_and_download(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    file_id = await bot.upload_file(b"\x89PNG...", "chart.png")
    assert slack.files[file_id]["mimetype"] == "image/png"
    url = await bot.get_file_url(file_id)
    assert url == slack.files[file_id]["url_private_download"] and "xoxb" not in url
    shared = slack.add_file(b"their bytes", "theirs.txt", "text/plain", user=ANN)
    got = await bot.call_platform_api("download_file", {"file_id": shared["id"]})
    assert base64.b64decode(got["content_base64"]) == b"their bytes" and got["name"] == "theirs.txt"
    with pytest.raises(SlackAPIError, match="file_not_found"):
        await bot.get_file_url("F404")


# ---------------------------------------------------------------------- platform actions


async def test_platform_actions(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    message = slack.message(GENERAL, ANN, "pin me")
    await bot.call_platform_api("post_ephemeral", {"channel": GENERAL, "user": ANN, "text": "only you"})
    assert slack.ephemeral == [{"channel": GENERAL, "user": ANN, "text": "only you"}]
    await bot.call_platform_api("pin_message", {"channel": GENERAL, "timestamp": message["ts"]})
    assert slack.pins[GENERAL] == [message["ts"]]
    await bot.call_platform_api("unpin_message", {"channel": GENERAL, "timestamp": message["ts"]})
    assert slack.pins[GENERAL] == []
    me = await bot.call_platform_api("auth_test")
    assert me["user_id"] == BOT_USER
    view = await bot.call_platform_api(
        "open_view",
        {"trigger_id": "1.2.t", "view": {"type": "modal", "title": {"type": "plain_text", "text": "Hi"}}},
    )
    assert view["view"]["id"].startswith("V")
    later = int(time.time()) + 3600
    scheduled = await bot.call_platform_api(
        "schedule_message", {"channel": GENERAL, "text": "later", "post_at": later}
    )
    assert scheduled["scheduled_message_id"] == slack.scheduled[0]["id"]
    await bot.call_platform_api("conversations.setTopic", {"channel": GENERAL, "topic": "news"})
    assert slack.channels[GENERAL]["topic"] == {"value": "news"}
    with pytest.raises(NotSupportedError):
        await bot.call_platform_api("admin.users.remove", {})
    with pytest.raises(ValueError, match="post_ephemeral: user"):
        await bot.call_platform_api("post_ephemeral", {"channel": GENERAL, "text": "x"})
    with pytest.raises(NotSupportedError):
        await bot.mute_member(GENERAL, ANN)
    manifest = bot.manifest()
    assert "mute_member" not in manifest.apis and "edit_message" in manifest.apis
    assert {"post_ephemeral", "schedule_message", "conversations.setTopic"} <= {
        a.action for a in manifest.platform_actions
    }


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("failure", "code", "permanent", "retry_after"),
    [
        (Failure.error("channel_not_found"), "channel_not_found", True, None),
        (Failure.error("msg_too_long"), "msg_too_long", True, None),
        (Failure.error("internal_error"), "internal_error", False, None),
        (Failure.ratelimited(7), "ratelimited", False, 7.0),
        (Failure.server_error(503), "http_503", False, None),
        (Failure.drop(), "network", False, None),
    ],
)
async def test_refusals_are_classified(
    fleet: Running, slack: FakeSlack, failure: Failure, code: str, permanent: bool, retry_after: float | None
) -> None:
    slack.fail("chat.postMessage", failure)
    with pytest.raises(SlackAPIError) as refused:
        await adapter(fleet).send_message("group", GENERAL, MessageChain.of("x"))
    assert refused.value.code == code
    assert refused.value.permanent is permanent
    assert refused.value.retry_after == retry_after


async def test_a_real_refusal_from_the_fake(fleet: Running, slack: FakeSlack) -> None:
    slack.add_channel("C0OUT", "outside", members=[ANN], bot=False)
    with pytest.raises(SlackAPIError) as refused:
        await adapter(fleet).send_message("group", "C0OUT", MessageChain.of("hi"))
    assert refused.value.code == "not_in_channel" and refused.value.permanent
    with pytest.raises(SlackAPIError, match="channel_not_found"):
        await adapter(fleet).send_message(
            "group", "C0NONE", MessageChain.of(Forward(from_chat_id="C0NONE", from_message_id="1.1"))
        )


async def test_web_methods_by_name_go_as_a_form(fleet: Running, slack: FakeSlack) -> None:
    bot = adapter(fleet)
    await bot.call_platform_api("conversations.setTopic", {"channel": GENERAL, "topic": "a & b"})
    call = slack.answered("conversations.setTopic")[0]
    assert call["topic"] == "a & b"
    slack.add_user("U0EVE", "eve", email="eve@example.com")
    got = await bot.call_platform_api("users.lookupByEmail", {"email": "eve@example.com"})
    assert got["user"]["id"] == "U0EVE"
    assert slack.answered("users.lookupByEmail")[0].params == {"email": "eve@example.com"}
    with pytest.raises(SlackAPIError, match="users_not_found"):
        await bot.call_platform_api("users.lookupByEmail", {"email": "nobody@example.com"})
