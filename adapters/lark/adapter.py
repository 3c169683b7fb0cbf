"""LarkAdapter: the unified platform API on Lark's open API.

Sends render the chain (``render.py``) and go out through ``im/v1``: a new
message (``receive_id_type`` open_id for ``ou_`` ids, union_id for ``on_``,
chat_id otherwise) or a native reply (in the thread when the event was in
one). Each send carries Lark's ``uuid`` made from the engine's idempotency key,
so a retried send within Lark's one-hour dedup window is not shown twice.
Errors become ``LarkAPIError`` (a ``SendError``): the rate-limit code 99991400
is transient with Lark's reset time, server trouble is transient, the rest
permanent.

Streaming replies (``stream_replies``): text replies are cards, and editing one
patches the card. Patches of one card are throttled to ``stream_interval``; an
update that arrives while an earlier one waits replaces it, so the card shows
the latest text and the last update always lands.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field

from callboard.adapters.base import Adapter, AdapterHost, action_params, params_doc
from callboard.adapters.lark.api import OpenAPI
from callboard.adapters.lark.config import LarkAdapterConfig
from callboard.adapters.lark.convert import Converter, parse_resource_ref, user_of
from callboard.adapters.lark.errors import LarkAPIError
from callboard.adapters.lark.render import Message, Rendered, RenderError, Upload, edit_content, render
from callboard.engine.actor import Actor
from callboard.engine.clock import sleep
from callboard.engine.entities import (
    ID,
    ChatType,
    File,
    Group,
    GroupMember,
    Image,
    MemberRole,
    MessageChain,
    User,
    Voice,
)
from callboard.engine.events import MessageReceived
from callboard.engine.platform import MessageResult, PlatformAction, RateLimits

log = logging.getLogger("callboard.lark")

_KEPT = 10_000
_IMAGE_TYPES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tiff", ".ico", ".heic"})
_FILE_TYPES = {".opus": "opus", ".mp4": "mp4", ".pdf": "pdf", ".doc": "doc", ".docx": "doc"}
_FILE_TYPES |= {".xls": "xls", ".xlsx": "xls", ".ppt": "ppt", ".pptx": "ppt"}
#: Lark's uuid (send dedup key) is at most 50 characters
_UUID_MAX = 50


# ---------------------------------------------------------------------- platform action params


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _SendCard(_Params):
    chat_id: ID = Field(description="chat_id (oc_...), or a user's open_id (ou_...)")
    card: dict[str, Any] = Field(description="the card JSON")


class _UpdateCard(_Params):
    message_id: ID
    card: dict[str, Any] = Field(description="the new card JSON")


class _Chat(_Params):
    chat_id: ID


class _Resource(_Params):
    message_id: ID
    file_key: str
    type: str = Field(default="file", pattern="^(image|file)$", description="image or file")


class _Nothing(_Params):
    pass


_ACTION_PARAMS: dict[str, type[_Params]] = {
    "send_card": _SendCard,
    "update_card": _UpdateCard,
    "get_chat": _Chat,
    "get_message_resource": _Resource,
    "refresh_tokens": _Nothing,
    "check_tenant_access_token": _Nothing,
}


class _CardStream:
    """One card's updates: the newest content wins, at most one patch per interval."""

    __slots__ = ("generation", "lock", "next_at")

    def __init__(self) -> None:
        self.generation = 0
        self.next_at = 0.0
        self.lock = asyncio.Lock()


class LarkAdapter(Adapter):
    adapter_name: ClassVar[str] = "lark"
    config_type: ClassVar[type[LarkAdapterConfig]] = LarkAdapterConfig
    emits: ClassVar[tuple[str, ...]] = (
        "message.received",
        "message.deleted",
        "message.reaction",
        "feedback.received",
        "group.member_joined",
        "group.member_left",
        "group.info_updated",
        "bot.invited_to_group",
        "bot.removed_from_group",
        "platform.specific",
    )
    #: Lark: 50 sends/s per app, 5/s per user or group
    rate_limits = RateLimits(
        per_bot_per_second=50, per_private_chat_per_second=5, per_group_chat_per_minute=300
    )
    max_text_length: ClassVar[int | None] = 10_000
    platform_actions: ClassVar[tuple[PlatformAction, ...]] = (
        PlatformAction(
            action="send_card", description="send an interactive card", params=params_doc(_SendCard)
        ),
        PlatformAction(
            action="update_card", description="replace a sent card (patch)", params=params_doc(_UpdateCard)
        ),
        PlatformAction(action="get_chat", description="the chat's metadata (raw)", params=params_doc(_Chat)),
        PlatformAction(
            action="get_message_resource",
            description="download an image or file of a message; answers a file:// URL",
            params=params_doc(_Resource),
        ),
        PlatformAction(action="refresh_tokens", description="fetch new access tokens now"),
        PlatformAction(
            action="check_tenant_access_token", description="whether a tenant access token can be had"
        ),
    )

    def __init__(self, host: AdapterHost, config: LarkAdapterConfig) -> None:
        super().__init__(host, config)
        self.lark_config = config
        if config.rate_limits is not None:
            self.rate_limits = config.rate_limits  # the Outlet reads it here
        self.api = OpenAPI(config, host.clock)
        self.converter = Converter(host.bot_id, self)
        self.bot_open_id: str | None = None
        self.bot_name = ""
        self._cards: OrderedDict[str, None] = OrderedDict()
        self._streams: dict[str, _CardStream] = {}
        self._chat_modes: dict[str, str] = {}
        self._files = Path(tempfile.gettempdir()) / "callboard-lark" / host.bot_id

    def connection(self) -> tuple[type[Actor], tuple[Any, ...]]:
        from callboard.adapters.lark.connection import LarkConnection

        return LarkConnection, (self,)

    def singleton_connection(self) -> bool:
        return self.lark_config.mode == "ws"

    async def close(self) -> None:
        await self.api.close()

    # ------------------------------------------------------------------ helpers

    def tenant_of(self, chat_id: str | None) -> str | None:
        """A store app's tenant for a chat (learned from its events); None for self-built apps."""
        if self.lark_config.app_type == "self":
            return None
        converter = self.converter
        return (converter.tenants.get(chat_id) if chat_id else None) or converter.last_tenant

    async def bot_info(self) -> dict[str, Any]:
        """The bot's own identity (open_id, name); mentions of it are recognised by it."""
        data = await self.api.call(
            "bot_info", "GET", "/open-apis/bot/v3/info", tenant_key=self.tenant_of(None)
        )
        bot = data.get("bot") or {}
        self.bot_open_id = str(bot.get("open_id") or "") or None
        self.bot_name = str(bot.get("app_name") or "")
        if self.bot_open_id:
            self.converter.set_bot(self.bot_open_id)
        return dict(bot)

    async def message_items(self, message_id: str, tenant_key: str | None) -> list[dict[str, Any]]:
        data = await self.api.call(
            "get_message", "GET", f"/open-apis/im/v1/messages/{message_id}", tenant_key=tenant_key
        )
        return list(data.get("items") or [])

    def app_ticket(self, ticket: str) -> None:
        self.api.app_ticket = ticket

    async def chat_mode(self, chat_id: str, tenant_key: str | None) -> str:
        mode = self._chat_modes.get(chat_id)
        if mode is None:
            data = await self._chat(chat_id, tenant_key)
            mode = self._chat_modes[chat_id] = str(data.get("chat_mode") or "group")
        return mode

    async def _chat(self, chat_id: str, tenant_key: str | None = None) -> dict[str, Any]:
        return await self.api.call(
            "get_chat",
            "GET",
            f"/open-apis/im/v1/chats/{chat_id}",
            tenant_key=tenant_key or self.tenant_of(chat_id),
        )

    def _remember_card(self, message_id: str) -> None:
        self._cards[message_id] = None
        while len(self._cards) > _KEPT:
            dropped, _ = self._cards.popitem(last=False)
            self._streams.pop(dropped, None)

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
        rendered = render(message, as_card=self.lark_config.stream_replies)
        root = self.converter.threads.get(thread_id) if thread_id else None
        if root is not None and rendered.reply_to is None:
            rendered.reply_to = root
            return await self._send(chat_id, rendered, idempotency_key, in_thread=True)
        return await self._send(chat_id, rendered, idempotency_key, in_thread=False)

    async def reply_message(
        self,
        event: MessageReceived,
        message: MessageChain,
        quote_origin: bool = False,
        *,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        rendered = render(message, as_card=self.lark_config.stream_replies)
        in_thread = event.thread_id is not None
        if rendered.reply_to is None and (quote_origin or in_thread):
            rendered.reply_to = event.message_id
        return await self._send(event.chat_id, rendered, idempotency_key, in_thread=in_thread)

    async def _send(
        self, chat_id: str, rendered: Rendered, key: str | None, *, in_thread: bool
    ) -> MessageResult:
        tenant = self.tenant_of(chat_id)
        sent: list[str] = []
        for index, step in enumerate(rendered.steps):
            message = await self._upload(step.component, tenant) if isinstance(step, Upload) else step
            body: dict[str, Any] = {
                "msg_type": message.msg_type,
                "content": orjson.dumps(message.content).decode(),
            }
            if key is not None:
                body["uuid"] = _uuid(f"{key}:{index}")
            if rendered.reply_to is not None:
                if in_thread:
                    body["reply_in_thread"] = True
                data = await self.api.call(
                    "reply_message",
                    "POST",
                    f"/open-apis/im/v1/messages/{rendered.reply_to}/reply",
                    json=body,
                    tenant_key=tenant,
                )
            else:
                body["receive_id"] = chat_id
                data = await self.api.call(
                    "send_message",
                    "POST",
                    "/open-apis/im/v1/messages",
                    params={"receive_id_type": _receive_id_type(chat_id)},
                    json=body,
                    tenant_key=tenant,
                )
            message_id = str(data.get("message_id", ""))
            if message.msg_type == "interactive":
                self._remember_card(message_id)
            sent.append(message_id)
        return MessageResult(message_id=sent[0], raw={"chat_id": chat_id, "message_ids": sent})

    async def _upload(self, component: Image | File | Voice, tenant: str | None) -> Message:
        if isinstance(component, Image):
            key = component.file_id if component.file_id and component.file_id.startswith("img_") else None
            if key is None:
                data = await self._bytes_of(component)
                form = aiohttp.FormData()
                form.add_field("image_type", "message")
                form.add_field("image", data, filename="image", content_type=component.mime or "image/png")
                result = await self.api.call(
                    "upload_image", "POST", "/open-apis/im/v1/images", form=form, tenant_key=tenant
                )
                key = str(result["image_key"])
            return Message("image", {"image_key": key})
        key = component.file_id if component.file_id and component.file_id.startswith("file_") else None
        if isinstance(component, Voice):
            if key is None:
                duration = int(component.duration * 1000) if component.duration else None
                data = await self._bytes_of(component)
                key = await self._upload_file(data, "voice.opus", tenant, file_type="opus", duration=duration)
            return Message("audio", {"file_key": key})
        if key is None:
            data = await self._bytes_of(component)
            key = await self._upload_file(data, component.name or "file", tenant)
        return Message("file", {"file_key": key})

    async def _upload_file(
        self,
        data: bytes,
        name: str,
        tenant: str | None,
        *,
        file_type: str | None = None,
        duration: int | None = None,
    ) -> str:
        form = aiohttp.FormData()
        form.add_field("file_type", file_type or _FILE_TYPES.get(Path(name).suffix.lower(), "stream"))
        form.add_field("file_name", name)
        if duration is not None:
            form.add_field("duration", str(duration))
        form.add_field(
            "file",
            data,
            filename=name,
            content_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
        )
        result = await self.api.call(
            "upload_file", "POST", "/open-apis/im/v1/files", form=form, tenant_key=tenant
        )
        return str(result["file_key"])

    async def _bytes_of(self, component: Any) -> bytes:
        if component.data is not None:
            return bytes(component.data)
        if component.file_id and parse_resource_ref(component.file_id):
            content, _ = await self._resource(component.file_id)
            return content
        if component.url:
            try:
                async with self.api.session().get(component.url) as response:
                    response.raise_for_status()
                    return await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise LarkAPIError(
                    "fetch_media", 0, f"cannot fetch {type(component).__name__}: {exc}", permanent=False
                ) from None
        raise RenderError(f"the {type(component).__name__} has no data, url or Lark key to send")

    async def edit_message(
        self, chat_type: str, chat_id: str, message_id: str, new_content: MessageChain
    ) -> None:
        """Text and post messages are updated; cards (streamed replies) are patched, throttled."""
        card = message_id in self._cards
        if not card and self.lark_config.stream_replies:
            items = await self.message_items(message_id, self.tenant_of(chat_id))
            card = bool(items) and items[0].get("msg_type") == "interactive"
            if card:
                self._remember_card(message_id)
        message = edit_content(new_content, card=card)
        if card:
            await self.update_card(message_id, message.content, chat_id=chat_id)
            return
        await self.api.call(
            "edit_message",
            "PUT",
            f"/open-apis/im/v1/messages/{message_id}",
            json={"msg_type": message.msg_type, "content": orjson.dumps(message.content).decode()},
            tenant_key=self.tenant_of(chat_id),
        )

    async def update_card(self, message_id: str, card: dict[str, Any], *, chat_id: str | None = None) -> bool:
        """Patch a card; returns False when a newer update superseded this one."""
        stream = self._streams.setdefault(message_id, _CardStream())
        stream.generation += 1
        mine = stream.generation
        clock = self.host.clock
        wait = stream.next_at - clock.now()
        if wait > 0:
            await sleep(clock, wait)
        async with stream.lock:
            if stream.generation != mine:
                return False  # a newer text is waiting: it goes out instead
            await self.api.call(
                "update_card",
                "PATCH",
                f"/open-apis/im/v1/messages/{message_id}",
                json={"content": orjson.dumps(card).decode()},
                tenant_key=self.tenant_of(chat_id),
            )
            stream.next_at = clock.now() + self.lark_config.stream_interval
        return True

    async def delete_message(self, chat_type: str, chat_id: str, message_id: str) -> None:
        await self.api.call(
            "delete_message",
            "DELETE",
            f"/open-apis/im/v1/messages/{message_id}",
            tenant_key=self.tenant_of(chat_id),
        )

    async def forward_message(
        self, from_chat_type: str, from_chat_id: str, message_id: str, to_chat_type: str, to_chat_id: str
    ) -> MessageResult:
        """Lark's native forward (``im/v1/messages/:id/forward``)."""
        data = await self.api.call(
            "forward_message",
            "POST",
            f"/open-apis/im/v1/messages/{message_id}/forward",
            params={"receive_id_type": _receive_id_type(to_chat_id)},
            json={"receive_id": to_chat_id},
            tenant_key=self.tenant_of(from_chat_id),
        )
        forwarded = str(data.get("message_id", ""))
        return MessageResult(message_id=forwarded, raw={"chat_id": to_chat_id, "message_ids": [forwarded]})

    async def get_message(self, chat_type: str, chat_id: str, message_id: str) -> MessageReceived:
        items = await self.message_items(message_id, self.tenant_of(chat_id))
        if not items:
            raise LarkAPIError("get_message", 230001, "no such message", permanent=True)
        item = items[0]
        real_chat = str(item.get("chat_id") or chat_id)
        kind = ChatType(chat_type) if chat_type in ("private", "group") else ChatType.GROUP
        sender = item.get("sender") or {}
        created = item.get("create_time")
        return MessageReceived(
            bot_id=self.host.bot_id,
            adapter=self.adapter_name,
            chat_type=kind,
            chat_id=real_chat,
            thread_id=item.get("thread_id") or None,
            group=Group(id=real_chat) if kind == ChatType.GROUP else None,
            message_id=message_id,
            message_chain=MessageChain(self.converter.content.item(item)),
            sender=User(id=str(sender.get("id", "")), is_bot=sender.get("sender_type") == "app"),
            timestamp=int(created) / 1000 if created else 0.0,
            raw={"msg_type": item.get("msg_type"), "deleted": item.get("deleted", False)},
        )

    async def add_reaction(self, chat_type: str, chat_id: str, message_id: str, reaction: str) -> None:
        """``reaction`` is a Lark emoji type, e.g. THUMBSUP, SMILE, OK."""
        await self.api.call(
            "add_reaction",
            "POST",
            f"/open-apis/im/v1/messages/{message_id}/reactions",
            json={"reaction_type": {"emoji_type": reaction}},
            tenant_key=self.tenant_of(chat_id),
        )

    # ------------------------------------------------------------------ groups

    async def get_group_info(self, group_id: str) -> Group:
        data = await self._chat(group_id)
        count = data.get("user_count")
        return Group(
            id=group_id,
            name=str(data.get("name") or ""),
            description=data.get("description") or None,
            member_count=int(count) if count is not None else None,
            avatar_url=data.get("avatar") or None,
            owner_id=data.get("owner_id") or None,
            raw={
                k: data[k]
                for k in ("chat_mode", "chat_type", "external", "tenant_key", "bot_count")
                if k in data
            },
        )

    async def get_group_list(self) -> list[Group]:
        out: list[Group] = []
        async for item in self._pages("get_group_list", "/open-apis/im/v1/chats", {}, None):
            out.append(
                Group(
                    id=str(item.get("chat_id")),
                    name=str(item.get("name") or ""),
                    description=item.get("description") or None,
                    avatar_url=item.get("avatar") or None,
                    owner_id=item.get("owner_id") or None,
                )
            )
        return out

    async def get_group_member_list(self, group_id: str) -> list[GroupMember]:
        owner = (await self._chat(group_id)).get("owner_id")
        out: list[GroupMember] = []
        path = f"/open-apis/im/v1/chats/{group_id}/members"
        async for item in self._pages("get_group_member_list", path, {"member_id_type": "open_id"}, group_id):
            member_id = str(item.get("member_id"))
            out.append(
                GroupMember(
                    user=User(id=member_id, nickname=str(item.get("name") or "")),
                    group_id=group_id,
                    role=MemberRole.OWNER if member_id == owner else MemberRole.MEMBER,
                )
            )
        return out

    async def get_group_member_info(self, group_id: str, user_id: str) -> GroupMember:
        """Lark has no call for one member: the member list is searched."""
        for member in await self.get_group_member_list(group_id):
            if member.user.id == user_id:
                return member
        raise LarkAPIError("get_group_member_info", 0, "not a member of the chat", permanent=True)

    async def _pages(self, call: str, path: str, params: dict[str, Any], chat_id: str | None) -> Any:
        token: str | None = None
        while True:
            query = dict(params, page_size=100)
            if token:
                query["page_token"] = token
            data = await self.api.call(call, "GET", path, params=query, tenant_key=self.tenant_of(chat_id))
            for item in data.get("items") or []:
                yield item
            token = data.get("page_token")
            if not data.get("has_more") or not token:
                return

    async def set_group_name(self, group_id: str, name: str) -> None:
        await self.api.call(
            "set_group_name",
            "PUT",
            f"/open-apis/im/v1/chats/{group_id}",
            json={"name": name},
            tenant_key=self.tenant_of(group_id),
        )

    async def kick_member(self, group_id: str, user_id: str) -> None:
        await self.api.call(
            "kick_member",
            "DELETE",
            f"/open-apis/im/v1/chats/{group_id}/members",
            params={"member_id_type": "open_id"},
            json={"id_list": [user_id]},
            tenant_key=self.tenant_of(group_id),
        )

    async def leave_group(self, group_id: str) -> None:
        await self.api.call(
            "leave_group",
            "DELETE",
            f"/open-apis/im/v1/chats/{group_id}/members",
            params={"member_id_type": "app_id"},
            json={"id_list": [self.lark_config.app_id]},
            tenant_key=self.tenant_of(group_id),
        )

    # ------------------------------------------------------------------ users and files

    async def get_user_info(self, user_id: str) -> User:
        data = await self.api.call(
            "get_user_info",
            "GET",
            f"/open-apis/contact/v3/users/{user_id}",
            params={"user_id_type": "open_id"},
            tenant_key=self.tenant_of(None),
        )
        info = data.get("user") or {}
        user = user_of(
            {k: info.get(k) for k in ("open_id", "union_id", "user_id")} | {"open_id": user_id},
            str(info.get("name") or ""),
        )
        avatar = (info.get("avatar") or {}).get("avatar_240")
        extra = dict(user.raw)
        for key in ("en_name", "nickname", "email", "mobile", "department_ids", "job_title"):
            if info.get(key):
                extra[key] = info[key]
        return User(id=user.id, nickname=user.nickname, avatar_url=avatar, raw=extra)

    async def upload_file(self, file_data: bytes, filename: str) -> str:
        """Images answer an image_key, anything else a file_key; both can be sent in a chain."""
        tenant = self.tenant_of(None)
        if Path(filename).suffix.lower() in _IMAGE_TYPES:
            form = aiohttp.FormData()
            form.add_field("image_type", "message")
            form.add_field("image", file_data, filename=filename)
            result = await self.api.call(
                "upload_image", "POST", "/open-apis/im/v1/images", form=form, tenant_key=tenant
            )
            return str(result["image_key"])
        return await self._upload_file(file_data, filename, tenant)

    async def get_file_url(self, file_id: str) -> str:
        """A ``file://`` URL of a local copy: Lark resources need a token to download,
        so they are fetched through the message-resource API (or, for keys the app
        uploaded, the image API) and kept under the system temp directory."""
        if parse_resource_ref(file_id):
            content, kind = await self._resource(file_id)
        elif file_id.startswith("img_"):
            content, kind = await self.api.download(
                "get_image", f"/open-apis/im/v1/images/{file_id}", tenant_key=self.tenant_of(None)
            )
        else:
            raise LarkAPIError(
                "get_file_url",
                0,
                "Lark serves only images the app uploaded and resources of messages",
                permanent=True,
            )
        return self._keep(file_id, content, kind).as_uri()

    async def _resource(self, ref: str) -> tuple[bytes, str]:
        parsed = parse_resource_ref(ref)
        assert parsed is not None
        message_id, kind, key = parsed
        return await self.api.download(
            "get_message_resource",
            f"/open-apis/im/v1/messages/{message_id}/resources/{key}",
            params={"type": kind},
            tenant_key=self.tenant_of(self.converter.chats.get(message_id, (None, None))[1]),
        )

    def _keep(self, file_id: str, content: bytes, kind: str) -> Path:
        self._files.mkdir(parents=True, exist_ok=True)
        suffix = mimetypes.guess_extension(kind.split(";")[0].strip()) or ""
        path = self._files / (hashlib.sha256(file_id.encode()).hexdigest()[:32] + suffix)
        temp = path.with_suffix(path.suffix + f".{os.getpid()}.part")
        temp.write_bytes(content)
        temp.replace(path)
        return path

    # ------------------------------------------------------------------ platform actions

    async def platform_action(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        p: Any = action_params("lark", action, _ACTION_PARAMS[action], params)
        if action == "send_card":
            result = await self._send(
                p.chat_id, Rendered([Message("interactive", p.card)], None), None, in_thread=False
            )
            return {"message_id": result.message_id}
        if action == "update_card":
            self._remember_card(p.message_id)
            return {"updated": await self.update_card(p.message_id, p.card)}
        if action == "get_chat":
            return await self._chat(p.chat_id)
        if action == "get_message_resource":
            ref = f"{p.message_id}:{p.type}:{p.file_key}"
            content, kind = await self._resource(ref)
            return {
                "url": self._keep(ref, content, kind).as_uri(),
                "content_type": kind,
                "size": len(content),
            }
        if action == "refresh_tokens":
            self.api.forget_tokens()
            await self.api.tenant_token(self.tenant_of(None))
            return {"ok": True}
        await self.api.tenant_token(self.tenant_of(None))
        return {"ok": True}


def _receive_id_type(chat_id: str) -> str:
    if chat_id.startswith("ou_"):
        return "open_id"
    if chat_id.startswith("on_"):
        return "union_id"
    return "chat_id"


def _uuid(key: str) -> str:
    return key if len(key) <= _UUID_MAX else hashlib.sha256(key.encode()).hexdigest()[:_UUID_MAX]
