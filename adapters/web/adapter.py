"""WebAdapter: the web chat's platform API, composed of one-job modules.

``page`` serves the chat page, ``socket`` the session endpoint and the websocket,
``identity`` says who is connected, ``directory`` knows users and groups, ``convert``
turns frames into events, ``outbox`` stores and pushes bot output, ``client`` writes
to one socket. See docs/web-protocol.md.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import msgspec

from callboard.adapters.base import Adapter, AdapterHost
from callboard.adapters.web.config import WebAdapterConfig
from callboard.adapters.web.connection import WebConnection
from callboard.adapters.web.directory import Directory
from callboard.adapters.web.identity import Sessions
from callboard.adapters.web.outbox import Outbox, edited, message
from callboard.adapters.web.page import Page
from callboard.adapters.web.socket import Gateway
from callboard.engine.actor import Actor
from callboard.engine.entities import Forward, Group, GroupMember, MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.ids import new_id
from callboard.engine.platform import MessageResult, PlatformAction

SECRET_NAME = "web-sessions"


def key_id(idempotency_key: str) -> str:
    """A send's message id from its idempotency key: a replayed send (stored once, under
    the first id) hands its handler the same id without waiting for the store."""
    return hashlib.blake2b(idempotency_key.encode(), digest_size=16).hexdigest()


class WebAdapter(Adapter):
    adapter_name: ClassVar[str] = "web"
    config_type: ClassVar[type[WebAdapterConfig]] = WebAdapterConfig
    emits: ClassVar[tuple[str, ...]] = (
        "message.received",
        "message.edited",
        "message.deleted",
        "message.reaction",
        "group.member_joined",
        "group.member_left",
    )
    idempotent_sends: ClassVar[bool] = True  # the outbox refuses a repeated key
    platform_actions: ClassVar[tuple[PlatformAction, ...]] = (
        PlatformAction(action="typing", description="show a typing indicator", params={"chat_id": "chat"}),
    )

    def __init__(self, host: AdapterHost, config: WebAdapterConfig) -> None:
        super().__init__(host, config)
        self.base_path = f"/web/{host.bot_id}"
        self.directory = Directory(host.store)
        self.outbox = Outbox(host.store)
        sessions = Sessions(host.bot_id, config, lambda: host.secret(SECRET_NAME))
        self.gateway = Gateway(host, config, self.base_path, sessions, self.directory, self.outbox)
        self.page = Page(self.base_path, host.bot_id, config.title)

    def connection(self) -> tuple[type[Actor], tuple[Any, ...]]:
        return WebConnection, (self,)

    def links(self) -> dict[str, str]:
        return {"web chat": f"{self.base_path}/"}

    def from_peer(self, data: bytes) -> None:
        if not self.directory.from_peer(data):
            self.outbox.from_peer(data)

    def register_routes(self) -> None:
        for method, path, handler in [*self.page.routes(), *self.gateway.routes()]:
            self.host.add_route(method, path, handler)

    # ------------------------------------------------------------------ sending

    async def send_message(
        self,
        chat_type: str,
        chat_id: str,
        message: MessageChain,
        *,
        thread_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        return await self._send(chat_id, message, None, idempotency_key)

    async def reply_message(
        self,
        event: MessageReceived,
        message: MessageChain,
        quote_origin: bool = False,
        *,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        reply_to = event.message_id if quote_origin else None
        return await self._send(event.chat_id, message, reply_to, idempotency_key)

    async def _send(
        self, chat_id: str, chain: MessageChain, reply_to: str | None, idempotency_key: str | None
    ) -> MessageResult:
        message_id = "b" + (new_id() if idempotency_key is None else key_id(idempotency_key))
        await self.outbox.publish(chat_id, message(chat_id, message_id, chain, reply_to), idempotency_key)
        return MessageResult(message_id=message_id)

    async def edit_message(
        self, chat_type: str, chat_id: str, message_id: str, new_content: MessageChain
    ) -> None:
        await self.outbox.publish(chat_id, edited(chat_id, message_id, new_content))

    async def delete_message(self, chat_type: str, chat_id: str, message_id: str) -> None:
        await self.outbox.publish(chat_id, {"op": "deleted", "chat_id": chat_id, "message_id": message_id})

    async def forward_message(
        self, from_chat_type: str, from_chat_id: str, message_id: str, to_chat_type: str, to_chat_id: str
    ) -> MessageResult:
        chain = MessageChain.of(
            Forward(from_chat_id=from_chat_id, from_message_id=message_id),
            f"(forwarded message {message_id} from {from_chat_id})",
        )
        return await self._send(to_chat_id, chain, None, None)

    async def add_reaction(self, chat_type: str, chat_id: str, message_id: str, reaction: str) -> None:
        await self.outbox.publish(
            chat_id, {"op": "reaction", "chat_id": chat_id, "message_id": message_id, "reaction": reaction}
        )

    async def mute_member(self, group_id: str, user_id: str, duration: int = 0) -> None:
        """The user's sends and edits in the group are refused (``muted``) for ``duration``
        seconds (0: until unmuted); members see a ``muted`` frame. Stored before it
        returns, so it holds across a restart and on every node."""
        await self.directory.mute(group_id, user_id, duration)
        frame = {"op": "muted", "chat_id": group_id, "user_id": user_id, "duration": duration}
        await self.outbox.publish(group_id, frame)

    async def unmute_member(self, group_id: str, user_id: str) -> None:
        await self.directory.unmute(group_id, user_id)
        await self.outbox.publish(group_id, {"op": "unmuted", "chat_id": group_id, "user_id": user_id})

    async def platform_action(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, str) or not chat_id:
            raise ValueError("typing needs a chat_id")
        self.outbox.typing(chat_id)
        return {"ok": True}

    # ------------------------------------------------------------------ queries

    # Read from the journal's copy when not cached here; in cluster mode a cached group
    # may lag a change made on another node by up to directory.STALE_AFTER seconds.

    async def get_group_info(self, group_id: str) -> Group:
        record = await self.directory.record(group_id)
        if not record["members"] and group_id not in await self.directory.all_groups():
            raise LookupError(f"web group {group_id!r} has not been seen")
        group = self.directory.group(group_id)
        return msgspec.structs.replace(group, member_count=len(record["members"]))

    async def get_group_list(self) -> list[Group]:
        return [Group(id=gid, name=name) for gid, name in sorted((await self.directory.all_groups()).items())]

    async def get_group_member_list(self, group_id: str) -> list[GroupMember]:
        await self.directory.record(group_id)
        return self.directory.members(group_id)

    async def get_group_member_info(self, group_id: str, user_id: str) -> GroupMember:
        await self.directory.record(group_id)
        for member in self.directory.members(group_id):
            if member.user.id == user_id:
                return member
        raise LookupError(f"user {user_id!r} is not a known member of web group {group_id!r}")

    async def get_user_info(self, user_id: str) -> User:
        user = self.directory.users.get(user_id)
        if user is None:
            raise LookupError(f"web user {user_id!r} has not been seen")
        return user
