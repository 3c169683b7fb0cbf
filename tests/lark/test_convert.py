"""Lark deliveries -> engine events, for every event type the adapter maps.
Payloads are built by the fake platform (the shapes Lark sends); lookups the
converter makes (quoted message, a reaction's chat) are answered by a stub."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from callboard.adapters.lark.convert import Converter, parse_resource_ref
from callboard.engine.entities import (
    At,
    AtAll,
    Face,
    File,
    Forward,
    Image,
    Plain,
    PlatformComponent,
    Quote,
    Voice,
)
from callboard.engine.events import (
    BotInvitedToGroup,
    BotRemovedFromGroup,
    FeedbackReceived,
    GroupInfoUpdated,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageReaction,
    MessageReceived,
    PlatformSpecific,
)
from callboard.testing.fake_lark import BOT_OPEN_ID, FakeLark

ANN, BOB = "ou_ann", "ou_bob"


class Stub:
    """The lookups, answered from the fake's stored messages and chats (no HTTP)."""

    def __init__(self, lark: FakeLark) -> None:
        self.lark = lark
        self.asked: list[str] = []
        self.tickets: list[str] = []

    async def message_items(self, message_id: str, tenant_key: str | None) -> list[dict[str, Any]]:
        self.asked.append(message_id)
        item = self.lark.messages.get(message_id)
        if item is None:
            raise RuntimeError("not found")
        children = [m for m in self.lark.messages.values() if m.get("upper_message_id") == message_id]
        return [item, *children]

    async def chat_mode(self, chat_id: str, tenant_key: str | None) -> str:
        return str(self.lark.chats[chat_id]["chat_mode"])

    def app_ticket(self, ticket: str) -> None:
        self.tickets.append(ticket)


@pytest.fixture
def lark() -> FakeLark:
    server = FakeLark()
    server.add_user(ANN, "Ann")
    server.add_user(BOB, "Bob")
    server.add_chat("oc_group", name="Team", members=[ANN, BOB])
    return server


def converter(lark: FakeLark) -> tuple[Converter, Stub]:
    stub = Stub(lark)
    conv = Converter("lk", stub)
    conv.set_bot(BOT_OPEN_ID)
    return conv, stub


async def one(conv: Converter, payload: dict[str, Any]) -> Any:
    events = await conv.convert(payload)
    assert len(events) == 1, events
    return events[0]


async def test_private_text(lark: FakeLark) -> None:
    conv, _ = converter(lark)
    chat = lark.p2p(ANN)
    payload = lark.message_event(chat, ANN, "hi there")
    event = await one(conv, payload)
    assert isinstance(event, MessageReceived)
    assert (event.chat_type, event.chat_id, event.thread_id, event.group) == ("private", chat, None, None)
    assert event.sender.id == ANN and event.sender.raw["union_id"] == "on_ann"
    assert event.text == "hi there" and event.message_id == payload["event"]["message"]["message_id"]
    assert event.dedup_key == f"lark:msg:{event.message_id}"
    assert event.raw["event_id"] == payload["header"]["event_id"]


async def test_group_mentions_resolve_and_the_bot_is_recognised(lark: FakeLark) -> None:
    conv, _ = converter(lark)
    mentions = [
        {"key": "@_user_1", "open_id": BOT_OPEN_ID, "name": "Callboard"},
        {"key": "@_user_2", "open_id": BOB, "name": "Bob"},
    ]
    payload = lark.message_event("oc_group", ANN, "@_user_1 ask @_user_2 and @_all now", mentions=mentions)
    event = await one(conv, payload)
    assert event.chat_type == "group" and event.group.id == "oc_group"
    parts = list(event.message_chain)
    assert parts[0] == At(target=BOT_OPEN_ID, display="Callboard", raw={"me": True})
    assert parts[1] == Plain(text=" ask ")
    assert parts[2] == At(target=BOB, display="Bob")
    assert isinstance(parts[4], AtAll) and parts[3] == Plain(text=" and ")
    assert event.raw["mentions_bot"] is True


async def test_post_with_title_links_images_and_mentions(lark: FakeLark) -> None:
    conv, _ = converter(lark)
    content = {
        "title": "Plan",
        "content": [
            [{"tag": "text", "text": "see "}, {"tag": "a", "text": "docs", "href": "https://x.invalid"}],
            [{"tag": "at", "user_id": "@_user_1"}, {"tag": "img", "image_key": "img_1"}],
            [{"tag": "emotion", "emoji_type": "SMILE"}, {"tag": "code_block", "language": "py", "text": "1"}],
        ],
    }
    payload = lark.message_event(
        "oc_group",
        ANN,
        content,
        msg_type="post",
        mentions=[{"key": "@_user_1", "open_id": BOB, "name": "Bob"}],
    )
    event = await one(conv, payload)
    parts = list(event.message_chain)
    assert parts[0] == Plain(text="Plan\nsee ")
    assert parts[1] == Plain(text="docs", raw={"url": "https://x.invalid"})
    assert parts[2] == Plain(text="\n") and parts[3] == At(target=BOB, display="Bob")
    assert isinstance(parts[4], Image) and parse_resource_ref(parts[4].file_id or "") == (
        event.message_id,
        "image",
        "img_1",
    )
    assert isinstance(parts[6], Face) and parts[6].face_id == "SMILE"
    assert parts[7] == Plain(text="1", raw={"code": "py"})


@pytest.mark.parametrize(
    ("msg_type", "content", "kind"),
    [
        ("image", {"image_key": "img_k"}, Image),
        ("file", {"file_key": "file_k", "file_name": "a.pdf"}, File),
        ("audio", {"file_key": "file_a", "duration": 2500}, Voice),
        ("media", {"file_key": "file_v", "image_key": "img_v", "file_name": "v.mp4", "duration": 9}, File),
        ("sticker", {"file_key": "stk_1"}, Face),
        ("interactive", {"elements": [[{"tag": "text", "text": "x"}]]}, PlatformComponent),
        ("share_chat", {"chat_id": "oc_x"}, PlatformComponent),
    ],
)
async def test_media_and_other_types(
    lark: FakeLark, msg_type: str, content: dict[str, Any], kind: type
) -> None:
    conv, _ = converter(lark)
    event = await one(conv, lark.message_event(lark.p2p(ANN), ANN, content, msg_type=msg_type))
    (part,) = list(event.message_chain)
    assert isinstance(part, kind)
    if isinstance(part, Voice):
        assert part.duration == 2.5 and part.mime == "audio/opus"
        assert parse_resource_ref(part.file_id or "") == (event.message_id, "file", "file_a")
    if isinstance(part, File):
        assert part.name == content["file_name"]
    if isinstance(part, PlatformComponent):
        assert part.component_type == ("card" if msg_type == "interactive" else msg_type)
        assert part.data == content


async def test_a_reply_quotes_the_parent_looked_up(lark: FakeLark) -> None:
    conv, stub = converter(lark)
    parent = lark.message_event("oc_group", BOB, "original")
    parent_id = parent["event"]["message"]["message_id"]
    reply = lark.message_event("oc_group", ANN, "answer", parent_id=parent_id, root_id=parent_id)
    event = await one(conv, reply)
    quote, text = list(event.message_chain)
    assert isinstance(quote, Quote) and quote.message_id == parent_id and quote.sender_id == BOB
    assert quote.origin == [Plain(text="original")] and text == Plain(text="answer")
    assert stub.asked == [parent_id]


async def test_a_quote_that_cannot_be_looked_up_still_arrives(lark: FakeLark) -> None:
    conv, _ = converter(lark)
    event = await one(conv, lark.message_event("oc_group", ANN, "answer", parent_id="om_gone"))
    quote = next(iter(event.message_chain))
    assert isinstance(quote, Quote) and quote.message_id == "om_gone" and quote.origin == []


async def test_thread_messages_are_their_own_session(lark: FakeLark) -> None:
    conv, _ = converter(lark)
    event = await one(
        conv, lark.message_event("oc_group", ANN, "in a thread", thread_id="omt_1", root_id="om_r")
    )
    assert event.thread_id == "omt_1" and event.session_key().thread == "omt_1"
    assert conv.threads["omt_1"] == "om_r"


async def test_merge_forward_fetches_its_messages(lark: FakeLark) -> None:
    conv, _ = converter(lark)
    payload = lark.message_event("oc_group", ANN, "Merged and Forwarded Message", msg_type="merge_forward")
    message_id = payload["event"]["message"]["message_id"]
    for index, text in enumerate(["one", "two"]):
        item = lark._store_message(
            f"om_child{index}", "oc_other", "text", orjson.dumps({"text": text}).decode(), BOB, "user"
        )
        item["upper_message_id"] = message_id
    event = await one(conv, payload)
    (forward,) = list(event.message_chain)
    assert isinstance(forward, Forward) and forward.nodes == [[Plain(text="one")], [Plain(text="two")]]


async def test_recall_reaction_and_member_events(lark: FakeLark) -> None:
    conv, stub = converter(lark)
    sent = lark.message_event("oc_group", ANN, "x")
    message_id = sent["event"]["message"]["message_id"]
    await one(conv, sent)
    recalled = await one(
        conv,
        lark.envelope(
            "im.message.recalled_v1",
            {"message_id": message_id, "chat_id": "oc_group", "recall_type": "message_owner"},
        ),
    )
    assert (
        isinstance(recalled, MessageDeleted)
        and recalled.chat_type == "group"
        and recalled.message_id == message_id
    )

    reaction = {
        "message_id": message_id,
        "reaction_type": {"emoji_type": "THUMBSUP"},
        "operator_type": "user",
        "user_id": {"open_id": BOB, "union_id": "on_bob", "user_id": "bob"},
        "action_time": "1",
    }
    added = await one(conv, lark.envelope("im.message.reaction.created_v1", reaction))
    assert isinstance(added, MessageReaction) and added.is_add and added.reaction == "THUMBSUP"
    assert (added.chat_type, added.chat_id, added.user.id) == ("group", "oc_group", BOB)
    assert stub.asked == []  # the chat was known from the message event
    removed = await one(conv, lark.envelope("im.message.reaction.deleted_v1", reaction))
    assert isinstance(removed, MessageReaction) and not removed.is_add

    # a reaction on a message never seen: its chat is looked up
    other = lark.message_event(lark.p2p(BOB), BOB, "y")
    fresh = Converter("lk", stub)
    found = await one(
        fresh,
        lark.envelope(
            "im.message.reaction.created_v1",
            reaction | {"message_id": other["event"]["message"]["message_id"]},
        ),
    )
    assert isinstance(found, MessageReaction) and found.chat_type == "private"

    users = [
        {"name": "Cy", "tenant_key": "t", "user_id": {"open_id": "ou_cy"}},
        {"name": "Di", "user_id": {"open_id": "ou_di"}},
    ]
    body = {"chat_id": "oc_group", "name": "Team", "operator_id": {"open_id": ANN}, "users": users}
    joined = await conv.convert(lark.envelope("im.chat.member.user.added_v1", body))
    assert [type(e) for e in joined] == [MemberJoined, MemberJoined]
    assert [e.member.id for e in joined] == ["ou_cy", "ou_di"] and joined[0].inviter.id == ANN
    assert joined[0].group.name == "Team" and joined[1].dedup_key == joined[0].dedup_key + ":1"
    left = await conv.convert(lark.envelope("im.chat.member.user.deleted_v1", body))
    assert all(isinstance(e, MemberLeft) and e.is_kicked for e in left)
    self_left = await conv.convert(
        lark.envelope(
            "im.chat.member.user.deleted_v1", body | {"operator_id": {"open_id": "ou_cy"}, "users": users[:1]}
        )
    )
    assert not self_left[0].is_kicked


async def test_bot_membership_chat_update_and_card_action(lark: FakeLark) -> None:
    conv, _ = converter(lark)
    body = {"chat_id": "oc_group", "name": "Team", "operator_id": {"open_id": ANN}, "external": False}
    invited = await one(conv, lark.envelope("im.chat.member.bot.added_v1", body))
    assert (
        isinstance(invited, BotInvitedToGroup)
        and invited.group.id == "oc_group"
        and invited.inviter.id == ANN
    )
    removed = await one(conv, lark.envelope("im.chat.member.bot.deleted_v1", body))
    assert isinstance(removed, BotRemovedFromGroup) and removed.operator.id == ANN

    change = {
        "chat_id": "oc_group",
        "operator_id": {"open_id": ANN},
        "after_change": {"name": "New", "description": "d"},
        "before_change": {"name": "Team", "description": ""},
    }
    updated = await one(conv, lark.envelope("im.chat.updated_v1", change))
    assert isinstance(updated, GroupInfoUpdated) and updated.changed_fields == ["description", "name"]
    assert updated.group.name == "New" and updated.raw["before_change"]["name"] == "Team"

    action = {
        "operator": {"open_id": BOB},
        "token": "c-123",
        "action": {"tag": "button", "value": {"feedback": "dislike", "content": "wrong"}},
        "context": {"open_message_id": "om_card", "open_chat_id": "oc_group"},
    }
    feedback = await one(conv, lark.envelope("card.action.trigger", action))
    assert isinstance(feedback, FeedbackReceived)
    assert (feedback.feedback_id, feedback.feedback_type, feedback.feedback_content) == ("c-123", 2, "wrong")
    assert (feedback.user_id, feedback.chat_type, feedback.chat_id, feedback.message_id) == (
        BOB,
        "group",
        "oc_group",
        "om_card",
    )
    assert feedback.session_key().chat_id == "oc_group"


async def test_unknown_events_and_app_tickets(lark: FakeLark) -> None:
    conv, stub = converter(lark)
    other = await one(conv, lark.envelope("im.chat.disbanded_v1", {"chat_id": "oc_group"}))
    assert isinstance(other, PlatformSpecific) and other.action == "im.chat.disbanded_v1"
    assert (
        other.data == {"chat_id": "oc_group"} and other.qualified_type == "platform.lark.im.chat.disbanded_v1"
    )
    ticket = {
        "uuid": "u1",
        "token": "t",
        "type": "event_callback",
        "event": {"app_ticket": "tk", "type": "app_ticket"},
    }
    event = await one(conv, ticket)
    assert isinstance(event, PlatformSpecific) and event.action == "app_ticket" and stub.tickets == ["tk"]
    assert event.dedup_key == "lark:v1:u1"
