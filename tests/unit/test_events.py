"""Event and entity models: every type round-trips through orjson; unknown
platform fields survive."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callboard.engine.entities import (
    At,
    AtAll,
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
    MessageReceived,
    PlatformSpecific,
    decode_event,
    encode_event,
)

USER = User(id=7, nickname="Ann", username="ann", language_code="en")
GROUP = Group(id=-100, name="Team")
CHAIN = MessageChain(
    [
        Source(message_id=1, timestamp=1.5),
        Plain(text="hi "),
        At(target=8, display="@bo"),
        AtAll(),
        Image(url="https://x/img.png", width=10),
        Voice(file_id="v1", duration=2.5),
        File(name="a.txt", data=b"\x00\x01binary"),
        Quote(message_id=5, sender_id=8, origin=[Plain(text="quoted")]),
        Face(face_id=3, name="smile"),
        Forward(from_chat_id=9, from_message_id=4, nodes=[[Plain(text="n1")]]),
        PlatformComponent(platform="telegram", component_type="dice", data={"value": 6}),
    ]
)
COMMON: dict[str, Any] = {"bot_id": "b1", "adapter": "test", "dedup_key": "k1"}
IN_CHAT: dict[str, Any] = {"chat_type": "group", "chat_id": -100, "group": GROUP}
SAMPLES: dict[str, dict[str, Any]] = {
    "message.received": {**IN_CHAT, "message_id": 1, "message_chain": CHAIN, "sender": USER, "thread_id": 3},
    "message.edited": {**IN_CHAT, "message_id": 1, "new_content": CHAIN, "editor": USER},
    "message.deleted": {**IN_CHAT, "message_id": 1, "operator": USER},
    "message.reaction": {**IN_CHAT, "message_id": 1, "user": USER, "reaction": "+1", "is_add": False},
    "feedback.received": {"feedback_id": "f1", "feedback_type": 2, "inaccurate_reasons": ["wrong"]},
    "group.member_joined": {"group": GROUP, "member": USER, "inviter": USER, "join_type": "invite"},
    "group.member_left": {"group": GROUP, "member": USER, "is_kicked": True, "operator": USER},
    "group.member_banned": {"group": GROUP, "member": USER, "duration": 60},
    "group.member_unbanned": {"group": GROUP, "member": USER},
    "group.info_updated": {"group": GROUP, "changed_fields": ["name"]},
    "friend.request_received": {"user": USER, "request_id": 12, "message": "hello"},
    "friend.added": {"user": USER},
    "friend.removed": {"user": USER},
    "bot.invited_to_group": {"group": GROUP, "inviter": USER},
    "bot.removed_from_group": {"group": GROUP, "operator": USER},
    "bot.muted": {"group": GROUP, "duration": 30},
    "bot.unmuted": {"group": GROUP},
    "platform.specific": {"action": "callback_query", "data": {"q": 1}, "chat_type": "private", "chat_id": 7},
}


def test_every_event_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(EVENT_TYPE_NAMES)
    assert len(EVENT_TYPE_NAMES) == 18


@pytest.mark.parametrize("event_type", EVENT_TYPE_NAMES)
def test_round_trip(event_type: str) -> None:
    cls = next(t for t in EVENT_TYPES if t.model_fields["type"].default == event_type)
    event = cls(**COMMON, **SAMPLES[event_type], platform_extra={"kept": True})
    data = encode_event(event)
    again = decode_event(data)
    assert type(again) is cls
    assert again == event
    assert again.raw == {"platform_extra": {"kept": True}}
    assert orjson.loads(encode_event(again)) == orjson.loads(data)


def test_unknown_nested_fields_are_kept() -> None:
    event = decode_event(
        orjson.dumps(
            {
                **COMMON,
                "type": "friend.added",
                "user": {"id": 1, "nickname": "x", "is_premium": True},
                "update_id": 99,
            }
        )
    )
    assert event.raw == {"update_id": 99}
    assert event.user.raw == {"is_premium": True}  # type: ignore[attr-defined]


def test_ids_are_strings_and_session_keys() -> None:
    sample = MessageReceived(**COMMON, **SAMPLES["message.received"])
    event = decode_event(encode_event(sample))
    assert event.chat_id == "-100"  # type: ignore[attr-defined]
    key = event.session_key()
    assert tuple(key) == ("b1", "group", "-100", "3") and key.name == "group:-100:3"
    friend = decode_event(orjson.dumps({**COMMON, "type": "friend.added", "user": {"id": 7}}))
    assert friend.session_key().name == "private:7"
    bot = decode_event(orjson.dumps({**COMMON, "type": "bot.muted", "group": {"id": 5}}))
    assert bot.session_key().name == "group:5"
    specific = PlatformSpecific(**COMMON, action="poll")
    assert specific.session_key().name == "bot:" and specific.qualified_type == "platform.test.poll"


def test_bad_payloads_are_rejected() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        decode_event(b'{"type": "message.received", "bot_id": "b"}')
    with pytest.raises(ValidationError):
        decode_event(b'{"type": "nope", "bot_id": "b", "adapter": "x"}')
    with pytest.raises(ValidationError):
        User(id=True)


def test_chain_helpers_and_member() -> None:
    chain = MessageChain.of("a", At(target=1), "b")
    assert chain.text == "ab" and len(chain) == 3
    assert [c.target for c in chain.components(At)] == ["1"]
    member = GroupMember(user=USER, group_id=GROUP.id, role="admin")
    assert member.role is MemberRole.ADMIN


@given(st.text(), st.text(min_size=1, max_size=20), st.integers(-(2**63), 2**63 - 1))
def test_text_round_trip_property(text: str, nickname: str, chat: int) -> None:
    event = decode_event(
        orjson.dumps(
            {
                **COMMON,
                "type": "message.received",
                "chat_type": "private",
                "chat_id": chat,
                "message_id": "m",
                "message_chain": [{"type": "Plain", "text": text}],
                "sender": {"id": "u", "nickname": nickname},
            }
        )
    )
    assert decode_event(encode_event(event)) == event
    assert event.text == text  # type: ignore[attr-defined]
