"""Bot API updates -> engine events.

One update becomes one event, or several when it carries several facts (a
service message adding three members; a reaction change that removes one
emoji and adds another), or none (a reaction update that changes nothing).
The first event's dedup key is ``update:<bot user id>:<update_id>``, the
others append ``:<n>``: a redelivered update is recognised by the journal.

Every event keeps ``update_id`` and, where there is a chat, the Telegram chat
type (``telegram_type``: private, group, supergroup, channel) in ``raw``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import telegram as tg
from telegram.constants import ChatMemberStatus, MessageEntityType
from telegram.constants import ChatType as TgChatType

from callboard.engine.entities import (
    At,
    ChatType,
    Component,
    File,
    Forward,
    Group,
    Image,
    MessageChain,
    Plain,
    PlatformComponent,
    Quote,
    User,
    Voice,
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
)

log = logging.getLogger("callboard.telegram")

ADAPTER = "telegram"

#: message contents with no neutral component, in the order they are looked for
#: (an animation also fills ``document``, a venue also fills ``location``)
_OTHER_CONTENT = (
    "animation",
    "sticker",
    "video",
    "video_note",
    "venue",
    "location",
    "contact",
    "poll",
    "dice",
    "game",
    "story",
    "invoice",
    "paid_media",
    "checklist",
)
_MEMBER_STATES = {ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER}
_LINK_ENTITIES = {
    MessageEntityType.MENTION,
    MessageEntityType.TEXT_MENTION,
    MessageEntityType.URL,
    MessageEntityType.TEXT_LINK,
    MessageEntityType.BOT_COMMAND,
}


def user_of(user: tg.User) -> User:
    extra = {"language_code": user.language_code} if user.language_code else {}
    return User(
        id=str(user.id), nickname=user.full_name, username=user.username, is_bot=user.is_bot, raw=extra
    )


def chat_as_user(chat: tg.Chat) -> User:
    """A chat acting as a sender (anonymous admins, channels posting in groups)."""
    name = chat.title or chat.full_name or str(chat.id)
    return User(id=str(chat.id), nickname=name, username=chat.username, raw={"sender_chat": True})


def group_of(chat: tg.Chat) -> Group:
    extra: dict[str, Any] = {"telegram_type": chat.type}
    if chat.username:
        extra["username"] = chat.username
    if chat.is_forum:
        extra["is_forum"] = True
    return Group(id=str(chat.id), name=chat.title or "", raw=extra)


def chat_type_of(chat: tg.Chat) -> ChatType:
    return ChatType.PRIVATE if chat.type == TgChatType.PRIVATE else ChatType.GROUP


def thread_of(message: tg.Message) -> str | None:
    """The forum topic: part of the session key. Replies in an ordinary
    supergroup also carry ``message_thread_id`` (the thread of replies);
    those are not topics and stay in the chat's one session."""
    if message.is_topic_message and message.message_thread_id is not None:
        return str(message.message_thread_id)
    return None


def text_components(text: str | None, entities: tuple[tg.MessageEntity, ...], bot_username: str) -> list[Any]:
    """Plain text with mentions as ``At`` and links as ``Plain`` with a ``url``
    extra. Entity offsets count UTF-16 code units, as Telegram sends them."""
    if not text:
        return []
    data = text.encode("utf-16-le")
    out: list[Any] = []
    position = 0
    for entity in sorted(entities, key=lambda e: e.offset):
        if entity.type not in _LINK_ENTITIES or entity.offset < position:
            continue
        start, end = entity.offset, entity.offset + entity.length
        if start > position:
            out.append(Plain(text=_utf16(data, position, start)))
        segment = _utf16(data, start, end)
        if entity.type == MessageEntityType.MENTION:
            out.append(At(target=segment, display=segment))
        elif entity.type == MessageEntityType.TEXT_MENTION and entity.user is not None:
            out.append(
                At(target=str(entity.user.id), display=segment, raw={"username": entity.user.username})
            )
        elif entity.type == MessageEntityType.BOT_COMMAND:
            # "/cmd@ThisBot" in a group is our "/cmd"; other bots' commands stay as they are
            command, _, addressee = segment.partition("@")
            mine = addressee and bot_username and addressee.lower() == bot_username.lower()
            out.append(Plain(text=command if mine else segment))
        elif entity.type == MessageEntityType.TEXT_LINK and entity.url:
            out.append(Plain(text=segment, raw={"url": entity.url}))
        elif entity.type == MessageEntityType.URL:
            out.append(Plain(text=segment, raw={"url": segment}))
        else:
            out.append(Plain(text=segment))
        position = end
    if position * 2 < len(data):
        out.append(Plain(text=_utf16(data, position, len(data) // 2)))
    return _merge_plain(out)


def _utf16(data: bytes, start: int, end: int) -> str:
    return data[2 * start : 2 * end].decode("utf-16-le")


def _merge_plain(parts: list[Any]) -> list[Any]:
    merged: list[Any] = []
    for part in parts:
        previous = merged[-1] if merged else None
        if isinstance(part, Plain) and isinstance(previous, Plain) and not part.raw and not previous.raw:
            merged[-1] = Plain(text=previous.text + part.text)
        else:
            merged.append(part)
    return merged


def _seconds(obj: tg.TelegramObject, field: str) -> float | None:
    """A duration as sent (PTB's attribute warns about its int/timedelta migration)."""
    value = obj.to_dict().get(field)
    return float(value) if isinstance(value, int | float) else None


def content_of(message: tg.Message, bot_username: str) -> list[Any]:
    """The message's own content: media first, then its text or caption."""
    parts: list[Any] = []
    if message.photo:
        largest = message.photo[-1]
        parts.append(
            Image(
                file_id=largest.file_id,
                width=largest.width,
                height=largest.height,
                raw={"file_unique_id": largest.file_unique_id, "size": largest.file_size},
            )
        )
    elif message.voice:
        voice = message.voice
        parts.append(
            Voice(
                file_id=voice.file_id,
                duration=_seconds(voice, "duration"),
                mime=voice.mime_type,
                raw={"file_unique_id": voice.file_unique_id},
            )
        )
    elif message.audio:
        audio = message.audio
        parts.append(
            Voice(
                file_id=audio.file_id,
                duration=_seconds(audio, "duration"),
                mime=audio.mime_type,
                raw={
                    "file_unique_id": audio.file_unique_id,
                    "kind": "audio",
                    "title": audio.title,
                    "performer": audio.performer,
                    "file_name": audio.file_name,
                },
            )
        )
    else:
        for kind in _OTHER_CONTENT:
            value = getattr(message, kind, None)
            if value:
                parts.append(PlatformComponent(platform=ADAPTER, component_type=kind, data=value.to_dict()))
                break
        else:
            if message.document:
                document = message.document
                parts.append(
                    File(
                        name=document.file_name or "",
                        file_id=document.file_id,
                        size=document.file_size,
                        mime=document.mime_type,
                        raw={"file_unique_id": document.file_unique_id},
                    )
                )
    if message.text is not None:
        parts.extend(text_components(message.text, message.entities, bot_username))
    elif message.caption is not None:
        parts.extend(text_components(message.caption, message.caption_entities, bot_username))
    return parts


def forward_of(origin: tg.MessageOrigin) -> Forward:
    raw: dict[str, Any] = {"origin_type": origin.type, "forward_date": origin.date.timestamp()}
    if isinstance(origin, tg.MessageOriginUser):
        return Forward(from_user=user_of(origin.sender_user), raw=raw)
    if isinstance(origin, tg.MessageOriginHiddenUser):
        return Forward(raw={**raw, "sender_name": origin.sender_user_name})
    if isinstance(origin, tg.MessageOriginChannel):
        return Forward(
            from_chat_id=str(origin.chat.id),
            from_message_id=str(origin.message_id),
            raw={**raw, "from_chat_title": origin.chat.title},
        )
    if isinstance(origin, tg.MessageOriginChat):
        return Forward(
            from_chat_id=str(origin.sender_chat.id), raw={**raw, "from_chat_title": origin.sender_chat.title}
        )
    return Forward(raw=raw)


def _until(until: datetime | None, since: datetime) -> int | None:
    """Seconds a restriction lasts; None when it is forever (Telegram sends 0)."""
    if until is None or until <= since:
        return None
    return int((until - since).total_seconds())


def _is_member(member: tg.ChatMember) -> bool:
    if member.status in _MEMBER_STATES:
        return True
    return isinstance(member, tg.ChatMemberRestricted) and member.is_member


def _is_muted(member: tg.ChatMember) -> bool:
    return isinstance(member, tg.ChatMemberRestricted) and not member.can_send_messages


def _reaction_key(reaction: tg.ReactionType) -> str:
    if isinstance(reaction, tg.ReactionTypeEmoji):
        return reaction.emoji
    if isinstance(reaction, tg.ReactionTypeCustomEmoji):
        return f"custom:{reaction.custom_emoji_id}"
    return str(reaction.type)


def _with_raw(common: dict[str, Any], **raw: Any) -> dict[str, Any]:
    """``common`` with more platform fields in its ``raw``."""
    return {**common, "raw": {**common["raw"], **raw}}


class Converter:
    """Converts one bot's updates. ``member_updates``: the bot receives
    ``chat_member`` updates, so joins and leaves come from those and the
    service messages saying the same are not reported twice."""

    def __init__(self, bot_id: str, me: tg.User, *, member_updates: bool) -> None:
        self.bot_id = bot_id
        self.me = me
        self.username = me.username or ""
        self.member_updates = member_updates

    def convert(self, update: tg.Update) -> list[Event]:
        common: dict[str, Any] = {
            "bot_id": self.bot_id,
            "adapter": ADAPTER,
            "raw": {"update_id": update.update_id},
        }
        try:
            events = self._convert(update, common)
        except Exception:  # one odd update must not wedge the connection: keep it, raw
            log.exception(
                "%s: could not convert update %d; kept as platform.specific", self.bot_id, update.update_id
            )
            events = [PlatformSpecific(action="unconverted_update", data=update.to_dict(), **common)]
        return self._keyed(update.update_id, events)

    def unparsed(self, raw: dict[str, Any]) -> list[Event]:
        """An update PTB could not parse: kept as sent, so nothing is lost."""
        update_id = raw["update_id"]
        event = PlatformSpecific(
            action="unparsed_update",
            data=raw,
            bot_id=self.bot_id,
            adapter=ADAPTER,
            raw={"update_id": update_id},
        )
        return self._keyed(update_id, [event])

    def _keyed(self, update_id: int, events: list[Event]) -> list[Event]:
        base = f"update:{self.me.id}:{update_id}"
        for index, event in enumerate(events):
            event.dedup_key = base if index == 0 else f"{base}:{index}"
        return events

    # ------------------------------------------------------------------ dispatch

    def _convert(self, update: tg.Update, common: dict[str, Any]) -> list[Event]:
        if update.message is not None:
            return self._message(update.message, common)
        if update.edited_message is not None:
            return self._edited(update.edited_message, common)
        if update.message_reaction is not None:
            return self._reaction(update.message_reaction, common)
        if update.my_chat_member is not None:
            return [self._my_member(update.my_chat_member, common)]
        if update.chat_member is not None:
            return [self._member(update.chat_member, common)]
        if update.channel_post is not None or update.edited_channel_post is not None:
            kind = "channel_post" if update.channel_post is not None else "edited_channel_post"
            post = update.effective_message
            assert post is not None
            return [self._specific(kind, post.to_dict(), common, post.chat)]
        if update.callback_query is not None:
            query = update.callback_query
            message = query.message
            chat = message.chat if message is not None else None
            thread = thread_of(message) if isinstance(message, tg.Message) else None
            return [self._specific("callback_query", query.to_dict(), common, chat, thread)]
        for kind in tg.Update.ALL_TYPES:
            value = getattr(update, kind, None)
            if value is not None:
                chat = getattr(value, "chat", None)
                return [
                    self._specific(kind, value.to_dict(), common, chat if isinstance(chat, tg.Chat) else None)
                ]
        for kind, value in update.api_kwargs.items():  # a kind newer than this PTB knows
            return [self._specific(kind, value if isinstance(value, dict) else {"value": value}, common)]
        return [self._specific("unknown", {}, common)]

    def _specific(
        self,
        action: str,
        data: dict[str, Any],
        common: dict[str, Any],
        chat: tg.Chat | None = None,
        thread: str | None = None,
    ) -> PlatformSpecific:
        if chat is None:
            return PlatformSpecific(action=action, data=data, **common)
        return PlatformSpecific(
            action=action,
            data=data,
            chat_type=chat_type_of(chat),
            chat_id=str(chat.id),
            thread_id=thread,
            **_with_raw(common, telegram_type=chat.type),
        )

    # ------------------------------------------------------------------ messages

    def _in_chat(self, message: tg.Message, common: dict[str, Any]) -> dict[str, Any]:
        chat = message.chat
        raw: dict[str, Any] = {**common["raw"], "telegram_type": chat.type}
        if message.message_thread_id is not None:
            raw["message_thread_id"] = message.message_thread_id
        if message.media_group_id:
            raw["media_group_id"] = message.media_group_id
        return {
            **common,
            "chat_type": chat_type_of(chat),
            "chat_id": str(chat.id),
            "thread_id": thread_of(message),
            "group": group_of(chat) if chat.type != TgChatType.PRIVATE else None,
            "message_id": str(message.message_id),
            "timestamp": message.date.timestamp(),
            "raw": raw,
        }

    def _sender(self, message: tg.Message) -> User:
        if message.sender_chat is not None:
            return chat_as_user(message.sender_chat)
        if message.from_user is not None:
            return user_of(message.from_user)
        return chat_as_user(message.chat)

    def chain_of(self, message: tg.Message) -> list[Component]:
        parts: list[Any] = []
        reply = message.reply_to_message
        # in a forum topic, a message that replies to nothing points at the topic's creation
        if reply is not None and reply.forum_topic_created is None:
            sender = reply.sender_chat or reply.from_user
            parts.append(
                Quote(
                    message_id=str(reply.message_id),
                    sender_id=str(sender.id) if sender is not None else None,
                    origin=content_of(reply, self.username),
                )
            )
        if message.forward_origin is not None:
            parts.append(forward_of(message.forward_origin))
        parts.extend(content_of(message, self.username))
        return parts

    def _message(self, message: tg.Message, common: dict[str, Any]) -> list[Event]:
        chat = message.chat
        if message.new_chat_members or message.left_chat_member is not None:
            return self._membership_message(message, common)
        if message.new_chat_title is not None or message.new_chat_photo or message.delete_chat_photo:
            changed = ["name"] if message.new_chat_title is not None else ["avatar"]
            operator = user_of(message.from_user) if message.from_user is not None else None
            return [
                GroupInfoUpdated(group=group_of(chat), operator=operator, changed_fields=changed, **common)
            ]
        chain = self.chain_of(message)
        if not any(not isinstance(part, Quote | Forward) for part in chain):
            # a service message (pinned, topic created, migrated...): nothing was said
            return [self._specific("service_message", message.to_dict(), common, chat, thread_of(message))]
        return [
            MessageReceived(
                message_chain=MessageChain(chain),
                sender=self._sender(message),
                **self._in_chat(message, common),
            )
        ]

    def _edited(self, message: tg.Message, common: dict[str, Any]) -> list[Event]:
        fields = self._in_chat(message, common)
        if message.edit_date is not None:
            fields["timestamp"] = message.edit_date.timestamp()
        return [
            MessageEdited(
                new_content=MessageChain(self.chain_of(message)), editor=self._sender(message), **fields
            )
        ]

    def _membership_message(self, message: tg.Message, common: dict[str, Any]) -> list[Event]:
        """Service messages about people joining or leaving. The bot's own
        membership comes from ``my_chat_member``, so it is skipped here."""
        if self.member_updates:
            return []
        group = group_of(message.chat)
        actor = message.from_user
        events: list[Event] = []
        for member in message.new_chat_members:
            if member.id == self.me.id:
                continue
            invited = actor is not None and actor.id != member.id
            events.append(
                MemberJoined(
                    group=group,
                    member=user_of(member),
                    inviter=user_of(actor) if invited and actor is not None else None,
                    join_type="invited" if invited else "joined",
                    **common,
                )
            )
        left = message.left_chat_member
        if left is not None and left.id != self.me.id:
            kicked = actor is not None and actor.id != left.id
            events.append(
                MemberLeft(
                    group=group,
                    member=user_of(left),
                    is_kicked=kicked,
                    operator=user_of(actor) if kicked and actor is not None else None,
                    **common,
                )
            )
        return events

    # ------------------------------------------------------------------ reactions

    def _reaction(self, update: tg.MessageReactionUpdated, common: dict[str, Any]) -> list[Event]:
        if update.user is not None:
            user = user_of(update.user)
        elif update.actor_chat is not None:
            user = chat_as_user(update.actor_chat)
        else:
            user = chat_as_user(update.chat)
        old = [_reaction_key(r) for r in update.old_reaction]
        new = [_reaction_key(r) for r in update.new_reaction]
        chat = update.chat
        fields: dict[str, Any] = {
            **_with_raw(common, telegram_type=chat.type),
            "chat_type": chat_type_of(chat),
            "chat_id": str(chat.id),
            "group": group_of(chat) if chat.type != TgChatType.PRIVATE else None,
            "message_id": str(update.message_id),
            "user": user,
            "timestamp": update.date.timestamp(),
        }
        removed = [MessageReaction(reaction=r, is_add=False, **fields) for r in old if r not in new]
        added = [MessageReaction(reaction=r, is_add=True, **fields) for r in new if r not in old]
        return [*removed, *added]

    # ------------------------------------------------------------------ membership

    def _my_member(self, update: tg.ChatMemberUpdated, common: dict[str, Any]) -> Event:
        """The bot's own membership: invited, removed, muted, unmuted."""
        chat = update.chat
        old, new = update.old_chat_member, update.new_chat_member
        operator = user_of(update.from_user)
        if chat.type == TgChatType.PRIVATE:  # a user blocked or unblocked the bot
            return self._specific("my_chat_member", update.to_dict(), common, chat)
        group = group_of(chat)
        fields = {**common, "group": group, "timestamp": update.date.timestamp()}
        was_in, is_in = _is_member(old), _is_member(new)
        if is_in and not was_in:
            return BotInvitedToGroup(inviter=operator, **fields)
        if was_in and not is_in:
            return BotRemovedFromGroup(operator=operator, **fields)
        if is_in and _is_muted(new) and not _is_muted(old):
            until = new.until_date if isinstance(new, tg.ChatMemberRestricted) else None
            return BotMuted(operator=operator, duration=_until(until, update.date), **fields)
        if is_in and _is_muted(old) and not _is_muted(new):
            return BotUnmuted(operator=operator, **fields)
        return self._specific("my_chat_member", update.to_dict(), common, chat)

    def _member(self, update: tg.ChatMemberUpdated, common: dict[str, Any]) -> Event:
        """Another member's status (needs ``chat_member`` in allowed_updates)."""
        chat = update.chat
        old, new = update.old_chat_member, update.new_chat_member
        member = user_of(new.user)
        actor = update.from_user
        by_other = actor.id != new.user.id
        fields = {**common, "group": group_of(chat), "member": member, "timestamp": update.date.timestamp()}
        if isinstance(new, tg.ChatMemberBanned) and not isinstance(old, tg.ChatMemberBanned):
            return MemberBanned(
                operator=user_of(actor), duration=_until(new.until_date, update.date), **fields
            )
        if isinstance(old, tg.ChatMemberBanned) and new.status == ChatMemberStatus.LEFT:
            return MemberUnbanned(operator=user_of(actor), **fields)
        was_in, is_in = _is_member(old), _is_member(new)
        if is_in and not was_in:
            if update.invite_link is not None:
                join_type = "invite_link"
            elif update.via_join_request:
                join_type = "join_request"
            else:
                join_type = "invited" if by_other else "joined"
            return MemberJoined(
                inviter=user_of(actor) if by_other else None,
                join_type=join_type,
                **fields,
            )
        if was_in and not is_in:
            return MemberLeft(is_kicked=by_other, operator=user_of(actor) if by_other else None, **fields)
        return self._specific("chat_member", update.to_dict(), common, chat)
