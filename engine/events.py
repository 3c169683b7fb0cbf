"""The unified events every adapter produces and every handler consumes.

Names and fields follow the event-based design the product grew from
(``message.received`` ... ``platform.specific``). Each event carries an
``event_id`` (ours), the platform's ``dedup_key`` (what makes a redelivery
recognisable), and knows its session key.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import msgspec
import msgspec.inspect

from callboard.engine.entities import ID, ChatType, Group, MessageChain, User
from callboard.engine.ids import new_id


def new_event_id() -> str:
    return new_id()


class SessionKey(tuple[str, str, str, str]):
    """(bot id, chat type, chat id, thread id or ""): one session actor each."""

    __slots__ = ()

    def __new__(cls, bot: str, chat_type: str, chat_id: str, thread: str = "") -> SessionKey:
        return super().__new__(cls, (bot, chat_type, chat_id, thread))

    @property
    def bot(self) -> str:
        return self[0]

    @property
    def chat_type(self) -> str:
        return self[1]

    @property
    def chat_id(self) -> str:
        return self[2]

    @property
    def thread(self) -> str:
        return self[3]

    @property
    def name(self) -> str:
        """The session actor's name, e.g. ``private:c1`` or ``group:g7:42``."""
        return f"{self[1]}:{self[2]}:{self[3]}" if self[3] else f"{self[1]}:{self[2]}"

    def __str__(self) -> str:
        return f"{self[0]}/{self.name}"


class Event(msgspec.Struct, tag_field="type", kw_only=True, gc=False, omit_defaults=True):
    """Base of all events: a msgspec Struct (cheap to build, encode and collect;
    ``gc=False`` as events hold no cycles). ``type`` is the tag on the wire;
    ``raw`` keeps the platform fields we do not model."""

    type: ClassVar[str]
    event_id: str = msgspec.field(default_factory=new_event_id)
    timestamp: float = msgspec.field(default_factory=time.time)
    bot_id: str
    adapter: str
    #: the platform's unique id for this delivery; duplicates are dropped
    dedup_key: str | None = None
    raw: dict[str, Any] = {}

    #: chat kind used for the session key when the event has no chat of its own
    session_scope: ClassVar[str] = "bot"

    def session_key(self) -> SessionKey:
        return SessionKey(self.bot_id, "bot", "")

    def actor(self) -> User | None:
        """The person who caused the event (sender, editor, reacting user, member)."""
        for attribute in ("sender", "editor", "user", "member", "operator"):
            user = getattr(self, attribute, None)
            if isinstance(user, User):
                return user
        return None


class _InChat(Event, kw_only=True):
    chat_type: ChatType
    chat_id: ID
    thread_id: ID | None = None
    group: Group | None = None

    def session_key(self) -> SessionKey:
        return SessionKey(self.bot_id, str(self.chat_type), self.chat_id, self.thread_id or "")


class _InGroup(Event, kw_only=True):
    group: Group

    def session_key(self) -> SessionKey:
        return SessionKey(self.bot_id, "group", self.group.id)


class _WithUser(Event, kw_only=True):
    user: User

    def session_key(self) -> SessionKey:
        return SessionKey(self.bot_id, "private", self.user.id)


# ---------------------------------------------------------------------- message events


class MessageReceived(_InChat, tag="message.received", kw_only=True):
    message_id: ID
    message_chain: MessageChain
    sender: User

    @property
    def text(self) -> str:
        return self.message_chain.text


class MessageEdited(_InChat, tag="message.edited", kw_only=True):
    message_id: ID
    new_content: MessageChain
    editor: User


class MessageDeleted(_InChat, tag="message.deleted", kw_only=True):
    message_id: ID
    operator: User | None = None


class MessageReaction(_InChat, tag="message.reaction", kw_only=True):
    message_id: ID
    user: User
    reaction: str
    is_add: bool = True


class FeedbackReceived(Event, tag="feedback.received", kw_only=True):
    feedback_id: str
    #: 1 like, 2 dislike, 3 cancel
    feedback_type: int
    feedback_content: str | None = None
    inaccurate_reasons: list[str] | None = None
    user_id: ID | None = None
    chat_type: ChatType | None = None
    chat_id: ID | None = None
    message_id: ID | None = None
    stream_id: str | None = None

    def session_key(self) -> SessionKey:
        if self.chat_type is not None and self.chat_id is not None:
            return SessionKey(self.bot_id, str(self.chat_type), self.chat_id)
        return super().session_key()


# ---------------------------------------------------------------------- group events


class MemberJoined(_InGroup, tag="group.member_joined", kw_only=True):
    member: User
    inviter: User | None = None
    join_type: str | None = None


class MemberLeft(_InGroup, tag="group.member_left", kw_only=True):
    member: User
    is_kicked: bool = False
    operator: User | None = None


class MemberBanned(_InGroup, tag="group.member_banned", kw_only=True):
    member: User
    operator: User | None = None
    #: seconds; None means permanent
    duration: int | None = None


class MemberUnbanned(_InGroup, tag="group.member_unbanned", kw_only=True):
    member: User
    operator: User | None = None


class GroupInfoUpdated(_InGroup, tag="group.info_updated", kw_only=True):
    operator: User | None = None
    changed_fields: list[str] = []


# ---------------------------------------------------------------------- friend events


class FriendRequestReceived(_WithUser, tag="friend.request_received", kw_only=True):
    request_id: ID
    message: str | None = None


class FriendAdded(_WithUser, tag="friend.added", kw_only=True):
    pass


class FriendRemoved(_WithUser, tag="friend.removed", kw_only=True):
    pass


# ---------------------------------------------------------------------- bot events


class BotInvitedToGroup(_InGroup, tag="bot.invited_to_group", kw_only=True):
    inviter: User | None = None
    request_id: ID | None = None


class BotRemovedFromGroup(_InGroup, tag="bot.removed_from_group", kw_only=True):
    operator: User | None = None


class BotMuted(_InGroup, tag="bot.muted", kw_only=True):
    operator: User | None = None
    duration: int | None = None


class BotUnmuted(_InGroup, tag="bot.unmuted", kw_only=True):
    operator: User | None = None


class PlatformSpecific(Event, tag="platform.specific", kw_only=True):
    """Whatever has no neutral form; ``action`` is the platform's own name."""

    action: str
    data: dict[str, Any] = {}
    chat_type: ChatType | None = None
    chat_id: ID | None = None
    thread_id: ID | None = None

    @property
    def qualified_type(self) -> str:
        """``platform.<adapter>.<action>``, as the routing rules may name it."""
        return f"platform.{self.adapter}.{self.action}"

    def session_key(self) -> SessionKey:
        if self.chat_type is not None and self.chat_id is not None:
            return SessionKey(self.bot_id, str(self.chat_type), self.chat_id, self.thread_id or "")
        return super().session_key()


AnyEvent = (
    MessageReceived
    | MessageEdited
    | MessageDeleted
    | MessageReaction
    | FeedbackReceived
    | MemberJoined
    | MemberLeft
    | MemberBanned
    | MemberUnbanned
    | GroupInfoUpdated
    | FriendRequestReceived
    | FriendAdded
    | FriendRemoved
    | BotInvitedToGroup
    | BotRemovedFromGroup
    | BotMuted
    | BotUnmuted
    | PlatformSpecific
)

EVENT_TYPES: tuple[type[Event], ...] = (
    MessageReceived,
    MessageEdited,
    MessageDeleted,
    MessageReaction,
    FeedbackReceived,
    MemberJoined,
    MemberLeft,
    MemberBanned,
    MemberUnbanned,
    GroupInfoUpdated,
    FriendRequestReceived,
    FriendAdded,
    FriendRemoved,
    BotInvitedToGroup,
    BotRemovedFromGroup,
    BotMuted,
    BotUnmuted,
    PlatformSpecific,
)

for _t in EVENT_TYPES:
    _t.type = str(_t.__struct_config__.tag)

#: every event type string, e.g. "message.received"
EVENT_TYPE_NAMES: tuple[str, ...] = tuple(t.type for t in EVENT_TYPES)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)

#: what ``decode_event`` raises for a payload that is not a valid event
DecodeError = msgspec.DecodeError


def encode_event(event: Event) -> bytes:
    """Serialise one event to JSON bytes (what the journal stores); ``decode_event`` reverses it."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    """Parse and validate one event from JSON (raises ``DecodeError``). Events a
    journal stored before events were Structs are read too (see ``_lift``)."""
    try:
        return _decoder.decode(data)
    except DecodeError as exc:
        lifted = _lift(msgspec.json.decode(data), _EVENT_INFO)
        try:
            event: Event = msgspec.convert(lifted, AnyEvent)
        except DecodeError:
            raise exc from None
        return event


_EVENT_INFO = msgspec.inspect.type_info(AnyEvent)


def _lift(value: Any, info: msgspec.inspect.Type) -> Any:
    """The pydantic-era JSON of an event in today's shape: a chain was a bare
    list, and fields a platform sent that we do not model sat beside the
    modelled ones instead of in ``raw``. Only runs when a payload fails to decode."""
    if isinstance(info, msgspec.inspect.UnionType):
        for option in info.types:
            if isinstance(option, msgspec.inspect.StructType) and (
                option.tag is None or (isinstance(value, dict) and value.get(option.tag_field) == option.tag)
            ):
                return _lift(value, option)
        return value
    if isinstance(info, msgspec.inspect.ListType) and isinstance(value, list):
        return [_lift(item, info.item_type) for item in value]
    if not isinstance(info, msgspec.inspect.StructType):
        return value
    if info.cls is MessageChain and isinstance(value, list):
        value = {"parts": value}
    if not isinstance(value, dict):
        return value
    fields = {f.encode_name: f for f in info.fields}
    out: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for key, item in value.items():
        field = fields.get(key)
        if field is not None:
            out[key] = _lift(item, field.type)
        elif key == info.tag_field:
            out[key] = item
        else:
            raw[key] = item
    if raw and "raw" in fields:
        out["raw"] = {**raw, **out.get("raw", {})}
    return out
