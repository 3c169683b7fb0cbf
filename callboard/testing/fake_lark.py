"""A local Lark / Feishu open platform for tests and benchmarks.

It speaks what lark-oapi and callboard's Lark adapter speak:

- the open API over HTTP (``/open-apis/...``): tenant and app access tokens
  (self-built and store apps, app tickets) that expire after ``token_ttl``;
  ``im/v1`` messages (create with ``uuid`` dedup, reply, update, patch,
  recall, get, reactions, resources), images and files, chats and members,
  ``contact/v3`` users, ``bot/v3/info``; Lark's answer shape
  ``{"code", "msg", "data"}`` and its error codes (99991663 for a bad token,
  99991400 with ``x-ogw-ratelimit-reset`` for the rate limit);
- the long connection: ``POST /callback/ws/endpoint`` hands out a websocket
  URL, which speaks lark-oapi's protobuf ``Frame`` (pbbp2): pings are answered
  with pongs carrying the client config, events go out as data frames and are
  acknowledged by the client's response frame (``{"code": 200}``); an event
  not acknowledged is sent again to the next connection;
- webhooks: with ``webhook_url`` set, events are posted there instead, signed
  (``X-Lark-Signature``) and encrypted (AES-256-CBC) when an encrypt key is
  set, and retried until answered 200, as Lark does.

Faults are injected per call name (``fail(name, Failure...)``: an HTTP status,
a Lark error code, the rate limit, a dropped connection), ``hold(name)``
keeps calls waiting until ``release()``, ``drop_connections()`` cuts the long
connection and ``silence()`` makes it go quiet (no pongs, no events). Every
call is recorded in ``calls``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from Crypto.Cipher import AES
from lark_oapi.ws.pb.pbbp2_pb2 import Frame

from callboard.testing.server import FakePlatform

APP_ID = "cli_callboard_test"
APP_SECRET = "callboard-test-app-secret-0123456789"
TENANT = "tenant_callboard"
VERIFICATION_TOKEN = "callboard-verification-token"
ENCRYPT_KEY = "callboard-encrypt-key"
BOT_OPEN_ID = "ou_bot_callboard"
BOT_NAME = "Callboard Test"

#: Lark's codes
OK = 0
TOKEN_INVALID = 99991663
TOKEN_MISSING = 99991661
RATE_LIMITED = 99991400
BAD_APP = 10003
NOT_FOUND = 230001
_MSG_TYPES = frozenset(
    {"text", "post", "image", "file", "audio", "media", "sticker", "interactive", "share_chat"}
)
NO_PERMISSION = 230027


# ---------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Failure:
    """One injected answer: ``status`` with Lark ``code`` (code 0: a bare HTTP
    error), or ``drop`` (the connection closes without an answer)."""

    kind: str = "code"  # code, drop, none
    status: int = 400
    code: int = 0
    msg: str = "error"
    reset: int | None = None

    @classmethod
    def error(cls, code: int, msg: str = "error", status: int = 400) -> Failure:
        return cls("code", status, code, msg)

    @classmethod
    def server_error(cls, status: int = 500) -> Failure:
        return cls("code", status, 0, "internal error")

    @classmethod
    def rate_limited(cls, reset: int = 1) -> Failure:
        return cls("code", 400, RATE_LIMITED, "request trigger frequency limit", reset)

    @classmethod
    def token_invalid(cls) -> Failure:
        return cls("code", 400, TOKEN_INVALID, "Invalid access token for authorization")

    @classmethod
    def drop(cls) -> Failure:
        return cls("drop")

    @classmethod
    def none(cls) -> Failure:
        return cls("none")


class _Answer(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status


@dataclass
class Call:
    name: str
    method: str
    path: str
    params: dict[str, str]
    body: Any
    at: float
    status: int = 0
    code: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self.body[key]


@dataclass
class Delivery:
    """One event on its way to the app, until acknowledged."""

    event_id: str
    payload: dict[str, Any]
    frame_id: str
    served: int = 0
    acked: bool = False
    answers: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------- crypto (the platform's side)


def encrypt(encrypt_key: str, plain: bytes) -> str:
    key = hashlib.sha256(encrypt_key.encode()).digest()
    iv = os.urandom(16)
    pad = 16 - len(plain) % 16
    return base64.b64encode(iv + AES.new(key, AES.MODE_CBC, iv).encrypt(plain + bytes([pad]) * pad)).decode()


def sign(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


# ---------------------------------------------------------------------- the server


class FakeLark(FakePlatform[Failure, Call]):
    """``await start()``; use ``base_url`` as the adapter's ``domain``; ``await close()``."""

    def __init__(
        self,
        *,
        app_id: str = APP_ID,
        app_secret: str = APP_SECRET,
        verification_token: str = VERIFICATION_TOKEN,
        encrypt_key: str | None = None,
        app_type: str = "self",
        token_ttl: int = 7200,
        ping_interval: int = 120,
        honour_uuid: bool = True,
    ) -> None:
        super().__init__()
        self.app_id = app_id
        self.app_secret = app_secret
        self.verification_token = verification_token
        self.encrypt_key = encrypt_key
        self.app_type = app_type
        self.token_ttl = token_ttl
        self.ping_interval = ping_interval
        #: Lark drops a send whose ``uuid`` it saw within the hour; off, every send shows
        #: (a crash test counts the engine's own duplicates then)
        self.honour_uuid = honour_uuid
        self.tenant_key = TENANT
        self.app_ticket = "ticket-" + secrets.token_hex(4)
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (kind, expires at)
        self.token_grants: Counter[str] = Counter()
        self.answered_count: Counter[str] = Counter()  # successful calls by name
        self.waiting: Counter[str] = Counter()
        self.users: dict[str, dict[str, Any]] = {}
        self.chats: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self.uuids: dict[str, str] = {}
        self.reactions: list[dict[str, Any]] = []
        self.resources: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.images: dict[str, bytes] = {}
        self.files: dict[str, tuple[str, str, bytes]] = {}
        self.deliveries: dict[str, Delivery] = {}
        self.queue: list[str] = []  # frame ids not yet acknowledged, in order
        self.connections: list[web.WebSocketResponse] = []
        self.connects = 0
        self.overlaps = 0
        self.pings = 0
        self.silent = False
        #: answers to events are ignored, as if lost with a crashing client (test control)
        self.lose_answers = False
        #: each event goes out in this many data frames (Lark splits large events)
        self.split_frames = 1
        self.webhook_url: str | None = None
        self.webhook_statuses: list[int] = []
        self.webhook_retry = 0.2  # seconds before an event answered as failed is delivered again
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client: aiohttp.ClientSession | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self.add_user(BOT_OPEN_ID, BOT_NAME)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeLark:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        routes = [
            (
                "POST",
                "/open-apis/auth/v3/tenant_access_token/internal",
                "tenant_access_token",
                self._tenant_internal,
            ),
            ("POST", "/open-apis/auth/v3/app_access_token/internal", "app_access_token", self._app_internal),
            ("POST", "/open-apis/auth/v3/app_access_token", "app_access_token", self._app_isv),
            ("POST", "/open-apis/auth/v3/tenant_access_token", "tenant_access_token", self._tenant_isv),
            ("POST", "/open-apis/auth/v3/app_ticket/resend", "app_ticket_resend", self._resend_ticket),
            ("GET", "/open-apis/bot/v3/info", "bot_info", self._bot_info),
            ("POST", "/open-apis/im/v1/messages", "send_message", self._create),
            ("POST", "/open-apis/im/v1/messages/{id}/reply", "reply_message", self._reply),
            ("POST", "/open-apis/im/v1/messages/{id}/forward", "forward_message", self._forward),
            ("PUT", "/open-apis/im/v1/messages/{id}", "edit_message", self._update),
            ("PATCH", "/open-apis/im/v1/messages/{id}", "update_card", self._patch),
            ("DELETE", "/open-apis/im/v1/messages/{id}", "delete_message", self._recall),
            ("GET", "/open-apis/im/v1/messages/{id}", "get_message", self._get_message),
            ("POST", "/open-apis/im/v1/messages/{id}/reactions", "add_reaction", self._react),
            ("GET", "/open-apis/im/v1/messages/{id}/resources/{key}", "get_message_resource", self._resource),
            ("POST", "/open-apis/im/v1/images", "upload_image", self._upload_image),
            ("GET", "/open-apis/im/v1/images/{key}", "get_image", self._get_image),
            ("POST", "/open-apis/im/v1/files", "upload_file", self._upload_file),
            ("GET", "/open-apis/im/v1/chats", "get_group_list", self._chat_list),
            ("GET", "/open-apis/im/v1/chats/{id}", "get_chat", self._chat_get),
            ("PUT", "/open-apis/im/v1/chats/{id}", "set_group_name", self._chat_update),
            ("GET", "/open-apis/im/v1/chats/{id}/members", "get_group_member_list", self._members),
            ("DELETE", "/open-apis/im/v1/chats/{id}/members", "remove_members", self._remove_members),
            ("GET", "/open-apis/contact/v3/users/{id}", "get_user_info", self._user),
            ("POST", "/callback/ws/endpoint", "ws_endpoint", self._endpoint),
        ]
        for method, path, name, handler in routes:
            app.router.add_route(method, path, self._wrap(name, handler))
        app.router.add_get("/ws", self._ws)
        await self.serve(app)
        return self

    async def close(self) -> None:
        self.release()
        for task in [*self._tasks, *([self._deliverer] if self._deliverer else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._deliverer is not None:
            await asyncio.gather(self._deliverer, return_exceptions=True)
        for ws in list(self.connections):
            await ws.close()
        if self._client is not None:
            await self._client.close()
        await self.stop_serving()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def adapter_yaml(self, mode: str = "ws") -> str:
        """The ``adapter:`` block (YAML) of a bot talking to this fake in ``mode`` with its
        credentials, and its encrypt key when it has one; a test appends any other fields."""
        text = (
            f'type: lark\napp_id: {self.app_id}\napp_secret: "{self.app_secret}"\ndomain: {self.base_url}\n'
            f'mode: {mode}\nverification_token: "{self.verification_token}"\n'
        )
        return text + (f'encrypt_key: "{self.encrypt_key}"\n' if self.encrypt_key else "")

    # ------------------------------------------------------------------ test controls

    def expire_tokens(self) -> None:
        """Every token handed out so far stops working (as after its two hours)."""
        self.tokens.clear()

    def silence(self, on: bool = True) -> None:
        """The long connection stays open but sends nothing: no pongs, no events.
        Turned off, what was never acknowledged is sent again."""
        self.silent = on
        if not on:
            for ws in self.connections:
                for frame_id in list(self.queue):
                    self._spawn(self._send_event(ws, self.deliveries[frame_id]))

    async def drop_connections(self) -> None:
        for ws in list(self.connections):
            await ws.close(code=1011, message=b"dropped by the test")

    def add_user(self, open_id: str, name: str, **extra: Any) -> dict[str, Any]:
        user = {
            "open_id": open_id,
            "union_id": "on_" + open_id.removeprefix("ou_"),
            "user_id": open_id.removeprefix("ou_"),
            "name": name,
            "en_name": name,
            "avatar": {"avatar_240": f"https://example.invalid/{open_id}.png"},
            **extra,
        }
        self.users[open_id] = user
        return user

    def add_chat(
        self,
        chat_id: str,
        *,
        name: str = "",
        mode: str = "group",
        members: list[str] = (),  # type: ignore[assignment]
        owner: str | None = None,
        description: str = "",
    ) -> dict[str, Any]:
        chat = {
            "chat_id": chat_id,
            "name": name,
            "description": description,
            "chat_mode": mode,
            "owner_id": owner or (members[0] if members else ""),
            "members": list(members),
            "bot_in": True,
            "tenant_key": self.tenant_key,
        }
        self.chats[chat_id] = chat
        return chat

    def p2p(self, open_id: str) -> str:
        """The private chat between a user and the bot (created on first use)."""
        chat_id = "oc_p2p_" + open_id.removeprefix("ou_")
        if chat_id not in self.chats:
            self.add_chat(chat_id, mode="p2p", members=[open_id])
        return chat_id

    def add_resource(self, message_id: str, key: str, content: bytes, kind: str = "image/png") -> None:
        self.resources[(message_id, key)] = (content, kind)

    def calls_of(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def answered(self, name: str) -> list[Call]:
        return [c for c in self.calls_of(name) if c.status == 200 and c.code == 0]

    async def wait_acked(self, timeout: float = 15.0) -> None:
        """Until every event pushed so far was acknowledged (or answered 200 by the webhook)."""
        await self.until(
            lambda: not self.queue, timeout, lambda: f"{len(self.queue)} events not acknowledged"
        )

    def texts_sent(self) -> list[str]:
        """The text of every text message the app sent or replied, in order."""
        return [
            orjson.loads(m["body"]["content"]).get("text", "") for m in self.sent if m["msg_type"] == "text"
        ]

    # ------------------------------------------------------------------ events

    def envelope(
        self, event_type: str, event: dict[str, Any], *, event_id: str | None = None
    ) -> dict[str, Any]:
        """A schema 2.0 delivery of ``event``."""
        return {
            "schema": "2.0",
            "header": {
                "event_id": event_id or secrets.token_hex(16),
                "token": self.verification_token,
                "create_time": str(int(time.time() * 1000)),
                "event_type": event_type,
                "tenant_key": self.tenant_key,
                "app_id": self.app_id,
            },
            "event": event,
        }

    def message_event(
        self,
        chat_id: str,
        sender: str,
        content: dict[str, Any] | str,
        *,
        msg_type: str = "text",
        mentions: list[dict[str, Any]] | None = None,
        parent_id: str | None = None,
        root_id: str | None = None,
        thread_id: str | None = None,
        message_id: str | None = None,
    ) -> dict[str, Any]:
        """A user's message (stored, so the app may get, reply to or react to it),
        as the ``im.message.receive_v1`` delivery. ``content`` as a str is a text."""
        chat = self.chats.get(chat_id) or self.add_chat(chat_id)
        if isinstance(content, str):
            content = {"text": content}
        message_id = message_id or f"om_{next(self._ids):08d}"
        now = str(int(time.time() * 1000))
        wire_mentions = [
            {
                "key": m["key"],
                "id": _ids(m["open_id"]),
                "name": m.get("name", ""),
                "tenant_key": self.tenant_key,
            }
            for m in mentions or []
        ]
        message: dict[str, Any] = {
            "message_id": message_id,
            "create_time": now,
            "update_time": now,
            "chat_id": chat_id,
            "chat_type": "p2p" if chat["chat_mode"] == "p2p" else "group",
            "message_type": msg_type,
            "content": orjson.dumps(content).decode(),
            "mentions": wire_mentions,
        }
        for key, value in (("parent_id", parent_id), ("root_id", root_id), ("thread_id", thread_id)):
            if value:
                message[key] = value
        self._store_message(message_id, chat_id, msg_type, message["content"], sender, "user", wire_mentions)
        for key in ("parent_id", "root_id", "thread_id"):
            if message.get(key):
                self.messages[message_id][key] = message[key]
        sender_ids = _ids(sender)
        return self.envelope(
            "im.message.receive_v1",
            {
                "sender": {"sender_id": sender_ids, "sender_type": "user", "tenant_key": self.tenant_key},
                "message": message,
            },
        )

    def _store_message(
        self,
        message_id: str,
        chat_id: str,
        msg_type: str,
        content: str,
        sender: str,
        sender_type: str,
        mentions: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        now = str(int(time.time() * 1000))
        item = {
            "message_id": message_id,
            "msg_type": msg_type,
            "create_time": now,
            "update_time": now,
            "deleted": False,
            "updated": False,
            "chat_id": chat_id,
            "sender": {
                "id": sender,
                "id_type": "app_id" if sender_type == "app" else "open_id",
                "sender_type": sender_type,
                "tenant_key": self.tenant_key,
            },
            "body": {"content": content},
            "mentions": [
                {"key": m["key"], "id": m["id"]["open_id"], "id_type": "open_id", "name": m["name"]}
                for m in mentions or []
            ],
        }
        self.messages[message_id] = item
        return item

    def push(self, payload: dict[str, Any]) -> str:
        """Deliver an event (long connection, or webhook when ``webhook_url`` is set);
        returns its event id. It is sent again until acknowledged."""
        header = payload.get("header") or {}
        event_id = str(header.get("event_id") or payload.get("uuid") or secrets.token_hex(8))
        frame_id = secrets.token_hex(8)
        delivery = Delivery(event_id, payload, frame_id)
        self.deliveries[frame_id] = delivery
        self.queue.append(frame_id)
        if self.webhook_url is not None:
            self._wake()
        else:
            for ws in self.connections:
                self._spawn(self._send_event(ws, delivery))
        return event_id

    def served(self, event_id: str) -> int:
        return sum(d.served for d in self.deliveries.values() if d.event_id == event_id)

    def acked(self, event_id: str) -> int:
        return sum(1 for d in self.deliveries.values() if d.event_id == event_id and d.acked)

    # ------------------------------------------------------------------ HTTP plumbing

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wrap(self, name: str, handler: Any) -> Any:
        async def serve(request: web.Request) -> web.StreamResponse:
            try:
                return await answer(request)
            finally:
                self.call_done()

        async def answer(request: web.Request) -> web.StreamResponse:
            body: Any = None
            if request.content_type.startswith("multipart/"):
                body = await self._multipart(request)
            elif request.can_read_body:  # JSON, whatever the content type says (as Lark)
                try:
                    body = orjson.loads(await request.read())
                except orjson.JSONDecodeError:
                    return self._answer(400, 9499, "invalid json")
            call = Call(name, request.method, request.path, dict(request.query), body, time.time())
            self.calls.append(call)
            if name in self.held:
                self.waiting[name] += 1
                try:
                    await self._released.wait()
                finally:
                    self.waiting[name] -= 1
                if request.transport is None or request.transport.is_closing():
                    return web.Response(status=499)  # the client went away: never carried out
            failure = self.next_failure(name)
            if failure is not None and failure.kind == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=499)
            if failure is not None and failure.kind == "code":
                call.status, call.code = failure.status, failure.code
                headers = {"x-ogw-ratelimit-reset": str(failure.reset)} if failure.reset else {}
                if failure.code == 0:
                    return web.Response(status=failure.status, text=failure.msg, headers=headers)
                return self._answer(failure.status, failure.code, failure.msg, headers)
            try:
                if not name.endswith("access_token") and name not in ("app_ticket_resend", "ws_endpoint"):
                    self._authorise(request)
                result = await handler(request, body)
            except _Answer as answer:
                call.status, call.code = answer.status, answer.code
                return self._answer(answer.status, answer.code, answer.msg)
            call.status, call.code = 200, 0
            self.answered_count[name] += 1
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response({"code": 0, "msg": "success", **result}, dumps=_dumps)

        return serve

    @staticmethod
    def _answer(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status, headers=headers, dumps=_dumps)

    @staticmethod
    async def _multipart(request: web.Request) -> dict[str, Any]:
        form: dict[str, Any] = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, aiohttp.BodyPartReader)
            data = await part.read()
            form[part.name or ""] = (part.filename, bytes(data)) if part.filename else data.decode()
        return form

    def _authorise(self, request: web.Request) -> None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise _Answer(TOKEN_MISSING, "Missing access token for authorization", 400)
        known = self.tokens.get(auth[7:])
        if known is None or known[1] < time.time():
            raise _Answer(TOKEN_INVALID, "Invalid access token for authorization", 400)

    def _grant(self, kind: str) -> tuple[str, int]:
        token = f"{kind[0]}-{secrets.token_hex(12)}"
        self.tokens[token] = (kind, time.time() + self.token_ttl)
        self.token_grants[kind] += 1
        return token, self.token_ttl

    def _check_app(self, body: dict[str, Any]) -> None:
        if body.get("app_id") != self.app_id or body.get("app_secret") != self.app_secret:
            raise _Answer(BAD_APP, "invalid app_id or app_secret", 400)

    # ------------------------------------------------------------------ auth

    async def _tenant_internal(self, request: web.Request, body: Any) -> dict[str, Any]:
        self._check_app(body or {})
        token, expire = self._grant("tenant")
        return {"tenant_access_token": token, "expire": expire}

    async def _app_internal(self, request: web.Request, body: Any) -> dict[str, Any]:
        self._check_app(body or {})
        token, expire = self._grant("app")
        return {"app_access_token": token, "expire": expire}

    async def _app_isv(self, request: web.Request, body: Any) -> dict[str, Any]:
        self._check_app(body or {})
        if body.get("app_ticket") != self.app_ticket:
            raise _Answer(10012, "app_ticket is invalid", 400)
        token, expire = self._grant("app")
        return {"app_access_token": token, "expire": expire}

    async def _tenant_isv(self, request: web.Request, body: Any) -> dict[str, Any]:
        app = self.tokens.get(str((body or {}).get("app_access_token")))
        if app is None or app[0] != "app" or app[1] < time.time():
            raise _Answer(TOKEN_INVALID, "app access token invalid", 400)
        if body.get("tenant_key") != self.tenant_key:
            raise _Answer(10013, "tenant_key is invalid", 400)
        token, expire = self._grant("tenant")
        return {"tenant_access_token": token, "expire": expire}

    async def _resend_ticket(self, request: web.Request, body: Any) -> dict[str, Any]:
        self._check_app(body or {})
        self.push_app_ticket()
        return {}

    def push_app_ticket(self) -> None:
        """Lark's hourly app ticket push (schema 1.0) to a store app."""
        self.push(
            {
                "uuid": secrets.token_hex(16),
                "token": self.verification_token,
                "ts": str(time.time()),
                "type": "event_callback",
                "event": {"app_id": self.app_id, "app_ticket": self.app_ticket, "type": "app_ticket"},
            }
        )

    async def _bot_info(self, request: web.Request, body: Any) -> dict[str, Any]:
        return {"bot": {"activate_status": 2, "app_name": BOT_NAME, "open_id": BOT_OPEN_ID}}

    # ------------------------------------------------------------------ messages

    def _message(self, message_id: str) -> dict[str, Any]:
        item = self.messages.get(message_id)
        if item is None or item["deleted"]:
            raise _Answer(NOT_FOUND, "message not found", 400)
        return item

    def _new_message(self, chat_id: str, body: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        msg_type = str(body.get("msg_type", ""))
        content = body.get("content")
        if msg_type not in _MSG_TYPES:
            raise _Answer(230001, f"invalid msg_type {msg_type!r}", 400)
        if not isinstance(content, str):
            raise _Answer(9499, "content must be a JSON string", 400)
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise _Answer(230001, "content is not JSON", 400) from None
        if msg_type == "text" and not parsed.get("text"):
            raise _Answer(230001, "text is empty", 400)
        if msg_type == "image" and parsed.get("image_key") not in self.images:
            raise _Answer(230001, "image_key not found", 400)
        if msg_type in ("file", "audio") and parsed.get("file_key") not in self.files:
            raise _Answer(230001, "file_key not found", 400)
        uuid = body.get("uuid")
        if uuid and self.honour_uuid and uuid in self.uuids:
            return self.messages[self.uuids[uuid]]  # Lark's send dedup: same uuid, same message
        message_id = f"om_bot_{next(self._ids):08d}"
        item = self._store_message(message_id, chat_id, msg_type, content, self.app_id, "app")
        item.update(extra)
        if uuid:
            self.uuids[uuid] = message_id
        self.sent.append(item)
        return item

    def _target(self, request: web.Request, body: Any) -> str:
        """The chat a create or forward goes to, by ``receive_id_type``."""
        kind = request.query.get("receive_id_type")
        receive_id = str((body or {}).get("receive_id", ""))
        if kind in ("open_id", "union_id", "user_id"):
            open_id = receive_id if kind == "open_id" else "ou_" + receive_id.removeprefix("on_")
            if open_id not in self.users:
                raise _Answer(230013, "the user is not visible to the bot", 400)
            chat_id = self.p2p(open_id)
        elif kind == "chat_id":
            chat_id = receive_id
            chat = self.chats.get(chat_id)
            if chat is None or not chat["bot_in"]:
                raise _Answer(230002, "the bot is not in the chat", 400)
        else:
            raise _Answer(99992402, "receive_id_type is required", 400)
        return chat_id

    async def _create(self, request: web.Request, body: Any) -> dict[str, Any]:
        return {"data": self._new_message(self._target(request, body), body, {})}

    async def _forward(self, request: web.Request, body: Any) -> dict[str, Any]:
        original = self._message(request.match_info["id"])
        copy = {"msg_type": original["msg_type"], "content": original["body"]["content"]}
        return {
            "data": self._new_message(
                self._target(request, body), copy, {"forwarded_from": original["message_id"]}
            )
        }

    async def _reply(self, request: web.Request, body: Any) -> dict[str, Any]:
        parent = self._message(request.match_info["id"])
        root = parent.get("root_id") or parent["message_id"]
        extra: dict[str, Any] = {"parent_id": parent["message_id"], "root_id": root}
        if (body or {}).get("reply_in_thread"):
            extra["thread_id"] = parent.get("thread_id") or "omt_" + parent["message_id"][3:]
        return {"data": self._new_message(parent["chat_id"], body or {}, extra)}

    async def _update(self, request: web.Request, body: Any) -> dict[str, Any]:
        item = self._message(request.match_info["id"])
        if item["sender"]["sender_type"] != "app":
            raise _Answer(230027, "only the sender may edit a message", 400)
        if item["msg_type"] not in ("text", "post") or body.get("msg_type") not in ("text", "post"):
            raise _Answer(230001, "only text and post messages can be edited", 400)
        item["msg_type"] = body["msg_type"]
        item["body"] = {"content": body["content"]}
        item["updated"] = True
        return {"data": item}

    async def _patch(self, request: web.Request, body: Any) -> dict[str, Any]:
        item = self._message(request.match_info["id"])
        if item["msg_type"] != "interactive":
            raise _Answer(230001, "only cards can be patched", 400)
        card = orjson.loads(body["content"])
        if not (card.get("config") or {}).get("update_multi"):
            raise _Answer(230099, "the card is not shared (update_multi)", 400)
        item["body"] = {"content": body["content"]}
        item.setdefault("patches", []).append(body["content"])
        return {}

    async def _recall(self, request: web.Request, body: Any) -> dict[str, Any]:
        item = self._message(request.match_info["id"])
        if item["sender"]["sender_type"] != "app":
            raise _Answer(NO_PERMISSION, "the bot may recall only its own messages", 400)
        item["deleted"] = True
        return {}

    async def _get_message(self, request: web.Request, body: Any) -> dict[str, Any]:
        item = self._message(request.match_info["id"])
        items = [item]
        if item["msg_type"] == "merge_forward":
            items += [m for m in self.messages.values() if m.get("upper_message_id") == item["message_id"]]
        return {"data": {"items": items}}

    async def _react(self, request: web.Request, body: Any) -> dict[str, Any]:
        item = self._message(request.match_info["id"])
        emoji = ((body or {}).get("reaction_type") or {}).get("emoji_type")
        if not emoji:
            raise _Answer(231001, "reaction type is invalid", 400)
        reaction = {"reaction_id": secrets.token_hex(6), "message_id": item["message_id"]}
        reaction["emoji_type"] = emoji
        self.reactions.append(reaction)
        return {"data": {"reaction_id": reaction["reaction_id"], "reaction_type": {"emoji_type": emoji}}}

    async def _resource(self, request: web.Request, body: Any) -> web.StreamResponse:
        key = (request.match_info["id"], request.match_info["key"])
        if request.query.get("type") not in ("image", "file"):
            raise _Answer(234001, "type must be image or file", 400)
        if key not in self.resources:
            raise _Answer(234003, "resource not found", 400)
        content, kind = self.resources[key]
        return web.Response(body=content, content_type=kind)

    async def _upload_image(self, request: web.Request, body: Any) -> dict[str, Any]:
        image = (body or {}).get("image")
        if body.get("image_type") != "message" or not isinstance(image, tuple):
            raise _Answer(234001, "image_type and image are required", 400)
        key = f"img_v3_{next(self._ids):06d}"
        self.images[key] = image[1]
        return {"data": {"image_key": key}}

    async def _get_image(self, request: web.Request, body: Any) -> web.StreamResponse:
        key = request.match_info["key"]
        if key not in self.images:
            raise _Answer(234003, "image not found", 400)
        return web.Response(body=self.images[key], content_type="image/png")

    async def _upload_file(self, request: web.Request, body: Any) -> dict[str, Any]:
        upload = (body or {}).get("file")
        kind = body.get("file_type")
        if kind not in ("opus", "mp4", "pdf", "doc", "xls", "ppt", "stream") or not isinstance(upload, tuple):
            raise _Answer(234001, "file_type, file_name and file are required", 400)
        if kind == "opus" and not str(body.get("duration", "")).isdigit():
            raise _Answer(234001, "opus files need a duration (ms)", 400)
        key = f"file_v3_{next(self._ids):06d}"
        self.files[key] = (str(body.get("file_name")), kind, upload[1])
        return {"data": {"file_key": key}}

    # ------------------------------------------------------------------ chats, users

    def _chat(self, chat_id: str) -> dict[str, Any]:
        chat = self.chats.get(chat_id)
        if chat is None or not chat["bot_in"]:
            raise _Answer(232011, "the bot is not in the chat", 400)
        return chat

    @staticmethod
    def _page(items: list[Any], request: web.Request) -> dict[str, Any]:
        size = int(request.query.get("page_size", "20"))
        start = int(request.query.get("page_token") or 0)
        page = items[start : start + size]
        more = start + size < len(items)
        return {"items": page, "has_more": more, "page_token": str(start + size) if more else ""}

    async def _chat_list(self, request: web.Request, body: Any) -> dict[str, Any]:
        chats = [
            {k: c[k] for k in ("chat_id", "name", "description", "owner_id", "tenant_key")} | {"avatar": ""}
            for c in self.chats.values()
            if c["bot_in"] and c["chat_mode"] != "p2p"
        ]
        return {"data": self._page(chats, request)}

    async def _chat_get(self, request: web.Request, body: Any) -> dict[str, Any]:
        chat = self._chat(request.match_info["id"])
        data = {k: chat[k] for k in ("name", "description", "owner_id", "chat_mode", "tenant_key")}
        data |= {"owner_id_type": "open_id", "user_count": str(len(chat["members"])), "bot_count": "1"}
        return {"data": data}

    async def _chat_update(self, request: web.Request, body: Any) -> dict[str, Any]:
        chat = self._chat(request.match_info["id"])
        for key in ("name", "description"):
            if key in (body or {}):
                chat[key] = body[key]
        return {}

    async def _members(self, request: web.Request, body: Any) -> dict[str, Any]:
        chat = self._chat(request.match_info["id"])
        items = [
            {"member_id_type": "open_id", "member_id": m, "name": self.users.get(m, {}).get("name", "")}
            for m in chat["members"]
        ]
        return {"data": self._page(items, request) | {"member_total": len(items)}}

    async def _remove_members(self, request: web.Request, body: Any) -> dict[str, Any]:
        chat = self._chat(request.match_info["id"])
        ids = list((body or {}).get("id_list") or [])
        if request.query.get("member_id_type") == "app_id":
            if ids != [self.app_id]:
                raise _Answer(232017, "an app may remove only itself", 400)
            chat["bot_in"] = False
            return {"data": {"invalid_id_list": []}}
        invalid = [i for i in ids if i not in chat["members"]]
        chat["members"] = [m for m in chat["members"] if m not in ids]
        return {"data": {"invalid_id_list": invalid}}

    async def _user(self, request: web.Request, body: Any) -> dict[str, Any]:
        user = self.users.get(request.match_info["id"])
        if user is None:
            raise _Answer(41050, "no user authority or user not found", 400)
        return {"data": {"user": user}}

    # ------------------------------------------------------------------ the long connection

    async def _endpoint(self, request: web.Request, body: Any) -> dict[str, Any]:
        if (body or {}).get("AppID") != self.app_id or body.get("AppSecret") != self.app_secret:
            raise _Answer(BAD_APP, "invalid app_id or app_secret", 400)
        return {
            "data": {
                "URL": f"ws://127.0.0.1:{self.port}/ws?device_id={secrets.token_hex(4)}&service_id=7",
                "ClientConfig": self._client_config(),
            }
        }

    def _client_config(self) -> dict[str, int]:
        return {
            "ReconnectCount": -1,
            "ReconnectInterval": 1,
            "ReconnectNonce": 0,
            "PingInterval": self.ping_interval,
        }

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connects += 1
        if self.connections:
            self.overlaps += 1
        self.connections.append(ws)
        try:
            for frame_id in list(self.queue):  # what was never acknowledged goes out again
                await self._send_event(ws, self.deliveries[frame_id])
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    await self._on_frame(ws, message.data)
        finally:
            self.connections.remove(ws)
        return ws

    async def _send_event(self, ws: web.WebSocketResponse, delivery: Delivery) -> None:
        """One event as data frames: one, or ``split_frames`` parts of one payload (as
        Lark splits large events; the client reassembles them by message_id)."""
        if self.silent or ws.closed:
            return
        body = orjson.dumps(delivery.payload)
        parts = max(1, min(self.split_frames, len(body)))
        size = -(-len(body) // parts)
        delivery.served += 1
        for seq in range(parts):
            frame = Frame()
            frame.SeqID = next(self._ids)
            frame.LogID = frame.SeqID
            frame.service = 7
            frame.method = 1  # data
            for key, value in (
                ("type", "event"),
                ("message_id", delivery.frame_id),
                ("trace_id", secrets.token_hex(4)),
                ("sum", str(parts)),
                ("seq", str(seq)),
            ):
                header = frame.headers.add()
                header.key, header.value = key, value
            frame.payload = body[seq * size : (seq + 1) * size]
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(frame.SerializeToString())

    async def _redeliver(self, ws: web.WebSocketResponse, delivery: Delivery) -> None:
        await asyncio.sleep(self.webhook_retry)
        if not delivery.acked and ws in self.connections:
            await self._send_event(ws, delivery)

    async def _on_frame(self, ws: web.WebSocketResponse, data: bytes) -> None:
        frame = Frame()
        frame.ParseFromString(data)
        headers = {h.key: h.value for h in frame.headers}
        if frame.method == 0 and headers.get("type") == "ping":
            self.pings += 1
            if self.silent:
                return
            pong = Frame()
            pong.CopyFrom(frame)
            pong.ClearField("headers")
            header = pong.headers.add()
            header.key, header.value = "type", "pong"
            pong.payload = orjson.dumps(self._client_config())
            await ws.send_bytes(pong.SerializeToString())
            return
        if frame.method == 1:  # the app's answer to an event
            delivery = self.deliveries.get(headers.get("message_id", ""))
            if delivery is None or self.lose_answers:
                return
            code = int(orjson.loads(frame.payload or b"{}").get("code", 0))
            delivery.answers.append(code)
            if code == 200 and not delivery.acked:
                delivery.acked = True
                with contextlib.suppress(ValueError):
                    self.queue.remove(delivery.frame_id)
            elif code != 200 and not delivery.acked:  # as Lark: a failed event comes again later
                self._spawn(self._redeliver(ws, delivery))

    # ------------------------------------------------------------------ webhooks

    def _wake(self) -> None:
        self._changed.set()
        if self._deliverer is None or self._deliverer.done():
            self._deliverer = asyncio.ensure_future(self._deliver_webhooks())

    def webhook_body(
        self, payload: dict[str, Any], *, encrypt_key: str | None = None, sign_key: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers Lark would post for ``payload``: encrypted and signed
        with ``encrypt_key`` (the server's own by default), plain without one."""
        key = encrypt_key if encrypt_key is not None else self.encrypt_key
        plain = orjson.dumps(payload)
        body = orjson.dumps({"encrypt": encrypt(key, plain)}) if key else plain
        headers = {"Content-Type": "application/json"}
        signing = sign_key if sign_key is not None else key
        if signing:
            timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
            headers |= {
                "X-Lark-Request-Timestamp": timestamp,
                "X-Lark-Request-Nonce": nonce,
                "X-Lark-Signature": sign(timestamp, nonce, signing, body),
            }
        return body, headers

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        """One raw POST to the app (a test's own delivery)."""
        if self._client is None:
            self._client = aiohttp.ClientSession()
        async with self._client.post(url, data=body, headers=headers) as response:
            text = await response.read()
            try:
                return response.status, orjson.loads(text)
            except orjson.JSONDecodeError:
                return response.status, text.decode(errors="replace")

    async def url_verification(self, url: str, *, token: str | None = None) -> tuple[int, Any]:
        challenge = secrets.token_hex(8)
        payload = {"challenge": challenge, "token": token or self.verification_token}
        payload["type"] = "url_verification"
        body, headers = self.webhook_body(payload)
        return await self.post(url, body, headers)

    async def _deliver_webhooks(self) -> None:
        """Post queued events in order, each until it is answered 200."""
        while self.queue and self.webhook_url is not None:
            delivery = self.deliveries[self.queue[0]]
            body, headers = self.webhook_body(delivery.payload)
            delivery.served += 1
            try:
                status, _ = await self.post(self.webhook_url, body, headers)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            self.webhook_statuses.append(status)
            delivery.answers.append(status)
            if status == 200:
                delivery.acked = True
                self.queue.pop(0)
            else:
                await asyncio.sleep(self.webhook_retry)

    async def deliver_concurrently(self, payloads: list[dict[str, Any]], concurrency: int) -> list[int]:
        """Post ``payloads`` to the webhook with ``concurrency`` in flight (a busy
        platform), each until answered 200; returns the last statuses. For benchmarks."""
        assert self.webhook_url is not None
        url = self.webhook_url
        statuses: list[int] = [0] * len(payloads)
        cursor = iter(range(len(payloads)))

        async def worker() -> None:
            for index in cursor:
                body, headers = self.webhook_body(payloads[index])
                for _ in range(100):  # as Lark: again until answered 200
                    statuses[index], _ = await self.post(url, body, headers)
                    if statuses[index] == 200:
                        break
                    await asyncio.sleep(self.webhook_retry)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return statuses


def _ids(open_id: str) -> dict[str, str]:
    return {"open_id": open_id, "union_id": "on_" + open_id[3:], "user_id": open_id[3:]}


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
