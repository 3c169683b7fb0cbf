"""Bot API updates (shaped like the real API's JSON) -> engine events, through
PTB's own parsing, one test per kind of update."""

from __future__ import annotations

from typing import Any

import pytest
import telegram as tg

from callboard.adapters.telegram.convert import Converter
from callboard.engine.entities import (
    At,
    File,
    Forward,
    Image,
    Plain,
    PlatformComponent,
    Quote,
    Voice,
    to_builtins,
)
from callboard.engine.events import (
    BotInvitedToGroup,
    BotMuted,
    BotRemovedFromGroup,
    BotUnmuted,
    Event,
    GroupInfoUpdated,
    MemberBanned,
    MemberJoined,
    MemberLeft,
    MemberUnbanned,
    MessageEdited,
    MessageReaction,
    MessageReceived,
    PlatformSpecific,
    SessionKey,
    decode_event,
    encode_event,
)
from callboard.testing.fake_telegram import FakeBotAPI, group_chat, member, private_chat, utf16_len
from tests.telegram.conftest import me, people

P = people()
ANN, BOB = P["ann"], P["bob"]
GROUP = group_chat(-100500, "Team")
FORUM = group_chat(-100600, "Forum", is_forum=True)
BOT_USER = FakeBotAPI().me
BOT_KEY = "update:123456"


def convert(
    kind: str, payload: dict[str, Any], *, update_id: int = 42, member_updates: bool = False
) -> list[Event]:
    update = tg.Update.de_json({"update_id": update_id, kind: payload}, None)
    assert update is not None
    events = Converter("tg", me(), member_updates=member_updates).convert(update)
    for event in events:  # every event survives the journal's JSON round trip
        assert decode_event(encode_event(event)) == event
    return events


def one(kind: str, payload: dict[str, Any], **kwargs: Any) -> Any:
    events = convert(kind, payload, **kwargs)
    assert len(events) == 1, events
    return events[0]


def entity(text: str, kind: str, part: str, **extra: Any) -> dict[str, Any]:
    """A MessageEntity over ``part`` of ``text``, offsets in UTF-16 units as Telegram counts."""
    start = text.index(part)
    return {"type": kind, "offset": utf16_len(text[:start]), "length": utf16_len(part), **extra}


@pytest.fixture
def api() -> FakeBotAPI:
    return FakeBotAPI()  # only its builders; no server


# ---------------------------------------------------------------------- messages


def test_private_text_message(api: FakeBotAPI) -> None:
    message = api.message(private_chat(ANN), ANN, "hello there")
    event = one("message", message)
    assert isinstance(event, MessageReceived)
    assert (event.chat_type, event.chat_id, event.thread_id, event.group) == ("private", "1001", None, None)
    assert event.message_id == str(message["message_id"])
    assert event.text == "hello there"
    assert event.sender.id == "1001" and event.sender.nickname == "Ann Lee" and event.sender.username == "ann"
    assert event.sender.raw == {"language_code": "en"}
    assert event.session_key() == SessionKey("tg", "private", "1001")
    assert event.dedup_key == f"{BOT_KEY}:42"
    assert event.raw == {"update_id": 42, "telegram_type": "private"}
    assert event.timestamp == message["date"]


@pytest.mark.parametrize("kind", ["group", "supergroup"])
def test_group_message_has_its_group(api: FakeBotAPI, kind: str) -> None:
    chat = group_chat(-4242, "Crew", kind=kind)
    event = one("message", api.message(chat, BOB, "hi all"))
    assert isinstance(event, MessageReceived)
    assert (event.chat_type, event.chat_id) == ("group", "-4242")
    assert event.group is not None and event.group.name == "Crew" and event.group.raw["telegram_type"] == kind
    assert event.session_key() == SessionKey("tg", "group", "-4242")


def test_entities_become_mentions_and_links(api: FakeBotAPI) -> None:
    # offsets count UTF-16 units: the emoji before them is two
    text = "😀 @bob meet Cy at https://x.io or here /echo@callboard_test_bot now /x@other_bot"
    entities = [
        entity(text, "mention", "@bob"),
        entity(text, "bold", "meet"),
        entity(text, "text_mention", "Cy", user=P["cy"]),
        entity(text, "url", "https://x.io"),
        entity(text, "text_link", "here", url="https://here.example"),
        entity(text, "bot_command", "/echo@callboard_test_bot"),
        entity(text, "bot_command", "/x@other_bot"),
    ]
    assert entities[0]["offset"] == 3  # UTF-16 units: the emoji counts two
    event = one("message", api.message(GROUP, ANN, text, entities=entities))
    assert list(event.message_chain) == [
        Plain(text="😀 "),
        At(target="@bob", display="@bob"),
        Plain(text=" meet "),
        At(target="1003", display="Cy", raw={"username": None}),
        Plain(text=" at "),
        Plain(text="https://x.io", raw={"url": "https://x.io"}),
        Plain(text=" or "),
        Plain(text="here", raw={"url": "https://here.example"}),
        Plain(text=" /echo now /x@other_bot"),
    ]
    assert event.text == "😀  meet  at https://x.io or here /echo now /x@other_bot"


def test_forum_topic_is_part_of_the_session(api: FakeBotAPI) -> None:
    created = api.message(FORUM, ANN, None, thread=7, forum_topic_created={"name": "Ops", "icon_color": 1})
    message = api.message(FORUM, ANN, "in the topic", thread=7, reply_to=created)
    event = one("message", message)
    assert event.thread_id == "7"
    assert event.session_key() == SessionKey("tg", "group", "-100600", "7")
    assert event.raw["message_thread_id"] == 7
    # the implicit reply to the topic's creation is not a quote
    assert [c.type for c in event.message_chain] == ["Plain"]


def test_reply_thread_in_a_plain_supergroup_is_not_a_topic(api: FakeBotAPI) -> None:
    original = api.message(GROUP, BOB, "question?")
    reply = api.message(GROUP, ANN, "answer", thread=original["message_id"], reply_to=original)
    event = one("message", reply)
    assert event.thread_id is None
    assert event.session_key() == SessionKey("tg", "group", "-100500")
    quote = event.message_chain.parts[0]
    assert isinstance(quote, Quote)
    assert quote.message_id == str(original["message_id"]) and quote.sender_id == "1002"
    assert quote.origin == [Plain(text="question?")]
    assert event.text == "answer"


def test_photo_with_caption(api: FakeBotAPI) -> None:
    photo = [
        {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 60, "file_size": 900},
        {"file_id": "large", "file_unique_id": "l", "width": 1280, "height": 960, "file_size": 90_000},
    ]
    caption_entities = [entity("look @bob", "mention", "@bob")]
    message = api.message(
        GROUP, ANN, None, photo=photo, caption="look @bob", caption_entities=caption_entities
    )
    event = one("message", message)
    assert list(event.message_chain) == [
        Image(file_id="large", width=1280, height=960, raw={"file_unique_id": "l", "size": 90_000}),
        Plain(text="look "),
        At(target="@bob", display="@bob"),
    ]


def test_document(api: FakeBotAPI) -> None:
    document = {
        "file_id": "doc1",
        "file_unique_id": "d1",
        "file_name": "r.pdf",
        "mime_type": "application/pdf",
        "file_size": 5,
    }
    event = one("message", api.message(private_chat(ANN), ANN, None, document=document))
    assert list(event.message_chain) == [
        File(name="r.pdf", file_id="doc1", size=5, mime="application/pdf", raw={"file_unique_id": "d1"})
    ]


def test_voice_and_audio(api: FakeBotAPI) -> None:
    voice = {"file_id": "v1", "file_unique_id": "uv", "duration": 4, "mime_type": "audio/ogg"}
    event = one("message", api.message(private_chat(ANN), ANN, None, voice=voice))
    assert list(event.message_chain) == [
        Voice(file_id="v1", duration=4.0, mime="audio/ogg", raw={"file_unique_id": "uv"})
    ]
    audio = {"file_id": "a1", "file_unique_id": "ua", "duration": 200, "title": "Song", "performer": "Band"}
    event = one("message", api.message(private_chat(ANN), ANN, None, audio=audio))
    (part,) = list(event.message_chain)
    assert isinstance(part, Voice) and part.file_id == "a1" and part.duration == 200.0
    assert part.raw == {
        "file_unique_id": "ua",
        "kind": "audio",
        "title": "Song",
        "performer": "Band",
        "file_name": None,
    }


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (
            {"type": "user", "date": 1700000000, "sender_user": P["bob"]},
            {"from_user": {"id": "1002", "nickname": "Bob", "username": "bob"}},
        ),
        (
            {"type": "hidden_user", "date": 1700000000, "sender_user_name": "Secret"},
            {"sender_name": "Secret"},
        ),
        (
            {
                "type": "channel",
                "date": 1700000000,
                "chat": {"id": -1009, "type": "channel", "title": "News"},
                "message_id": 77,
            },
            {"from_chat_id": "-1009", "from_message_id": "77", "from_chat_title": "News"},
        ),
        (
            {
                "type": "chat",
                "date": 1700000000,
                "sender_chat": {"id": -1008, "type": "supergroup", "title": "Other"},
            },
            {"from_chat_id": "-1008", "from_chat_title": "Other"},
        ),
    ],
)
def test_forwarded_message(api: FakeBotAPI, origin: dict[str, Any], expected: dict[str, Any]) -> None:
    event = one("message", api.message(private_chat(ANN), ANN, "fwd text", forward_origin=origin))
    forward, text = list(event.message_chain)
    assert isinstance(forward, Forward) and text == Plain(text="fwd text")
    data = {**to_builtins(forward), **forward.raw}  # modelled and platform fields alike
    for key, value in expected.items():
        if key == "from_user":
            assert {k: data[key][k] for k in value} == value
        else:
            assert data[key] == value
    assert data["origin_type"] == origin["type"] and data["forward_date"] == 1700000000


def test_other_content_is_kept_as_a_platform_component(api: FakeBotAPI) -> None:
    sticker = {
        "file_id": "st",
        "file_unique_id": "u",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "emoji": "😀",
    }
    event = one("message", api.message(GROUP, ANN, None, sticker=sticker))
    (part,) = list(event.message_chain)
    assert isinstance(part, PlatformComponent)
    assert (part.platform, part.component_type, part.data["file_id"], part.data["emoji"]) == (
        "telegram",
        "sticker",
        "st",
        "😀",
    )
    # an animation also fills "document" (for old clients): it is one animation, not a file
    animation = {"file_id": "an", "file_unique_id": "ua", "width": 1, "height": 1, "duration": 1}
    event = one(
        "message",
        api.message(
            GROUP, ANN, None, animation=animation, document={"file_id": "an", "file_unique_id": "ua"}
        ),
    )
    assert [(c.type, getattr(c, "component_type", None)) for c in event.message_chain] == [
        ("Platform", "animation")
    ]


def test_sender_chat_speaks_for_anonymous_admins(api: FakeBotAPI) -> None:
    anonymous = {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot"}
    event = one("message", api.message(GROUP, anonymous, "from the group", sender_chat=GROUP))
    assert (
        event.sender.id == "-100500"
        and event.sender.nickname == "Team"
        and event.sender.raw["sender_chat"] is True
    )


def test_edited_message(api: FakeBotAPI) -> None:
    message = api.message(GROUP, ANN, "fixed typo", edit_date=1700000500)
    event = one("edited_message", message)
    assert isinstance(event, MessageEdited)
    assert event.message_id == str(message["message_id"]) and event.new_content.text == "fixed typo"
    assert event.editor.id == "1001" and event.timestamp == 1700000500


# ---------------------------------------------------------------------- reactions


def _reaction(old: list[dict[str, Any]], new: list[dict[str, Any]], **who: Any) -> dict[str, Any]:
    return {
        "chat": GROUP,
        "message_id": 9,
        "date": 1700000000,
        "old_reaction": old,
        "new_reaction": new,
        **who,
    }


def test_reaction_added_and_swapped() -> None:
    thumbs = {"type": "emoji", "emoji": "👍"}
    heart = {"type": "emoji", "emoji": "❤"}
    event = one("message_reaction", _reaction([], [thumbs], user=ANN))
    assert isinstance(event, MessageReaction)
    assert (event.reaction, event.is_add, event.user.id, event.message_id) == ("👍", True, "1001", "9")
    assert event.session_key() == SessionKey("tg", "group", "-100500")
    removed, added = convert("message_reaction", _reaction([thumbs], [heart], user=ANN))
    assert (removed.reaction, removed.is_add, added.reaction, added.is_add) == ("👍", False, "❤", True)
    assert (removed.dedup_key, added.dedup_key) == (f"{BOT_KEY}:42", f"{BOT_KEY}:42:1")


def test_reaction_custom_emoji_by_an_anonymous_chat() -> None:
    custom = {"type": "custom_emoji", "custom_emoji_id": "5368"}
    event = one("message_reaction", _reaction([], [custom], actor_chat=GROUP))
    assert event.reaction == "custom:5368" and event.user.id == "-100500"


def test_reaction_that_changes_nothing_is_no_event() -> None:
    thumbs = {"type": "emoji", "emoji": "👍"}
    assert convert("message_reaction", _reaction([thumbs], [thumbs], user=ANN)) == []


# ---------------------------------------------------------------------- membership


def test_members_joined_by_service_message(api: FakeBotAPI) -> None:
    added = api.message(GROUP, ANN, None, new_chat_members=[BOB, P["cy"], BOT_USER])
    first, second = convert("message", added)  # the bot itself comes from my_chat_member
    assert isinstance(first, MemberJoined) and isinstance(second, MemberJoined)
    assert (first.member.id, second.member.id) == ("1002", "1003")
    assert first.inviter is not None and first.inviter.id == "1001" and first.join_type == "invited"
    assert first.session_key() == SessionKey("tg", "group", "-100500")
    self_join = one("message", api.message(GROUP, BOB, None, new_chat_members=[BOB]))
    assert self_join.inviter is None and self_join.join_type == "joined"
    # with chat_member updates on, those report joins and leaves
    assert convert("message", added, member_updates=True) == []


def test_member_left_or_removed_by_service_message(api: FakeBotAPI) -> None:
    left = one("message", api.message(GROUP, BOB, None, left_chat_member=BOB))
    assert isinstance(left, MemberLeft) and not left.is_kicked and left.operator is None
    removed = one("message", api.message(GROUP, ANN, None, left_chat_member=BOB))
    assert removed.is_kicked and removed.operator is not None and removed.operator.id == "1001"
    assert convert("message", api.message(GROUP, ANN, None, left_chat_member=BOT_USER)) == []


def _change(
    old: dict[str, Any], new: dict[str, Any], by: dict[str, Any] = ANN, **extra: Any
) -> dict[str, Any]:
    return {
        "chat": GROUP,
        "from": by,
        "date": 1700000000,
        "old_chat_member": old,
        "new_chat_member": new,
        **extra,
    }


def test_chat_member_ban_unban_join_leave() -> None:
    banned = one("chat_member", _change(member(BOB), member(BOB, "kicked", until_date=1700003600)))
    assert isinstance(banned, MemberBanned) and banned.member.id == "1002" and banned.duration == 3600
    assert banned.operator is not None and banned.operator.id == "1001"
    forever = one("chat_member", _change(member(BOB), member(BOB, "kicked")))
    assert forever.duration is None
    unbanned = one("chat_member", _change(member(BOB, "kicked"), member(BOB, "left")))
    assert isinstance(unbanned, MemberUnbanned)
    link = {
        "invite_link": "https://t.me/+x",
        "creator": ANN,
        "creates_join_request": False,
        "is_primary": True,
        "is_revoked": False,
    }
    joined = one("chat_member", _change(member(BOB, "left"), member(BOB), by=BOB, invite_link=link))
    assert isinstance(joined, MemberJoined) and joined.join_type == "invite_link" and joined.inviter is None
    added = one("chat_member", _change(member(BOB, "left"), member(BOB)))
    assert added.join_type == "invited" and added.inviter is not None and added.inviter.id == "1001"
    left = one("chat_member", _change(member(BOB), member(BOB, "left"), by=BOB))
    assert isinstance(left, MemberLeft) and not left.is_kicked


def test_other_chat_member_changes_are_platform_specific() -> None:
    promoted = one("chat_member", _change(member(BOB), member(BOB, "administrator")))
    assert isinstance(promoted, PlatformSpecific) and promoted.action == "chat_member"
    assert promoted.qualified_type == "platform.telegram.chat_member"
    assert (promoted.chat_type, promoted.chat_id) == ("group", "-100500")
    assert promoted.data["new_chat_member"]["status"] == "administrator"


def test_my_chat_member_bot_events() -> None:
    invited = one("my_chat_member", _change(member(BOT_USER, "left"), member(BOT_USER)))
    assert (
        isinstance(invited, BotInvitedToGroup)
        and invited.inviter is not None
        and invited.inviter.id == "1001"
    )
    assert invited.group.id == "-100500" and invited.session_key() == SessionKey("tg", "group", "-100500")
    removed = one("my_chat_member", _change(member(BOT_USER), member(BOT_USER, "kicked")))
    assert isinstance(removed, BotRemovedFromGroup) and removed.operator is not None
    muted = one(
        "my_chat_member",
        _change(
            member(BOT_USER), member(BOT_USER, "restricted", until_date=1700000600, can_send_messages=False)
        ),
    )
    assert isinstance(muted, BotMuted) and muted.duration == 600
    unmuted = one("my_chat_member", _change(member(BOT_USER, "restricted"), member(BOT_USER)))
    assert isinstance(unmuted, BotUnmuted)
    promoted = one("my_chat_member", _change(member(BOT_USER), member(BOT_USER, "administrator")))
    assert isinstance(promoted, PlatformSpecific) and promoted.action == "my_chat_member"


def test_user_blocking_the_bot_is_platform_specific() -> None:
    blocked = _change(member(BOT_USER), member(BOT_USER, "kicked"), by=ANN) | {"chat": private_chat(ANN)}
    event = one("my_chat_member", blocked)
    assert isinstance(event, PlatformSpecific) and event.action == "my_chat_member"
    assert (event.chat_type, event.chat_id) == ("private", "1001")


# ---------------------------------------------------------------------- everything else


def test_group_title_change(api: FakeBotAPI) -> None:
    event = one("message", api.message(GROUP, ANN, None, new_chat_title="New name"))
    assert isinstance(event, GroupInfoUpdated) and event.changed_fields == ["name"]
    assert event.operator is not None and event.operator.id == "1001"


def test_service_message_is_platform_specific(api: FakeBotAPI) -> None:
    pinned = api.message(GROUP, BOB, "pin me")
    event = one("message", api.message(GROUP, ANN, None, pinned_message=pinned))
    assert isinstance(event, PlatformSpecific) and event.action == "service_message"
    assert event.data["pinned_message"]["text"] == "pin me"


def test_callback_query_in_a_topic(api: FakeBotAPI) -> None:
    message = api.message(FORUM, BOT_USER, "pick one", thread=7)
    query = {"id": "cb1", "from": ANN, "chat_instance": "ci", "data": "choice:2", "message": message}
    event = one("callback_query", query)
    assert isinstance(event, PlatformSpecific) and event.qualified_type == "platform.telegram.callback_query"
    assert (event.chat_type, event.chat_id, event.thread_id) == ("group", "-100600", "7")
    assert event.data["data"] == "choice:2" and event.data["id"] == "cb1" and event.data["from"]["id"] == 1001
    assert event.session_key() == SessionKey("tg", "group", "-100600", "7")


def test_inline_callback_query_has_no_chat() -> None:
    event = one(
        "callback_query",
        {"id": "cb2", "from": ANN, "chat_instance": "ci", "inline_message_id": "im", "data": "x"},
    )
    assert event.chat_id is None and event.session_key() == SessionKey("tg", "bot", "")


def test_channel_post(api: FakeBotAPI) -> None:
    channel = {"id": -1007, "type": "channel", "title": "News"}
    event = one("channel_post", api.message(channel, None, "breaking", sender_chat=channel))
    assert isinstance(event, PlatformSpecific) and event.action == "channel_post"
    assert (event.chat_type, event.chat_id) == ("group", "-1007") and event.raw["telegram_type"] == "channel"


@pytest.mark.parametrize(
    ("kind", "payload", "chat_id"),
    [
        ("inline_query", {"id": "iq", "from": ANN, "query": "cats", "offset": ""}, None),
        (
            "chat_join_request",
            {"chat": GROUP, "from": BOB, "user_chat_id": 1002, "date": 1700000000},
            "-100500",
        ),
        (
            "poll_answer",
            {"poll_id": "p1", "user": ANN, "option_ids": [0], "option_persistent_ids": ["a"]},
            None,
        ),
        ("some_future_update", {"field": 1}, None),
    ],
)
def test_other_updates_are_platform_specific(kind: str, payload: dict[str, Any], chat_id: str | None) -> None:
    event = one(kind, payload)
    assert isinstance(event, PlatformSpecific)
    assert event.action == kind and event.chat_id == chat_id
    for key, value in payload.items():
        if not isinstance(value, dict):
            assert event.data[key] == value


def test_an_update_that_cannot_be_converted_is_kept_raw() -> None:
    # PTB accepts a reaction update without its date; the conversion cannot
    broken = _reaction([], [{"type": "emoji", "emoji": "👍"}], user=ANN)
    del broken["date"]
    event = one("message_reaction", broken)
    assert isinstance(event, PlatformSpecific) and event.action == "unconverted_update"
    assert event.data["message_reaction"]["message_id"] == 9 and event.dedup_key == f"{BOT_KEY}:42"
