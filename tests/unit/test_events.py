"""Event and entity Structs: every type round-trips through encode_event and
decode_event; unknown platform fields (``raw``) survive; decoding validates."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callboard.engine.entities import (
    At,
    AtAll,
    ChatType,
    Face,
    File,
    Forward,
    Group,
    GroupMember,
    Image,
    MemberRole,
    MessageChain,
    Plain,
    PlatformComponent,
    Quote,
    Source,
    User,
    Voice,
)
from callboard.engine.events import (
    EVENT_TYPE_NAMES,
    EVENT_TYPES,
    DecodeError,
    MessageEdited,
    MessageReceived,
    PlatformSpecific,
    decode_event,
    encode_event,
)

USER = User(id="7", nickname="Ann", username="ann", raw={"language_code": "en"})
GROUP = Group(id="-100", name="Team")
CHAIN = MessageChain.of(
    Source(message_id="1", timestamp=1.5),
    "hi ",
    At(target="8", display="@bo"),
    AtAll(),
    Image(url="https://x/img.png", width=10, raw={"file_unique_id": "u1"}),
    Voice(file_id="v1", duration=2.5),
    File(name="a.txt", data=b"\x00\x01binary"),
    Quote(message_id="5", sender_id="8", origin=[Plain(text="quoted")]),
    Face(face_id="3", name="smile"),
    Forward(from_chat_id="9", from_message_id="4", nodes=[[Plain(text="n1")]]),
    PlatformComponent(platform="telegram", component_type="dice", data={"value": 6}),
)
COMMON: dict[str, Any] = {"bot_id": "b1", "adapter": "test", "dedup_key": "k1"}
IN_CHAT: dict[str, Any] = {"chat_type": ChatType.GROUP, "chat_id": "-100", "group": GROUP}
SAMPLES: dict[str, dict[str, Any]] = {
    "message.received": {
        **IN_CHAT,
        "message_id": "1",
        "message_chain": CHAIN,
        "sender": USER,
        "thread_id": "3",
    },
    "message.edited": {**IN_CHAT, "message_id": "1", "new_content": CHAIN, "editor": USER},
    "message.deleted": {**IN_CHAT, "message_id": "1", "operator": USER},
    "message.reaction": {**IN_CHAT, "message_id": "1", "user": USER, "reaction": "+1", "is_add": False},
    "feedback.received": {"feedback_id": "f1", "feedback_type": 2, "inaccurate_reasons": ["wrong"]},
    "group.member_joined": {"group": GROUP, "member": USER, "inviter": USER, "join_type": "invite"},
    "group.member_left": {"group": GROUP, "member": USER, "is_kicked": True, "operator": USER},
    "group.member_banned": {"group": GROUP, "member": USER, "duration": 60},
    "group.member_unbanned": {"group": GROUP, "member": USER},
    "group.info_updated": {"group": GROUP, "changed_fields": ["name"]},
    "friend.request_received": {"user": USER, "request_id": "12", "message": "hello"},
    "friend.added": {"user": USER},
    "friend.removed": {"user": USER},
    "bot.invited_to_group": {"group": GROUP, "inviter": USER},
    "bot.removed_from_group": {"group": GROUP, "operator": USER},
    "bot.muted": {"group": GROUP, "duration": 30},
    "bot.unmuted": {"group": GROUP},
    "platform.specific": {
        "action": "callback_query",
        "data": {"q": 1},
        "chat_type": ChatType.PRIVATE,
        "chat_id": "7",
    },
}


def test_every_event_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(EVENT_TYPE_NAMES)
    assert len(EVENT_TYPE_NAMES) == 18


@pytest.mark.parametrize("event_type", EVENT_TYPE_NAMES)
def test_round_trip(event_type: str) -> None:
    cls = next(t for t in EVENT_TYPES if t.type == event_type)
    event = cls(**COMMON, **SAMPLES[event_type], raw={"platform_extra": {"kept": True}})
    data = encode_event(event)
    assert orjson.loads(data)["type"] == event_type == event.type
    again = decode_event(data)
    assert type(again) is cls
    assert again == event
    assert again.raw == {"platform_extra": {"kept": True}}
    assert encode_event(again) == data


def test_unknown_nested_fields_are_kept() -> None:
    event = decode_event(
        orjson.dumps(
            {
                **COMMON,
                "type": "friend.added",
                "user": {"id": "1", "nickname": "x", "raw": {"is_premium": True}},
                "raw": {"update_id": 99},
            }
        )
    )
    assert event.raw == {"update_id": 99}
    assert event.user.raw == {"is_premium": True}  # type: ignore[attr-defined]
    assert orjson.loads(encode_event(event))["user"]["raw"] == {"is_premium": True}
    (image,) = decode_event(
        encode_event(MessageReceived(**COMMON, **SAMPLES["message.received"]))
    ).message_chain.components(Image)  # type: ignore[attr-defined]
    assert image.raw == {"file_unique_id": "u1"}


def test_ids_are_strings_and_session_keys() -> None:
    sample = MessageReceived(**COMMON, **SAMPLES["message.received"])
    event = decode_event(encode_event(sample))
    assert event.chat_id == "-100"  # type: ignore[attr-defined]
    key = event.session_key()
    assert tuple(key) == ("b1", "group", "-100", "3") and key.name == "group:-100:3"
    friend = decode_event(orjson.dumps({**COMMON, "type": "friend.added", "user": {"id": "7"}}))
    assert friend.session_key().name == "private:7"
    bot = decode_event(orjson.dumps({**COMMON, "type": "bot.muted", "group": {"id": "5"}}))
    assert bot.session_key().name == "group:5"
    specific = PlatformSpecific(**COMMON, action="poll")
    assert specific.session_key().name == "bot:" and specific.qualified_type == "platform.test.poll"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"type": "message.received", "bot_id": "b"}, "missing required field"),
        ({"type": "nope", "bot_id": "b", "adapter": "x"}, "Invalid value 'nope'"),
        (
            {**COMMON, "type": "friend.added", "user": {"id": True}},
            "Expected `str`, got `bool` - at `$.user.id`",
        ),
        ({**COMMON, "type": "friend.added", "user": {"id": 7}}, "Expected `str`, got `int` - at `$.user.id`"),
        ({**COMMON, "type": "bot.muted", "group": {"id": "5"}, "duration": "long"}, "at `$.duration`"),
        (
            {**COMMON, "type": "message.deleted", "chat_type": "channel", "chat_id": "1", "message_id": "m"},
            "chat_type",
        ),
    ],
)
def test_bad_payloads_are_rejected(payload: dict[str, Any], reason: str) -> None:
    """Decoding validates every field, and the error says where."""
    with pytest.raises(DecodeError, match=re.escape(reason)):
        decode_event(orjson.dumps(payload))


def test_chain_helpers_and_member() -> None:
    chain = MessageChain.of("a", At(target="1"), "b")
    assert chain.text == "ab" and len(chain) == 3
    assert [c.target for c in chain.components(At)] == ["1"]
    assert [type(c) for c in chain] == [Plain, At, Plain]
    member = GroupMember(user=USER, group_id=GROUP.id, role=MemberRole.ADMIN)
    assert msgspec.json.decode(msgspec.json.encode(member), type=GroupMember) == member


@given(st.text(), st.text(min_size=1, max_size=20), st.integers(-(2**63), 2**63 - 1))
def test_text_round_trip_property(text: str, nickname: str, chat: int) -> None:
    event = MessageReceived(
        **COMMON,
        chat_type=ChatType.PRIVATE,
        chat_id=str(chat),
        message_id="m",
        message_chain=MessageChain.of(text),
        sender=User(id="u", nickname=nickname, raw={"n": nickname}),
    )
    again = decode_event(encode_event(event))
    assert again == event
    assert again.text == text and again.chat_id == str(chat)  # type: ignore[attr-defined]


#: what the journal stored while events were pydantic models (written by that code)
PYDANTIC_ERA = [
    b'{"type":"message.received","event_id":"e1","timestamp":1.5,"bot_id":"b","adapter":"telegram",'
    b'"dedup_key":"update:1:2","chat_type":"group","chat_id":"-100","thread_id":null,"group":{"id":"-100",'
    b'"name":"T","description":null,"member_count":null,"avatar_url":null,"owner_id":null,'
    b'"telegram_type":"supergroup"},"message_id":"5","message_chain":[{"type":"Plain","text":"hi "},'
    b'{"type":"At","target":"7","display":null,"username":"bo"},{"type":"Quote","message_id":"1",'
    b'"sender_id":null,"origin":[{"type":"Plain","text":"q"}]}],"sender":{"id":"7","nickname":"Ann",'
    b'"username":null,"avatar_url":null,"is_bot":false,"remark":null,"language_code":"en"},"update_id":2}',
    b'{"type":"message.edited","event_id":"e2","timestamp":2.0,"bot_id":"b","adapter":"web","dedup_key":null,'
    b'"chat_type":"private","chat_id":"c","thread_id":null,"group":null,"message_id":"m",'
    b'"new_content":[{"type":"Plain","text":"x"}],"editor":{"id":"u","nickname":"","username":null,'
    b'"avatar_url":null,"is_bot":false,"remark":null}}',
]


def test_a_journal_from_the_pydantic_era_still_replays() -> None:
    """Events stored before the Struct change decode, their platform fields moved into ``raw``."""
    received, edited = (decode_event(payload) for payload in PYDANTIC_ERA)
    assert isinstance(received, MessageReceived) and isinstance(edited, MessageEdited)
    assert received.raw == {"update_id": 2} and received.dedup_key == "update:1:2"
    assert received.sender.raw == {"language_code": "en"} and received.sender.nickname == "Ann"
    assert received.group is not None and received.group.raw == {"telegram_type": "supergroup"}
    at, quote = received.message_chain.components(At), received.message_chain.components(Quote)
    assert at == [At(target="7", raw={"username": "bo"})] and quote[0].origin == [Plain(text="q")]
    assert received.text == "hi " and edited.new_content.text == "x"
    assert decode_event(encode_event(received)) == received
    with pytest.raises(DecodeError):  # still strict about what no era could have written
        decode_event(PYDANTIC_ERA[1].replace(b'"message_id":"m"', b'"message_id":5'))
