"""The unified events every adapter produces and every handler consumes.

Names and fields follow the event-based design the product grew from
(``message.received`` ... ``platform.specific``). Each event carries an
``event_id`` (ours), the platform's ``dedup_key`` (what makes a redelivery
recognisable), and knows its session key.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, TypeAdapter

from callboard.engine.entities import ID, ChatType, Group, MessageChain, Model, User
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


class Event(Model):
    """Base of all events."""

    type: str
    event_id: str = Field(default_factory=new_event_id)
    timestamp: float = Field(default_factory=time.time)
    bot_id: str
    adapter: str
    dedup_key: str | None = Field(
        default=None, description="the platform's unique id for this delivery; duplicates are dropped"
    )

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


class _InChat(Event):
    chat_type: ChatType
    chat_id: ID
    thread_id: ID | None = None
    group: Group | None = None

    def session_key(self) -> SessionKey:
        return SessionKey(self.bot_id, str(self.chat_type), self.chat_id, self.thread_id or "")


class _InGroup(Event):
    group: Group

    def session_key(self) -> SessionKey:
        return SessionKey(self.bot_id, "group", self.group.id)


class _WithUser(Event):
    user: User

    def session_key(self) -> SessionKey:
        return SessionKey(self.bot_id, "private", self.user.id)


# ---------------------------------------------------------------------- message events


class MessageReceived(_InChat):
    type: Literal["message.received"] = "message.received"
    message_id: ID
    message_chain: MessageChain
    sender: User

    @property
    def text(self) -> str:
        return self.message_chain.text


class MessageEdited(_InChat):
    type: Literal["message.edited"] = "message.edited"
    message_id: ID
    new_content: MessageChain
    editor: User


class MessageDeleted(_InChat):
    type: Literal["message.deleted"] = "message.deleted"
    message_id: ID
    operator: User | None = None


class MessageReaction(_InChat):
    type: Literal["message.reaction"] = "message.reaction"
    message_id: ID
    user: User
    reaction: str
    is_add: bool = True


class FeedbackReceived(Event):
    type: Literal["feedback.received"] = "feedback.received"
    feedback_id: str
    feedback_type: int = Field(description="1 like, 2 dislike, 3 cancel")
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


class MemberJoined(_InGroup):
    type: Literal["group.member_joined"] = "group.member_joined"
    member: User
    inviter: User | None = None
    join_type: str | None = None


class MemberLeft(_InGroup):
    type: Literal["group.member_left"] = "group.member_left"
    member: User
    is_kicked: bool = False
    operator: User | None = None


class MemberBanned(_InGroup):
    type: Literal["group.member_banned"] = "group.member_banned"
    member: User
    operator: User | None = None
    duration: int | None = Field(default=None, description="seconds; None means permanent")


class MemberUnbanned(_InGroup):
    type: Literal["group.member_unbanned"] = "group.member_unbanned"
    member: User
    operator: User | None = None


class GroupInfoUpdated(_InGroup):
    type: Literal["group.info_updated"] = "group.info_updated"
    operator: User | None = None
    changed_fields: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------- friend events


class FriendRequestReceived(_WithUser):
    type: Literal["friend.request_received"] = "friend.request_received"
    request_id: ID
    message: str | None = None


class FriendAdded(_WithUser):
    type: Literal["friend.added"] = "friend.added"


class FriendRemoved(_WithUser):
    type: Literal["friend.removed"] = "friend.removed"


# ---------------------------------------------------------------------- bot events


class BotInvitedToGroup(_InGroup):
    type: Literal["bot.invited_to_group"] = "bot.invited_to_group"
    inviter: User | None = None
    request_id: ID | None = None


class BotRemovedFromGroup(_InGroup):
    type: Literal["bot.removed_from_group"] = "bot.removed_from_group"
    operator: User | None = None


class BotMuted(_InGroup):
    type: Literal["bot.muted"] = "bot.muted"
    operator: User | None = None
    duration: int | None = None


class BotUnmuted(_InGroup):
    type: Literal["bot.unmuted"] = "bot.unmuted"
    operator: User | None = None


class PlatformSpecific(Event):
    """Whatever has no neutral form; ``action`` is the platform's own name."""

    type: Literal["platform.specific"] = "platform.specific"
    action: str
    data: dict[str, Any] = Field(default_factory=dict)
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


AnyEvent = Annotated[
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
    | PlatformSpecific,
    Field(discriminator="type"),
]

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

#: every event type string, e.g. "message.received"
EVENT_TYPE_NAMES: tuple[str, ...] = tuple(t.model_fields["type"].default for t in EVENT_TYPES)

_event_adapter: TypeAdapter[Event] = TypeAdapter(AnyEvent)


def encode_event(event: Event) -> bytes:
    """Serialise one event to JSON bytes (what the journal stores); ``decode_event`` reverses it."""
    return event.model_dump_json().encode()


def decode_event(data: bytes | str) -> Event:
    """Parse one event from JSON (validated straight from bytes)."""
    return _event_adapter.validate_json(data)


def event_from_dict(data: dict[str, Any]) -> Event:
    return _event_adapter.validate_python(data)
