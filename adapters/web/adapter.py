"""WebAdapter: the web chat's platform API and its websocket endpoint.

Bot output is stored in the journal's outbox with a per-chat ``seq`` before it
is pushed, so a client that reconnects and subscribes with ``since`` gets
every frame it missed. Users, groups and members are learnt from the frames
clients send (kept in memory, so group member lists start empty after a
restart until people speak again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import resources
from typing import Any, ClassVar

import msgspec
from aiohttp import WSMsgType, web

from callboard.adapters.base import Adapter, AdapterHost
from callboard.adapters.web.config import WebAdapterConfig
from callboard.adapters.web.protocol import (
    DeleteOp,
    EditOp,
    FrameError,
    JoinOp,
    LeaveOp,
    ReactOp,
    SendOp,
    SubscribeOp,
    frame,
    parse_op,
)
from callboard.engine.actor import Actor
from callboard.engine.entities import (
    ChatType,
    Forward,
    Group,
    GroupMember,
    MessageChain,
    Quote,
    User,
    to_builtins,
)
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
from callboard.engine.platform import MessageResult, PlatformAction

log = logging.getLogger("callboard.web")

_STATIC = {
    "app.js": "application/javascript",
    "style.css": "text/css",
}


class WebClient:
    """One websocket: frames to it go through a bounded queue and one writer task."""

    def __init__(self, ws: web.WebSocketResponse, queue_size: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(queue_size)
        self.chats: set[str] = set()
        self.sent: dict[str, int] = {}  # newest stored seq sent, per chat
        self.backfilling: dict[str, list[tuple[int, bytes]]] = {}
        self.writer = asyncio.ensure_future(self._write())
        self.closing: asyncio.Future[bool] | None = None
        self.dropped = False

    def push(self, data: bytes) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped = True  # a client this slow gets disconnected; it resubscribes with since
            log.warning("web client too slow; closing its connection")
            self.closing = asyncio.ensure_future(self.ws.close(message=b"send queue full"))

    def deliver(self, chat: str, seq: int, data: bytes) -> None:
        """A stored frame for ``chat``: sent once, in seq order, even when the
        backlog read during a subscribe already had it."""
        pending = self.backfilling.get(chat)
        if pending is not None:
            pending.append((seq, data))
        elif seq > self.sent.get(chat, 0):
            self.sent[chat] = seq
            self.push(data)

    async def _write(self) -> None:
        while True:
            data = await self.queue.get()
            if data is None:
                return
            try:
                await self.ws.send_str(data.decode())  # the protocol speaks JSON text frames
            except (ConnectionError, RuntimeError):
                return

    async def close(self) -> None:
        self.writer.cancel()
        await asyncio.gather(self.writer, return_exceptions=True)


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
        self.web_config = config
        self.subscribers: dict[str, set[WebClient]] = {}
        self.users: dict[str, User] = {}
        self.groups: dict[str, Group] = {}
        self.members: dict[str, dict[str, GroupMember]] = {}
        self.accepting = False
        self.clients = 0

    # ------------------------------------------------------------------ lifecycle

    def connection(self) -> tuple[type[Actor], tuple[Any, ...]]:
        from callboard.adapters.web.connection import WebConnection

        return WebConnection, (self,)

    def links(self) -> dict[str, str]:
        return {"web chat": f"{self.base_path}/"}

    @property
    def base_path(self) -> str:
        return f"/web/{self.host.bot_id}"

    def register_routes(self) -> None:
        host = self.host
        host.add_route("GET", f"{self.base_path}/", self._page)
        host.add_route("GET", self.base_path, self._redirect)
        host.add_route("GET", f"{self.base_path}/ws", self._websocket)
        host.add_route("GET", f"{self.base_path}/static/app.js", self._static)
        host.add_route("GET", f"{self.base_path}/static/style.css", self._static)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        html = (
            resources.files("callboard.adapters.web")
            .joinpath("static/index.html")
            .read_text(encoding="utf-8")
        )
        html = html.replace("{{TITLE}}", _escape(self.web_config.title)).replace(
            "{{BOT_ID}}", _escape(self.host.bot_id)
        )
        return web.Response(text=html, content_type="text/html")

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{self.base_path}/")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.path.rsplit("/", 1)[-1]
        body = resources.files("callboard.adapters.web").joinpath(f"static/{name}").read_bytes()
        return web.Response(body=body, content_type=_STATIC[name])

    # ------------------------------------------------------------------ the websocket

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        client = WebClient(ws, self.web_config.send_queue)
        in_flight: asyncio.Queue[tuple[asyncio.Future[list[int | None]], Event, str] | None] = asyncio.Queue(
            self.web_config.max_in_flight
        )
        acker = asyncio.ensure_future(self._ack_in_order(client, in_flight))
        self.clients += 1
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_frame(client, message.data, in_flight)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients -= 1
            await in_flight.put(None)
            await asyncio.gather(acker, return_exceptions=True)
            for chat in client.chats:
                self.subscribers.get(chat, set()).discard(client)
            await client.close()
        return ws

    async def _on_frame(
        self,
        client: WebClient,
        data: str | bytes,
        in_flight: asyncio.Queue[tuple[asyncio.Future[list[int | None]], Event, str] | None],
    ) -> None:
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self.web_config.max_frame_bytes:
            client.push(
                _error(None, "too_large", f"frame of {size} bytes exceeds {self.web_config.max_frame_bytes}")
            )
            return
        try:
            op = parse_op(data)
        except FrameError as exc:
            client.push(_error(exc.client_msg_id, exc.code, exc.reason))
            return
        if isinstance(op, SubscribeOp):
            await self._subscribe(client, op.chat_id, op.since)
            return
        if not self.accepting:
            client.push(_error(op.client_msg_id, "shutting_down", "the bot is not accepting events now"))
            return
        event = self._to_event(op)
        if op.chat_id not in client.chats:
            self._subscribe_live(client, op.chat_id)
        await in_flight.put((self.host.ingest([event]), event, op.client_msg_id))

    async def _ack_in_order(
        self,
        client: WebClient,
        in_flight: asyncio.Queue[tuple[asyncio.Future[list[int | None]], Event, str] | None],
    ) -> None:
        """Acknowledge frames in the order they came, each once it is durable."""
        while True:
            item = await in_flight.get()
            if item is None:
                return
            future, event, client_msg_id = item
            try:
                (seq,) = await future
            except Exception as exc:
                log.error("web %s: journal append failed: %r", self.host.bot_id, exc)
                client.push(_error(client_msg_id, "unavailable", "could not store the event; retry"))
                continue
            if seq is None:
                client.push(frame(op="duplicate", client_msg_id=client_msg_id))
                continue
            client.push(
                frame(
                    op="ack",
                    client_msg_id=client_msg_id,
                    message_id=getattr(event, "message_id", None),
                    event_id=event.event_id,
                )
            )

    def _subscribe_live(self, client: WebClient, chat: str) -> None:
        client.chats.add(chat)
        self.subscribers.setdefault(chat, set()).add(client)

    async def _subscribe(self, client: WebClient, chat: str, since: int) -> None:
        # Register first and hold live frames, so nothing stored meanwhile is missed.
        client.backfilling[chat] = []
        self._subscribe_live(client, chat)
        last = since
        try:
            while True:
                rows = await self.host.store.read_outbox(chat, last, limit=500)
                for seq, payload in rows:
                    client.push(frame(**payload))
                    last = seq
                if len(rows) < 500:
                    break
        finally:
            held = client.backfilling.pop(chat, [])
        client.sent[chat] = last
        for seq, data in held:
            client.deliver(chat, seq, data)
        client.push(frame(op="subscribed", chat_id=chat, seq=client.sent[chat]))

    # ------------------------------------------------------------------ frames -> events

    def _user(self, user_id: str, name: str) -> User:
        user = self.users.get(user_id)
        if user is None or (name and user.nickname != name):
            user = User(id=user_id, nickname=name or user_id)
            self.users[user_id] = user
        return user

    def _to_event(self, op: SendOp | EditOp | DeleteOp | ReactOp | JoinOp | LeaveOp) -> Event:
        bot_id = self.host.bot_id
        user = self._user(op.user_id, op.user_name)
        chat_type = ChatType(op.chat_type)
        group = (
            self._group(op.chat_id, getattr(op, "group_name", "")) if chat_type is ChatType.GROUP else None
        )
        if group is not None and not isinstance(op, LeaveOp):
            self._member(op.chat_id, user)
        common: dict[str, Any] = {
            "bot_id": bot_id,
            "adapter": "web",
            "dedup_key": f"{op.user_id}:{op.client_msg_id}",
        }
        chat: dict[str, Any] = {"chat_type": chat_type, "chat_id": op.chat_id, "group": group}
        if isinstance(op, SendOp):
            chain = (
                MessageChain.of(Quote(message_id=op.reply_to), op.text)
                if op.reply_to
                else MessageChain.of(op.text)
            )
            return MessageReceived(
                **common, **chat, message_id="u" + new_id(), message_chain=chain, sender=user
            )
        if isinstance(op, EditOp):
            return MessageEdited(
                **common, **chat, message_id=op.message_id, new_content=MessageChain.of(op.text), editor=user
            )
        if isinstance(op, DeleteOp):
            return MessageDeleted(**common, **chat, message_id=op.message_id, operator=user)
        if isinstance(op, ReactOp):
            return MessageReaction(
                **common,
                **chat,
                message_id=op.message_id,
                user=user,
                reaction=op.reaction,
                is_add=not op.remove,
            )
        assert group is not None
        if isinstance(op, JoinOp):
            return MemberJoined(**common, group=group, member=user, join_type="direct")
        self.members.get(op.chat_id, {}).pop(op.user_id, None)
        return MemberLeft(**common, group=group, member=user)

    def _group(self, chat_id: str, name: str) -> Group:
        group = self.groups.get(chat_id)
        if group is None or (name and group.name != name):
            group = Group(id=chat_id, name=name or chat_id)
            self.groups[chat_id] = group
        return group

    def _member(self, chat_id: str, user: User) -> None:
        members = self.members.setdefault(chat_id, {})
        if user.id not in members:
            members[user.id] = GroupMember(user=user, group_id=chat_id, joined_at=time.time())

    # ------------------------------------------------------------------ the platform API

    async def _store_and_push(
        self, chat_id: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Store, then push. A repeated idempotency key (a replayed send) stores
        nothing new: the stored original is what subscribers already have or
        will get when they subscribe with ``since``."""
        seq, stored, created = await self.host.store.append_outbox(chat_id, payload, idempotency_key)
        if created:
            data = frame(**stored)
            for client in list(self.subscribers.get(chat_id, ())):
                client.deliver(chat_id, seq, data)
        return stored

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
        self, chat_id: str, message: MessageChain, reply_to: str | None, idempotency_key: str | None
    ) -> MessageResult:
        stored = await self._store_and_push(
            chat_id,
            {
                "op": "message",
                "chat_id": chat_id,
                "message_id": "b" + new_id(),
                "text": message.text,
                "components": to_builtins(message.parts),
                "reply_to": reply_to,
            },
            idempotency_key,
        )
        return MessageResult(message_id=stored["message_id"], raw={"seq": stored["seq"]})

    async def edit_message(
        self, chat_type: str, chat_id: str, message_id: str, new_content: MessageChain
    ) -> None:
        await self._store_and_push(
            chat_id,
            {
                "op": "edited",
                "chat_id": chat_id,
                "message_id": message_id,
                "text": new_content.text,
                "components": to_builtins(new_content.parts),
            },
        )

    async def delete_message(self, chat_type: str, chat_id: str, message_id: str) -> None:
        await self._store_and_push(chat_id, {"op": "deleted", "chat_id": chat_id, "message_id": message_id})

    async def forward_message(
        self, from_chat_type: str, from_chat_id: str, message_id: str, to_chat_type: str, to_chat_id: str
    ) -> MessageResult:
        chain = MessageChain.of(
            Forward(from_chat_id=from_chat_id, from_message_id=message_id),
            f"(forwarded message {message_id} from {from_chat_id})",
        )
        return await self._send(to_chat_id, chain, None, None)

    async def add_reaction(self, chat_type: str, chat_id: str, message_id: str, reaction: str) -> None:
        await self._store_and_push(
            chat_id, {"op": "reaction", "chat_id": chat_id, "message_id": message_id, "reaction": reaction}
        )

    async def get_group_info(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            raise LookupError(f"web group {group_id!r} has not been seen")
        return msgspec.structs.replace(group, member_count=len(self.members.get(group_id, {})))

    async def get_group_list(self) -> list[Group]:
        return list(self.groups.values())

    async def get_group_member_list(self, group_id: str) -> list[GroupMember]:
        return list(self.members.get(group_id, {}).values())

    async def get_group_member_info(self, group_id: str, user_id: str) -> GroupMember:
        member = self.members.get(group_id, {}).get(user_id)
        if member is None:
            raise LookupError(f"user {user_id!r} is not a known member of web group {group_id!r}")
        return member

    async def get_user_info(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is None:
            raise LookupError(f"web user {user_id!r} has not been seen")
        return user

    async def platform_action(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, str) or not chat_id:
            raise ValueError("typing needs a chat_id")
        data = frame(op="typing", chat_id=chat_id)
        for client in list(self.subscribers.get(chat_id, ())):
            client.push(data)
        return {"ok": True}


def _error(client_msg_id: str | None, code: str, reason: str) -> bytes:
    return frame(op="error", client_msg_id=client_msg_id, code=code, reason=reason)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
