"""TelegramAdapter: the unified platform API on python-telegram-bot's ``Bot``.

Every call goes through PTB against ``base_url`` (the real Bot API, a
self-hosted one, or a test server). PTB errors become ``TelegramAPIError``
(a ``SendError``): permanent for refusals (chat not found, bot blocked, bad
request), transient with Telegram's ``retry_after`` for flood control, and
transient for network errors, timeouts and 5xx, so the engine's outbound
retries exactly what can succeed later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any, ClassVar, TypeVar

import telegram as tg
from pydantic import BaseModel, ConfigDict, Field, field_validator
from telegram import error as tg_error
from telegram.constants import ChatAction, ChatMemberStatus

from callboard.adapters.base import Adapter, AdapterHost, SendProgress, action_params, params_doc
from callboard.adapters.telegram.config import TelegramAdapterConfig
from callboard.adapters.telegram.convert import user_of
from callboard.adapters.telegram.errors import TelegramAPIError, api_error, protect
from callboard.adapters.telegram.render import (
    ForwardMessage,
    Media,
    Rendered,
    RenderError,
    Step,
    Text,
    chat_ref,
    render,
)
from callboard.adapters.telegram.request import AiohttpRequest
from callboard.engine.actor import Actor
from callboard.engine.entities import ID, Group, GroupMember, MemberRole, MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.platform import MessageResult, PlatformAction, RateLimits

log = logging.getLogger("callboard.telegram")
T = TypeVar("T")

#: Telegram treats a restriction shorter than this as forever
_MIN_RESTRICTION = 30

_CHAT_ACTIONS = frozenset(str(action) for action in ChatAction)

_ROLES: dict[str, MemberRole] = {
    ChatMemberStatus.OWNER: MemberRole.OWNER,
    ChatMemberStatus.ADMINISTRATOR: MemberRole.ADMIN,
}


# ---------------------------------------------------------------------- platform action params


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chat_id: ID


class _Pin(_Params):
    message_id: int
    disable_notification: bool = False


class _Unpin(_Params):
    message_id: int | None = None


class _Title(_Params):
    title: str = Field(min_length=1, max_length=128)


class _Description(_Params):
    description: str = Field(max_length=255)


class _ChatAction(_Params):
    action: str = Field(default="typing", description=f"one of {', '.join(sorted(_CHAT_ACTIONS))}")
    message_thread_id: int | None = None

    @field_validator("action")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in _CHAT_ACTIONS:
            raise ValueError(f"unknown chat action; use one of {', '.join(sorted(_CHAT_ACTIONS))}")
        return value


class _InviteLink(_Params):
    name: str | None = Field(default=None, max_length=32)
    expire_date: int | None = Field(default=None, description="unix time")
    member_limit: int | None = Field(default=None, ge=1, le=99999)
    creates_join_request: bool | None = None


class _CallbackAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    callback_query_id: str
    text: str | None = Field(default=None, max_length=200)
    show_alert: bool = False
    url: str | None = None
    cache_time: int | None = Field(default=None, ge=0)


_ACTION_PARAMS: dict[str, type[BaseModel]] = {
    "pin_message": _Pin,
    "unpin_message": _Unpin,
    "unpin_all_messages": _Params,
    "get_chat_administrators": _Params,
    "set_chat_title": _Title,
    "set_chat_description": _Description,
    "get_chat_member_count": _Params,
    "send_chat_action": _ChatAction,
    "create_chat_invite_link": _InviteLink,
    "answer_callback_query": _CallbackAnswer,
}

_CHAT = {"chat_id": "chat id"}


class TelegramAdapter(Adapter):
    adapter_name: ClassVar[str] = "telegram"
    config_type: ClassVar[type[TelegramAdapterConfig]] = TelegramAdapterConfig
    emits: ClassVar[tuple[str, ...]] = (
        "message.received",
        "message.edited",
        "message.reaction",
        "group.member_joined",
        "group.member_left",
        "group.member_banned",
        "group.member_unbanned",
        "group.info_updated",
        "bot.invited_to_group",
        "bot.removed_from_group",
        "bot.muted",
        "bot.unmuted",
        "platform.specific",
    )
    rate_limits = RateLimits(
        per_bot_per_second=30, per_private_chat_per_second=1, per_group_chat_per_minute=20
    )
    max_text_length: ClassVar[int | None] = 4096
    platform_actions: ClassVar[tuple[PlatformAction, ...]] = (
        PlatformAction(action="pin_message", description="pin a message", params=params_doc(_Pin)),
        PlatformAction(
            action="unpin_message",
            description="unpin one message (or the latest)",
            params=params_doc(_Unpin),
        ),
        PlatformAction(action="unpin_all_messages", description="unpin every message", params=_CHAT),
        PlatformAction(
            action="get_chat_administrators", description="the chat's administrators (raw)", params=_CHAT
        ),
        PlatformAction(action="set_chat_title", description="rename a group", params=params_doc(_Title)),
        PlatformAction(
            action="set_chat_description",
            description="set a group's description",
            params=params_doc(_Description),
        ),
        PlatformAction(action="get_chat_member_count", description="number of members", params=_CHAT),
        PlatformAction(
            action="send_chat_action", description="typing..., uploading...", params=params_doc(_ChatAction)
        ),
        PlatformAction(
            action="create_chat_invite_link", description="a new invite link", params=params_doc(_InviteLink)
        ),
        PlatformAction(
            action="answer_callback_query",
            description="answer an inline keyboard press",
            params=params_doc(_CallbackAnswer),
        ),
    )

    def __init__(self, host: AdapterHost, config: TelegramAdapterConfig) -> None:
        super().__init__(host, config)
        self.tg_config = config
        self.token = config.token.get_secret_value()
        protect(self.token)
        if config.secret_token is not None:
            protect(config.secret_token.get_secret_value())
        if config.rate_limits is not None:
            self.rate_limits = config.rate_limits  # the Outlet reads it from the instance
        self.bot = self.make_bot()
        self._progress: SendProgress[tg.Message] = SendProgress()

    def make_bot(self, *, polling: bool = False) -> tg.Bot:
        """A PTB ``Bot`` with its own HTTP clients. The connection makes its own
        (polling holds one connection open), so restarting it never touches sends."""
        config = self.tg_config
        timeout = config.request_timeout
        assert config.base_file_url is not None
        return tg.Bot(
            self.token,
            base_url=config.base_url,
            base_file_url=config.base_file_url,
            request=AiohttpRequest(4 if polling else 32, timeout),
            get_updates_request=AiohttpRequest(1, timeout),
        )

    def connection(self) -> tuple[type[Actor], tuple[Any, ...]]:
        from callboard.adapters.telegram.connection import TelegramConnection

        return TelegramConnection, (self,)

    def singleton_connection(self) -> bool:
        return self.tg_config.mode == "polling"  # Telegram answers a second poller with 409

    async def close(self) -> None:
        await self.bot.request.shutdown()  # the API bot never polls: this is its only client

    async def _api(self, method: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except tg_error.TelegramError as exc:
            raise api_error(exc, method) from None

    # ------------------------------------------------------------------ messages

    async def send_message(
        self,
        chat_type: str,
        chat_id: str,
        message: MessageChain,
        *,
        thread_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        return await self._send(chat_id, render(message), thread_id, idempotency_key)

    async def reply_message(
        self,
        event: MessageReceived,
        message: MessageChain,
        quote_origin: bool = False,
        *,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        rendered = render(message)
        if quote_origin:
            rendered.reply_to = int(event.message_id)
        return await self._send(event.chat_id, rendered, event.thread_id, idempotency_key)

    async def _send(
        self, chat_id: str, rendered: Rendered, thread_id: str | None, key: str | None
    ) -> MessageResult:
        """Send the steps in order. With an idempotency key, the messages
        already sent are remembered until the whole chain is out, so the
        outbound's retry of a half-sent long text sends only the rest."""
        chat = chat_ref(chat_id)
        thread = int(thread_id) if thread_id else None
        sent = self._progress.resume(key)
        steps = rendered.steps
        # the quote goes on the first message that can reply (a forward cannot)
        replying = next((i for i, s in enumerate(steps) if not isinstance(s, ForwardMessage)), None)
        try:
            for index in range(len(sent), len(steps)):
                quote = rendered.reply_to if index == replying else None
                sent.append(await self._step(chat, steps[index], thread, quote))
        except TelegramAPIError as exc:
            self._progress.failed(key, sent, exc)
            raise
        first = sent[0]
        return MessageResult(
            message_id=str(first.message_id),
            raw={"chat_id": str(first.chat.id), "message_ids": [str(m.message_id) for m in sent]},
        )

    async def _step(
        self, chat: int | str, step: Step, thread: int | None, reply_to: int | None
    ) -> tg.Message:
        bot = self.bot
        common: dict[str, Any] = {"chat_id": chat, "message_thread_id": thread}
        if reply_to is not None:
            common["reply_parameters"] = tg.ReplyParameters(
                message_id=reply_to, allow_sending_without_reply=True
            )
        if isinstance(step, Text):
            return await self._api(
                "sendMessage", bot.send_message(text=step.text, entities=step.entities or None, **common)
            )
        if isinstance(step, Media):
            method = f"send_{step.method}"
            if step.caption is not None:
                common["caption"] = step.caption.text
                common["caption_entities"] = step.caption.entities or None
            return await self._api(_camel(method), getattr(bot, method)(**step.params, **common))
        assert isinstance(step, ForwardMessage)
        return await self._api(
            "forwardMessage",
            bot.forward_message(
                chat_id=chat,
                from_chat_id=step.from_chat_id,
                message_id=step.message_id,
                message_thread_id=thread,
            ),
        )

    async def edit_message(
        self, chat_type: str, chat_id: str, message_id: str, new_content: MessageChain
    ) -> None:
        """Edit a text message, or the caption of a media message."""
        rendered = render(new_content)
        if len(rendered.steps) != 1 or not isinstance(rendered.steps[0], Text):
            raise RenderError("a Telegram edit takes one text of at most 4,096 characters, no media")
        text = rendered.steps[0]
        chat = chat_ref(chat_id)
        try:
            await self.bot.edit_message_text(
                text.text, chat_id=chat, message_id=int(message_id), entities=text.entities or None
            )
        except tg_error.BadRequest as exc:
            if "no text in the message" not in exc.message:
                raise api_error(exc, "editMessageText") from None
            await self._api(
                "editMessageCaption",
                self.bot.edit_message_caption(
                    chat_id=chat,
                    message_id=int(message_id),
                    caption=text.text,
                    caption_entities=text.entities or None,
                ),
            )
        except tg_error.TelegramError as exc:
            raise api_error(exc, "editMessageText") from None

    async def delete_message(self, chat_type: str, chat_id: str, message_id: str) -> None:
        await self._api("deleteMessage", self.bot.delete_message(chat_ref(chat_id), int(message_id)))

    async def forward_message(
        self, from_chat_type: str, from_chat_id: str, message_id: str, to_chat_type: str, to_chat_id: str
    ) -> MessageResult:
        message = await self._api(
            "forwardMessage",
            self.bot.forward_message(chat_ref(to_chat_id), chat_ref(from_chat_id), int(message_id)),
        )
        return MessageResult(
            message_id=str(message.message_id),
            raw={"chat_id": str(message.chat.id), "message_ids": [str(message.message_id)]},
        )

    async def add_reaction(self, chat_type: str, chat_id: str, message_id: str, reaction: str) -> None:
        """Set the bot's reaction on a message (a bot has one; this replaces it).
        ``custom:<id>`` names a custom emoji, as incoming reactions do."""
        kind: tg.ReactionType = (
            tg.ReactionTypeCustomEmoji(reaction.removeprefix("custom:"))
            if reaction.startswith("custom:")
            else tg.ReactionTypeEmoji(reaction)
        )
        await self._api(
            "setMessageReaction", self.bot.set_message_reaction(chat_ref(chat_id), int(message_id), kind)
        )

    # ------------------------------------------------------------------ groups

    async def get_group_info(self, group_id: str) -> Group:
        chat = chat_ref(group_id)
        info = await self._api("getChat", self.bot.get_chat(chat))
        count = await self._api("getChatMemberCount", self.bot.get_chat_member_count(chat))
        extra: dict[str, Any] = {"telegram_type": info.type}
        if info.username:
            extra["username"] = info.username
        if info.is_forum:
            extra["is_forum"] = True
        if info.invite_link:
            extra["invite_link"] = info.invite_link
        return Group(
            id=str(info.id),
            name=info.title or info.full_name or "",
            description=info.description,
            member_count=count,
            raw=extra,
        )

    async def set_group_name(self, group_id: str, name: str) -> None:
        await self._api("setChatTitle", self.bot.set_chat_title(chat_ref(group_id), name))

    async def get_group_member_list(self, group_id: str) -> list[GroupMember]:
        """The administrators: the only members the Bot API lists."""
        admins = await self._api(
            "getChatAdministrators", self.bot.get_chat_administrators(chat_ref(group_id))
        )
        return [_member(group_id, admin) for admin in admins]

    async def get_group_member_info(self, group_id: str, user_id: str) -> GroupMember:
        member = await self._api("getChatMember", self.bot.get_chat_member(chat_ref(group_id), int(user_id)))
        return _member(group_id, member)

    async def mute_member(self, group_id: str, user_id: str, duration: int = 0) -> None:
        """Take every send permission; ``duration`` 0 is until unmuted (Telegram
        makes anything under 30 s permanent, so shorter mutes last 30 s)."""
        until = int(time.time()) + max(duration, _MIN_RESTRICTION) if duration > 0 else None
        await self._api(
            "restrictChatMember",
            self.bot.restrict_chat_member(
                chat_ref(group_id),
                int(user_id),
                tg.ChatPermissions.no_permissions(),
                until_date=until,
                use_independent_chat_permissions=True,
            ),
        )

    async def unmute_member(self, group_id: str, user_id: str) -> None:
        """Give the member the group's default permissions back."""
        chat = chat_ref(group_id)
        info = await self._api("getChat", self.bot.get_chat(chat))
        permissions = info.permissions or _send_permissions()
        await self._api(
            "restrictChatMember",
            self.bot.restrict_chat_member(
                chat, int(user_id), permissions, use_independent_chat_permissions=True
            ),
        )

    async def kick_member(self, group_id: str, user_id: str) -> None:
        """Remove the member; they may join again (ban, then lift the ban)."""
        chat = chat_ref(group_id)
        await self._api("banChatMember", self.bot.ban_chat_member(chat, int(user_id)))
        await self._api(
            "unbanChatMember", self.bot.unban_chat_member(chat, int(user_id), only_if_banned=True)
        )

    async def leave_group(self, group_id: str) -> None:
        await self._api("leaveChat", self.bot.leave_chat(chat_ref(group_id)))

    # ------------------------------------------------------------------ users and files

    async def get_user_info(self, user_id: str) -> User:
        """A user who has talked to the bot (getChat on their private chat)."""
        info = await self._api("getChat", self.bot.get_chat(int(user_id)))
        extra = {"bio": info.bio} if info.bio else {}
        return User(id=str(info.id), nickname=info.full_name or "", username=info.username, raw=extra)

    async def get_file_url(self, file_id: str) -> str:
        """The download URL. It holds the bot token, as Telegram's file URLs do:
        treat it as a secret (it is never logged, and errors never show it)."""
        file = await self._api("getFile", self.bot.get_file(file_id))
        if not file.file_path:
            raise TelegramAPIError(
                "getFile", "Telegram returned no file path (file too big?)", permanent=True
            )
        return file.file_path

    # ------------------------------------------------------------------ platform actions

    async def platform_action(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        p: Any = action_params("telegram", action, _ACTION_PARAMS[action], params)
        bot = self.bot
        if action == "answer_callback_query":
            await self._api(
                "answerCallbackQuery",
                bot.answer_callback_query(
                    p.callback_query_id,
                    text=p.text,
                    show_alert=p.show_alert,
                    url=p.url,
                    cache_time=p.cache_time,
                ),
            )
            return {"ok": True}
        chat = chat_ref(p.chat_id)
        if action == "pin_message":
            await self._api(
                "pinChatMessage",
                bot.pin_chat_message(chat, p.message_id, disable_notification=p.disable_notification),
            )
        elif action == "unpin_message":
            await self._api("unpinChatMessage", bot.unpin_chat_message(chat, message_id=p.message_id))
        elif action == "unpin_all_messages":
            await self._api("unpinAllChatMessages", bot.unpin_all_chat_messages(chat))
        elif action == "get_chat_administrators":
            admins = await self._api("getChatAdministrators", bot.get_chat_administrators(chat))
            return {"administrators": [a.to_dict() for a in admins]}
        elif action == "set_chat_title":
            await self._api("setChatTitle", bot.set_chat_title(chat, p.title))
        elif action == "set_chat_description":
            await self._api("setChatDescription", bot.set_chat_description(chat, p.description))
        elif action == "get_chat_member_count":
            return {"count": await self._api("getChatMemberCount", bot.get_chat_member_count(chat))}
        elif action == "send_chat_action":
            await self._api(
                "sendChatAction", bot.send_chat_action(chat, p.action, message_thread_id=p.message_thread_id)
            )
        else:
            link = await self._api(
                "createChatInviteLink",
                bot.create_chat_invite_link(
                    chat,
                    expire_date=p.expire_date,
                    member_limit=p.member_limit,
                    name=p.name,
                    creates_join_request=p.creates_join_request,
                ),
            )
            return link.to_dict()
        return {"ok": True}


def _camel(method: str) -> str:
    head, *rest = method.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _member(group_id: str, member: tg.ChatMember) -> GroupMember:
    extra: dict[str, Any] = {"status": str(member.status)}
    until = getattr(member, "until_date", None)
    if until is not None:
        extra["until_date"] = until.timestamp()
    return GroupMember(
        user=user_of(member.user),
        group_id=group_id,
        role=_ROLES.get(member.status, MemberRole.MEMBER),
        title=getattr(member, "custom_title", None),
        raw=extra,
    )


def _send_permissions() -> tg.ChatPermissions:
    """Every send permission, for a group that reports no defaults."""
    return tg.ChatPermissions(
        can_send_messages=True,
        can_send_audios=True,
        can_send_documents=True,
        can_send_photos=True,
        can_send_videos=True,
        can_send_video_notes=True,
        can_send_voice_notes=True,
        can_send_polls=True,
        can_send_other_messages=True,
        can_add_web_page_previews=True,
    )
