"""The unified platform API and every platform action, called on a running
bot's adapter against the fake Bot API: what went over the wire, what came back,
and how refusals are classified."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callboard.adapters.telegram.adapter import TelegramAdapter
from callboard.adapters.telegram.errors import TelegramAPIError
from callboard.adapters.telegram.render import RenderError
from callboard.app import Running
from callboard.engine.entities import At, File, Forward, Image, MemberRole, MessageChain, Plain, Quote, Voice
from callboard.engine.events import MessageReceived
from callboard.engine.platform import NotSupportedError
from callboard.testing.fake_telegram import Failure, FakeBotAPI, group_chat, member, private_chat
from tests.support import eventually
from tests.telegram.conftest import BOT, people, running, telegram_fleet

pytestmark = pytest.mark.timeout(60)

P = people()
ANN, BOB, CY = P["ann"], P["bob"], P["cy"]
GROUP = group_chat(-100500, "Team")
DEFAULTS = {
    "can_send_messages": True,
    "can_send_photos": True,
    "can_send_polls": False,
    "can_invite_users": True,
}


@pytest.fixture
async def fleet(tmp_path: Path, api: FakeBotAPI) -> AsyncIterator[Running]:
    api.add_chat(private_chat(ANN), bio="likes tea")
    api.add_chat(
        GROUP,
        members=[member(ANN, "creator"), member(BOB, "administrator", custom_title="mod"), member(CY)],
        description="Team chat",
        permissions=DEFAULTS,
        invite_link="https://t.me/+team",
    )
    async with running(telegram_fleet(tmp_path, api, handlers="")) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
        yield fleet


def adapter(fleet: Running) -> TelegramAdapter:
    api = fleet.stats.runtimes[BOT].api
    assert isinstance(api, TelegramAdapter)
    return api


# ---------------------------------------------------------------------- messages


async def test_send_text_with_mention_and_link(fleet: Running, api: FakeBotAPI) -> None:
    chain = MessageChain.of(
        "hi ", At(target="1002", display="Bob"), " see ", Plain(text="docs", raw={"url": "https://d.io"})
    )
    result = await adapter(fleet).send_message("group", "-100500", chain)
    (call,) = api.calls_of("sendMessage")
    assert call["chat_id"] == -100500 and call["text"] == "hi Bob see docs"
    assert call["entities"] == [
        {
            "type": "text_mention",
            "offset": 3,
            "length": 3,
            "user": {"id": 1002, "first_name": "Bob", "is_bot": False},
        },
        {"type": "text_link", "offset": 11, "length": 4, "url": "https://d.io"},
    ]
    assert result.message_id == str(api.sent[-1]["message_id"])
    assert result.raw == {"chat_id": "-100500", "message_ids": [result.message_id]}


async def test_send_media_quote_and_forward(fleet: Running, api: FakeBotAPI) -> None:
    original = api.message(GROUP, ANN, "the original")
    stored = api.add_file(b"ogg-bytes", path="voice/v.ogg")
    chain = MessageChain.of(
        Quote(message_id=str(original["message_id"])),
        Image(url="https://img.example/cat.png"),
        "a cat",
        File(name="notes.txt", data=b"hello file"),
        Voice(file_id=stored),
        Forward(from_chat_id="-100500", from_message_id=str(original["message_id"])),
    )
    result = await adapter(fleet).send_message("group", "-100500", chain)
    photo, document, voice, forward = (
        api.calls_of("sendPhoto")[0],
        api.calls_of("sendDocument")[0],
        api.calls_of("sendVoice")[0],
        api.calls_of("forwardMessage")[0],
    )
    assert photo["photo"] == "https://img.example/cat.png" and photo["caption"] == "a cat"
    assert photo["reply_parameters"]["message_id"] == original["message_id"]  # the quote: first message only
    assert "reply_parameters" not in document.params
    assert document.files["document"] == ("notes.txt", b"hello file")  # uploaded as multipart
    assert voice["voice"] == stored
    assert forward["from_chat_id"] == -100500 and forward["message_id"] == original["message_id"]
    assert len(result.raw["message_ids"]) == 4 and result.message_id == result.raw["message_ids"][0]
    assert api.sent[-1]["forward_origin"]["sender_user"]["id"] == 1001


async def test_reply_quotes_and_stays_in_the_topic(fleet: Running, api: FakeBotAPI) -> None:
    forum = api.add_chat(group_chat(-100600, "Forum", is_forum=True))
    original = api.message(forum, ANN, "question", thread=3)
    event = MessageReceived(
        bot_id=BOT,
        adapter="telegram",
        chat_type="group",
        chat_id="-100600",
        thread_id="3",
        message_id=str(original["message_id"]),
        message_chain=MessageChain.of("question"),
        sender={"id": "1001"},
    )
    await adapter(fleet).reply_message(event, MessageChain.of("answer"), quote_origin=True)
    await adapter(fleet).reply_message(event, MessageChain.of("no quote"))
    quoted, plain = api.calls_of("sendMessage")
    assert (
        quoted["message_thread_id"] == 3
        and quoted["reply_parameters"]["message_id"] == original["message_id"]
    )
    assert plain["message_thread_id"] == 3 and "reply_parameters" not in plain.params
    assert api.sent[-2]["reply_to_message"]["text"] == "question"


async def test_edit_text_and_caption_then_delete(fleet: Running, api: FakeBotAPI) -> None:
    bot = adapter(fleet)
    text = await bot.send_message("group", "-100500", MessageChain.of("draft"))
    await bot.edit_message("group", "-100500", str(text.message_id), MessageChain.of("final"))
    assert api.messages[(-100500, int(text.message_id))]["text"] == "final"
    photo = await bot.send_message("group", "-100500", MessageChain.of(Image(url="https://x/p.png"), "old"))
    await bot.edit_message("group", "-100500", str(photo.message_id), MessageChain.of("new caption"))
    assert api.messages[(-100500, int(photo.message_id))]["caption"] == "new caption"
    assert len(api.calls_of("editMessageCaption")) == 1  # after Telegram said the photo has no text
    await bot.delete_message("group", "-100500", str(text.message_id))
    assert (-100500, int(text.message_id)) not in api.messages
    with pytest.raises(TelegramAPIError, match="Message to delete not found") as info:
        await bot.delete_message("group", "-100500", str(text.message_id))
    assert info.value.permanent
    with pytest.raises(RenderError, match="one text"):
        await bot.edit_message("group", "-100500", str(text.message_id), MessageChain.of(Image(file_id="x")))


async def test_reactions_and_group_name(fleet: Running, api: FakeBotAPI) -> None:
    bot = adapter(fleet)
    message = api.message(GROUP, ANN, "nice")
    await bot.add_reaction("group", "-100500", str(message["message_id"]), "👍")
    assert api.reactions[(-100500, message["message_id"])] == [{"type": "emoji", "emoji": "👍"}]
    await bot.add_reaction("group", "-100500", str(message["message_id"]), "custom:5368")
    assert api.reactions[(-100500, message["message_id"])] == [
        {"type": "custom_emoji", "custom_emoji_id": "5368"}
    ]
    await bot.set_group_name("-100500", "Team 2")
    assert api.chats[-100500]["title"] == "Team 2"


async def test_forward_message(fleet: Running, api: FakeBotAPI) -> None:
    original = api.message(GROUP, BOB, "share this")
    result = await adapter(fleet).forward_message(
        "group", "-100500", str(original["message_id"]), "private", "1001"
    )
    (call,) = api.calls_of("forwardMessage")
    assert (call["chat_id"], call["from_chat_id"], call["message_id"]) == (
        1001,
        -100500,
        original["message_id"],
    )
    assert api.sent[-1]["chat"]["id"] == 1001 and api.sent[-1]["text"] == "share this"
    assert result.message_id == str(api.sent[-1]["message_id"])


# ---------------------------------------------------------------------- groups and users


async def test_group_info_members_and_users(fleet: Running) -> None:
    bot = adapter(fleet)
    group = await bot.get_group_info("-100500")
    assert (group.id, group.name, group.description, group.member_count) == (
        "-100500",
        "Team",
        "Team chat",
        4,
    )
    assert group.raw == {"telegram_type": "supergroup", "invite_link": "https://t.me/+team"}
    admins = await bot.get_group_member_list("-100500")
    assert {(m.user.id, m.role, m.title) for m in admins} == {
        ("1001", MemberRole.OWNER, None),
        ("1002", MemberRole.ADMIN, "mod"),
        ("123456", MemberRole.ADMIN, None),
    }
    cy = await bot.get_group_member_info("-100500", "1003")
    assert (cy.user.nickname, cy.role, cy.raw["status"]) == ("Cy", MemberRole.MEMBER, "member")
    user = await bot.get_user_info("1001")
    assert (user.id, user.nickname, user.username, user.raw) == (
        "1001",
        "Ann Lee",
        "ann",
        {"bio": "likes tea"},
    )
    with pytest.raises(TelegramAPIError, match="User not found"):
        await bot.get_group_member_info("-100500", "999")


async def test_mute_unmute_kick_leave(fleet: Running, api: FakeBotAPI) -> None:
    bot = adapter(fleet)
    await bot.mute_member("-100500", "1003", duration=600)
    first = api.calls_of("restrictChatMember")[0]
    assert first["use_independent_chat_permissions"] is True
    assert set(first["permissions"].values()) == {False} and "can_send_voice_notes" in first["permissions"]
    assert abs(first["until_date"] - (time.time() + 600)) < 5
    assert api.members[-100500][1003]["status"] == "restricted"
    await bot.mute_member("-100500", "1003", duration=5)  # Telegram would make this one permanent
    assert abs(api.calls_of("restrictChatMember")[1]["until_date"] - (time.time() + 30)) < 5
    await bot.mute_member("-100500", "1003")
    assert "until_date" not in api.calls_of("restrictChatMember")[2].params
    await bot.unmute_member("-100500", "1003")
    restored = api.calls_of("restrictChatMember")[3]
    assert restored["permissions"] == DEFAULTS  # the group's defaults, not "everything"
    await bot.kick_member("-100500", "1003")
    assert [c.method for c in api.calls[-2:]] == ["banChatMember", "unbanChatMember"]
    assert api.calls[-1]["only_if_banned"] is True and api.members[-100500][1003]["status"] == "left"
    await bot.leave_group("-100500")
    assert api.left_chats == [-100500]


async def test_file_url_downloads_and_upload_is_not_supported(fleet: Running, api: FakeBotAPI) -> None:
    bot = adapter(fleet)
    file_id = api.add_file(b"%PDF-1.7", path="documents/r.pdf")
    url = await bot.get_file_url(file_id)
    assert url == f"{api.base_file_url}{api.token}/documents/r.pdf"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert await response.read() == b"%PDF-1.7"
    with pytest.raises(TelegramAPIError, match="Invalid file_id") as info:
        await bot.get_file_url("nope")
    assert api.token not in str(info.value)
    with pytest.raises(NotSupportedError, match="'telegram' does not support 'upload_file'"):
        await bot.upload_file(b"x", "x.txt")


# ---------------------------------------------------------------------- platform actions


async def test_every_platform_action(fleet: Running, api: FakeBotAPI) -> None:
    bot = adapter(fleet)
    pinned = api.message(GROUP, ANN, "rules")
    mid = pinned["message_id"]

    async def act(action: str, /, **params: Any) -> dict[str, Any]:
        return await bot.call_platform_api(action, {"chat_id": "-100500", **params})

    assert await act("pin_message", message_id=mid, disable_notification=True) == {"ok": True}
    assert api.pinned[-100500] == [mid] and api.calls[-1]["disable_notification"] is True
    assert await act("unpin_message", message_id=mid) == {"ok": True} and api.pinned[-100500] == []
    await act("pin_message", message_id=mid)
    assert await act("unpin_all_messages") == {"ok": True} and api.pinned[-100500] == []
    admins = await act("get_chat_administrators")
    assert sorted(a["user"]["id"] for a in admins["administrators"]) == [1001, 1002, 123456]
    await act("set_chat_title", title="Renamed")
    assert api.chats[-100500]["title"] == "Renamed"
    await act("set_chat_description", description="About us")
    assert api.chat_info[-100500]["description"] == "About us"
    assert await act("get_chat_member_count") == {"count": 4}
    await act("send_chat_action", action="upload_photo")
    assert api.calls[-1]["action"] == "upload_photo"
    link = await act("create_chat_invite_link", name="spring", member_limit=10, creates_join_request=False)
    assert link["invite_link"].startswith("https://t.me/+") and link["name"] == "spring"
    assert link["member_limit"] == 10
    answered = await bot.call_platform_api(
        "answer_callback_query", {"callback_query_id": "cb7", "text": "done", "show_alert": True}
    )
    assert answered == {"ok": True}
    assert api.callback_answers[-1] == {"callback_query_id": "cb7", "text": "done", "show_alert": True}


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        ("pin_message", {"chat_id": "-100500"}, "telegram pin_message: message_id: Field required"),
        (
            "set_chat_title",
            {"chat_id": "-100500", "title": ""},
            "title: String should have at least 1 character",
        ),
        ("send_chat_action", {"chat_id": "1", "action": "dancing"}, "unknown chat action"),
        ("answer_callback_query", {"callback_query_id": "x", "colour": "red"}, "colour: Extra inputs"),
    ],
)
async def test_bad_action_params_are_clear_errors(
    fleet: Running, action: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await adapter(fleet).call_platform_api(action, params)


async def test_undeclared_action_is_not_supported(fleet: Running) -> None:
    with pytest.raises(NotSupportedError, match="call_platform_api:ban_everyone"):
        await adapter(fleet).call_platform_api("ban_everyone", {})


# ---------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("failure", "permanent", "retry_after", "text"),
    [
        (Failure.chat_not_found(), True, None, "Chat not found"),
        (Failure.blocked(), True, None, "bot was blocked by the user"),
        (Failure.flood(7), False, 7.0, "Flood control exceeded"),
        (Failure.server_error(500), False, None, "Internal Server Error"),
        (Failure.server_error(502), False, None, "Bad Gateway"),
        (Failure.invalid_json(), False, None, "Invalid server response"),
        (Failure.drop(), False, None, "Server disconnected"),
        (Failure.http(400, "Bad Request: message is too long"), True, None, "Message is too long"),
        (Failure.unauthorized(), True, None, "rejected the bot token"),
    ],
)
async def test_refusals_are_classified(
    fleet: Running,
    api: FakeBotAPI,
    failure: Failure,
    permanent: bool,
    retry_after: float | None,
    text: str,
) -> None:
    api.fail("sendMessage", failure)
    with pytest.raises(TelegramAPIError) as info:
        await adapter(fleet).send_message("private", "1001", MessageChain.of("hi"))
    assert info.value.permanent is permanent and info.value.retry_after == retry_after
    assert text in str(info.value) and str(info.value).startswith("Telegram sendMessage: ")
    assert api.token not in str(info.value)


async def test_a_half_sent_long_text_resumes_where_it_stopped(fleet: Running, api: FakeBotAPI) -> None:
    bot = adapter(fleet)
    text = "\n".join(f"line {i} " + "x" * 80 for i in range(100))  # about 8,900 characters: three parts
    api.fail("sendMessage", Failure.none(), Failure.server_error(502))
    with pytest.raises(TelegramAPIError):
        await bot.send_message("private", "1001", MessageChain.of(text), idempotency_key="k1")
    result = await bot.send_message("private", "1001", MessageChain.of(text), idempotency_key="k1")
    sent = [c["text"] for c in api.answered("sendMessage")]
    assert len(sent) == 3 and "\n".join(sent) == text  # part one was not sent again
    assert result.raw["message_ids"] == [str(m["message_id"]) for m in api.sent]
    # without a key nothing is remembered: a retry starts over
    api.fail("sendMessage", Failure.none(), Failure.server_error(502))
    with pytest.raises(TelegramAPIError):
        await bot.send_message("private", "1001", MessageChain.of(text))
    await bot.send_message("private", "1001", MessageChain.of(text))
    assert len(api.answered("sendMessage")) == 3 + 1 + 3


def test_manifest() -> None:
    manifest = TelegramAdapter.manifest()
    assert manifest.name == "telegram" and manifest.max_text_length == 4096
    assert manifest.apis == [
        "send_message",
        "reply_message",
        "edit_message",
        "delete_message",
        "forward_message",
        "add_reaction",
        "get_group_info",
        "get_group_member_list",
        "get_group_member_info",
        "set_group_name",
        "mute_member",
        "unmute_member",
        "kick_member",
        "leave_group",
        "get_user_info",
        "get_file_url",
        "call_platform_api",
    ]
    assert [a.action for a in manifest.platform_actions] == [
        "pin_message",
        "unpin_message",
        "unpin_all_messages",
        "get_chat_administrators",
        "set_chat_title",
        "set_chat_description",
        "get_chat_member_count",
        "send_chat_action",
        "create_chat_invite_link",
        "answer_callback_query",
    ]
    limits = manifest.rate_limits
    assert (
        limits.per_bot_per_second,
        limits.per_private_chat_per_second,
        limits.per_group_chat_per_minute,
    ) == (
        30,
        1,
        20,
    )
    assert "message.received" in manifest.events and "bot.muted" in manifest.events
