"""Client frames -> engine events, for a connection's signed-in user.

The sender is the session's user; a frame that names another user, writes into
someone else's private chat, or into a group the user has not joined, is refused.
Dedup keys are ``<user id>:<client_msg_id>``, so one user's ids never collide with
another's.
"""

from __future__ import annotations

from callboard.adapters.web.directory import Directory
from callboard.adapters.web.identity import Identity
from callboard.adapters.web.protocol import (
    DeleteOp,
    EditOp,
    EventOp,
    FrameError,
    JoinOp,
    LeaveOp,
    ReactOp,
    SendOp,
)
from callboard.engine.entities import ChatType, MessageChain, Quote
from callboard.engine.events import (
    Event,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessageReaction,
    MessageReceived,
)
from callboard.engine.ids import new_id

#: the frame's chat_type (validated: private or group) as the enum, without an enum call per frame
_CHAT_TYPES = {kind.value: kind for kind in ChatType}


def check(op: EventOp, identity: Identity, directory: Directory) -> None:
    """Refuse what this user may not do (``FrameError`` with code ``forbidden``)."""
    cid = op.client_msg_id
    if op.user_id is not None and op.user_id != identity.user_id:
        raise FrameError("forbidden", "user_id comes from your session; you cannot send as another user", cid)
    if op.chat_type == "private":
        if not identity.owns_private(op.chat_id):
            raise FrameError(
                "forbidden", f"a private chat of yours is '{identity.user_id}:<name>'; this one is not", cid
            )
    elif ":" in op.chat_id:
        raise FrameError("bad_frame", "chat_id: a group chat id cannot contain ':'", cid)
    elif not isinstance(op, JoinOp) and not directory.is_member(op.chat_id, identity.user_id):
        raise FrameError("forbidden", "join the group first", cid)
    elif isinstance(op, SendOp | EditOp) and (left := directory.muted_for(op.chat_id, identity.user_id)):
        until = "until unmuted" if left == float("inf") else f"for {left:.0f} more seconds"
        raise FrameError("muted", f"you are muted in this group {until}", cid)
    if isinstance(op, JoinOp | LeaveOp) and op.chat_type != "group":
        raise FrameError("bad_frame", "chat_type: join and leave are for group chats", cid)


def to_event(bot_id: str, op: EventOp, identity: Identity, directory: Directory) -> Event:
    """The event for an allowed frame (call ``check`` first). Joining and leaving update
    the directory at once, so the user may read the group from their next frame on."""
    name = op.user_name if identity.anonymous and op.user_name else identity.name
    user = directory.user(identity if name == identity.name else _renamed(identity, name))
    group = directory.group(op.chat_id, getattr(op, "group_name", "")) if op.chat_type == "group" else None
    dedup_key = f"{identity.user_id}:{op.client_msg_id}"
    if isinstance(op, JoinOp):
        assert group is not None
        directory.join(op.chat_id, user)
        return MemberJoined(
            bot_id=bot_id, adapter="web", dedup_key=dedup_key, group=group, member=user, join_type="direct"
        )
    if isinstance(op, LeaveOp):
        assert group is not None
        directory.leave(op.chat_id, user.id)
        return MemberLeft(bot_id=bot_id, adapter="web", dedup_key=dedup_key, group=group, member=user)
    chat_type = _CHAT_TYPES[op.chat_type]
    if isinstance(op, SendOp):
        chain = (
            MessageChain.of(Quote(message_id=op.reply_to), op.text)
            if op.reply_to
            else MessageChain.of(op.text)
        )
        return MessageReceived(
            bot_id=bot_id,
            adapter="web",
            dedup_key=dedup_key,
            chat_type=chat_type,
            chat_id=op.chat_id,
            group=group,
            message_id="u" + new_id(),
            message_chain=chain,
            sender=user,
        )
    if isinstance(op, EditOp):
        return MessageEdited(
            bot_id=bot_id,
            adapter="web",
            dedup_key=dedup_key,
            chat_type=chat_type,
            chat_id=op.chat_id,
            group=group,
            message_id=op.message_id,
            new_content=MessageChain.of(op.text),
            editor=user,
        )
    if isinstance(op, DeleteOp):
        return MessageDeleted(
            bot_id=bot_id,
            adapter="web",
            dedup_key=dedup_key,
            chat_type=chat_type,
            chat_id=op.chat_id,
            group=group,
            message_id=op.message_id,
            operator=user,
        )
    assert isinstance(op, ReactOp)
    return MessageReaction(
        bot_id=bot_id,
        adapter="web",
        dedup_key=dedup_key,
        chat_type=chat_type,
        chat_id=op.chat_id,
        group=group,
        message_id=op.message_id,
        user=user,
        reaction=op.reaction,
        is_add=not op.remove,
    )


def _renamed(identity: Identity, name: str) -> Identity:
    return Identity(user_id=identity.user_id, name=name[:64], anonymous=identity.anonymous)
