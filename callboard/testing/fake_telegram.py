"""A local Telegram Bot API server for tests and benchmarks.

It speaks the wire protocol python-telegram-bot uses (``POST /bot<token>/<method>``
with form or multipart parameters, JSON answers ``{"ok": ..., "result": ...}``,
files under ``/file/bot<token>/<path>``) and keeps the state the methods need:
chats, members, messages, files. Updates queue until confirmed exactly like
Telegram's: ``getUpdates`` returns those with ``update_id >= offset`` and
forgets the ones below it, waits up to ``timeout`` for new ones, and answers an
older pending poll with 409 when a newer one arrives. With a webhook set,
updates are posted to it in order (with the secret header) and retried until
answered 2xx; getUpdates then answers 409.

Faults are injected per method: ``fail(method, Failure...)`` makes the next
calls answer an HTTP error, garbage, a dropped connection or a truncated body;
``hold(method)`` keeps calls waiting until ``release()``. A call whose client
has gone away while it waited is not carried out, as a real server that never
processed it.

Every call is recorded in ``calls`` (method, decoded parameters, uploaded files,
answer status, time).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from callboard.testing.server import FakePlatform

TOKEN = "123456:TEST-callboard-token_0123456789"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

#: parameters Telegram takes as text even when they look like JSON
_TEXT_PARAMS = frozenset(
    {
        "text",
        "caption",
        "title",
        "description",
        "name",
        "url",
        "secret_token",
        "callback_query_id",
        "file_id",
        "photo",
        "document",
        "voice",
        "audio",
        "sticker",
        "video",
        "animation",
        "video_note",
        "action",
        "filename",
        "parse_mode",
    }
)
_MEDIA = ("photo", "document", "voice", "audio", "sticker", "video", "animation", "video_note")
_CAPTIONED = {"photo", "document", "voice", "audio", "video", "animation"}
_CHAT_ACTIONS = {
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
}


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# ---------------------------------------------------------------------- Bot API objects


def user(
    user_id: int, first_name: str = "Ann", *, username: str | None = None, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name, **extra}
    if username:
        data["username"] = username
    return data


def private_chat(person: dict[str, Any]) -> dict[str, Any]:
    data = {"id": person["id"], "type": "private"}
    data.update({k: person[k] for k in ("first_name", "last_name", "username") if k in person})
    return data


def group_chat(
    chat_id: int, title: str, *, kind: str = "supergroup", is_forum: bool = False
) -> dict[str, Any]:
    data: dict[str, Any] = {"id": chat_id, "type": kind, "title": title}
    if is_forum:
        data["is_forum"] = True
    return data


def member(person: dict[str, Any], status: str = "member", **extra: Any) -> dict[str, Any]:
    """A ChatMember. ``restricted`` gets every permission field (False unless given)."""
    data: dict[str, Any] = {"user": person, "status": status, **extra}
    if status == "restricted":
        for name in _PERMISSIONS:
            data.setdefault(name, False)
        data.setdefault("is_member", True)
        data.setdefault("until_date", 0)
    elif status == "kicked":
        data.setdefault("until_date", 0)
    elif status == "administrator":
        for name in _ADMIN_RIGHTS:
            data.setdefault(name, True)
        data.setdefault("can_be_edited", False)
    elif status == "creator":
        data.setdefault("is_anonymous", False)
    return data


_PERMISSIONS = (
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
    "can_edit_tag",
    "can_react_to_messages",
)
_ADMIN_RIGHTS = (
    "is_anonymous",
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
)


# ---------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Failure:
    """One injected answer. ``kind``: status (an API error), invalid_json,
    drop (close without answering), truncate (half the body, then close)."""

    kind: str  # status, none, invalid_json, drop, truncate
    status: int = 500
    description: str = "Internal Server Error"
    retry_after: int | None = None

    @classmethod
    def http(cls, status: int, description: str, retry_after: int | None = None) -> Failure:
        return cls("status", status, description, retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Failure:
        return cls.http(status, "Internal Server Error" if status == 500 else "Bad Gateway")

    @classmethod
    def flood(cls, seconds: int) -> Failure:
        return cls.http(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)

    @classmethod
    def unauthorized(cls) -> Failure:
        return cls.http(401, "Unauthorized")

    @classmethod
    def chat_not_found(cls) -> Failure:
        return cls.http(400, "Bad Request: chat not found")

    @classmethod
    def blocked(cls) -> Failure:
        return cls.http(403, "Forbidden: bot was blocked by the user")

    @classmethod
    def none(cls) -> Failure:
        """Answer normally (to aim a later failure at a later call)."""
        return cls("none")

    @classmethod
    def invalid_json(cls) -> Failure:
        return cls("invalid_json")

    @classmethod
    def drop(cls) -> Failure:
        return cls("drop")

    @classmethod
    def truncate(cls) -> Failure:
        return cls("truncate")


class ApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str, bytes]]
    at: float
    status: int = 0  # the HTTP status answered; 0 while pending, or when dropped

    def __getitem__(self, key: str) -> Any:
        return self.params[key]


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    allowed_updates: list[str] | None
    max_connections: int
    last_error_date: int | None = None
    last_error_message: str | None = None
    statuses: list[int] = field(default_factory=list)


class FakeBotAPI(FakePlatform[Failure, Call]):
    """The server. ``await start()``, use ``base_url`` as the adapter's base_url, ``await close()``."""

    def __init__(self, token: str = TOKEN, *, username: str = "callboard_test_bot") -> None:
        super().__init__()
        self.token = token
        self.me: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": "Callboard Test",
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self.answered_count: Counter[str] = Counter()  # 2xx answers by lower-case method
        self.pending: list[dict[str, Any]] = []
        self.served: Counter[int] = Counter()
        self.conflicts = 0
        self.waiting: Counter[str] = Counter()  # calls waiting on a hold, by lower-case method
        self.chats: dict[int, dict[str, Any]] = {}
        self.chat_info: dict[int, dict[str, Any]] = {}
        self.members: dict[int, dict[int, dict[str, Any]]] = {}
        self.blocked: set[int] = set()
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.sent: list[dict[str, Any]] = []
        self.pinned: dict[int, list[int]] = {}
        self.reactions: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.files: dict[str, tuple[str, bytes]] = {}
        self.callback_answers: list[dict[str, Any]] = []
        self.webhook: Webhook | None = None
        self.webhook_retry = 0.2
        self.left_chats: list[int] = []
        self._update_ids = itertools.count(700_000)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._file_ids = itertools.count(1)
        self._poll: tuple[asyncio.Future[None], web.Request] | None = None
        self._changed = asyncio.Event()
        self._deliverer: asyncio.Task[None] | None = None
        self._methods = {name.lower(): handler for name, handler in self._handlers().items()}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeBotAPI:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.*}", self._download)
        await self.serve(app)
        return self

    async def close(self) -> None:
        self.release()
        if self._deliverer is not None:
            self._deliverer.cancel()
            await asyncio.gather(self._deliverer, return_exceptions=True)
        await self.stop_serving()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    def adapter_yaml(self, token: str | None = None) -> str:
        """The ``adapter:`` block (YAML) of a bot polling this fake (1 s long polls) with
        ``token`` (by default the fake's); a test appends any other fields."""
        return f'type: telegram\ntoken: "{token or self.token}"\nbase_url: {self.base_url}\npoll_timeout: 1\n'

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ------------------------------------------------------------------ test controls

    def call_key(self, name: str) -> str:
        return name.lower()  # the Bot API's method names are case-insensitive

    def add_chat(
        self,
        chat: dict[str, Any],
        *,
        members: Sequence[dict[str, Any]] = (),
        **info: Any,
    ) -> dict[str, Any]:
        """Make a chat known (getChat, sends). ``info``: ChatFullInfo fields
        (description, permissions, invite_link, bio...)."""
        chat = copy.deepcopy(chat)  # the server's own record: renames do not touch the caller's
        self.chats[chat["id"]] = chat
        self.chat_info[chat["id"]] = info
        self.members[chat["id"]] = {m["user"]["id"]: m for m in members}
        if chat["type"] != "private":
            self.members[chat["id"]].setdefault(self.me["id"], member(self.me, "administrator"))
        return chat

    def add_file(self, content: bytes, *, path: str = "documents/file.bin") -> str:
        file_id = f"F{next(self._file_ids):06d}"
        self.files[file_id] = (path, content)
        return file_id

    def message(
        self,
        chat: dict[str, Any],
        sender: dict[str, Any] | None,
        text: str | None = None,
        *,
        thread: int | None = None,
        reply_to: dict[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A Message from someone in ``chat`` (stored, so the bot may reply to,
        forward, pin or delete it). ``fields``: any other Message fields."""
        chat = self.chats.get(chat["id"], chat)
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat["id"]),
            "date": int(time.time()),
            "chat": chat,
        }
        if sender is not None:
            message["from"] = sender
        if text is not None:
            message["text"] = text
        if thread is not None:
            message["message_thread_id"] = thread
            if chat.get("is_forum"):
                message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        message.update(fields)
        self.messages[(chat["id"], message["message_id"])] = message
        return message

    def push(self, kind: str, payload: dict[str, Any]) -> int:
        """Queue an update ``{"update_id": n, kind: payload}``; returns n."""
        update_id = next(self._update_ids)
        self.push_raw({"update_id": update_id, kind: payload})
        return update_id

    def push_raw(self, update: dict[str, Any]) -> None:
        self.pending.append(update)
        self._changed.set()
        self._changed = asyncio.Event()

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def answered(self, method: str) -> list[Call]:
        return [c for c in self.calls_of(method) if 200 <= c.status < 300]

    async def wait_confirmed(self, timeout: float = 15.0) -> None:
        """Wait until every queued update was confirmed (or delivered to the webhook)."""
        await self.until(
            lambda: not self.pending, timeout, lambda: f"{len(self.pending)} updates still unconfirmed"
        )

    # ------------------------------------------------------------------ the wire

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params, files = await _read_params(request)
        call = Call(method, params, files, time.monotonic())
        self.calls.append(call)
        try:
            response = await self._answer(request, method, params, files)
            call.status = response.status if not _gone(request) else 0
            if 200 <= call.status < 300:
                self.answered_count[method.lower()] += 1
            return response
        finally:
            self.call_done()

    async def _answer(
        self, request: web.Request, method: str, params: dict[str, Any], files: dict[str, tuple[str, bytes]]
    ) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        key = method.lower()
        while key in self.held:
            self.waiting[key] += 1
            try:
                await self._released.wait()
            finally:
                self.waiting[key] -= 1
        if _gone(request):
            return web.Response(status=499)  # the client left while the call waited: never carried out
        handler = self._methods.get(key)
        if handler is None:
            return _error(404, "Not Found")
        failure = self.next_failure(key)
        if failure is not None and failure.kind == "status":
            return _error(failure.status, failure.description, failure.retry_after)
        if failure is not None and failure.kind == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=499)
        try:
            result = await handler(request, params, files)
        except ApiError as exc:
            return _error(exc.code, exc.description)
        body = orjson.dumps({"ok": True, "result": result})
        if failure is not None and failure.kind == "invalid_json":
            return web.Response(
                body=b"<html>502 Bad Gateway</html>" + body[:20], content_type="application/json"
            )
        if failure is not None and failure.kind == "truncate":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        return web.Response(body=body, content_type="application/json")

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        for file_path, content in self.files.values():
            if file_path == path:
                return web.Response(body=content)
        return web.Response(status=404)

    def _handlers(self) -> dict[str, Any]:
        return {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            **{f"send{_camel(kind)}": self._send_media for kind in _MEDIA},
            "sendLocation": self._send_media,
            "forwardMessage": self._forward_message,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "deleteMessage": self._delete_message,
            "getChat": self._get_chat,
            "getChatMemberCount": self._get_chat_member_count,
            "getChatAdministrators": self._get_chat_administrators,
            "getChatMember": self._get_chat_member,
            "getFile": self._get_file,
            "restrictChatMember": self._restrict_chat_member,
            "banChatMember": self._ban_chat_member,
            "unbanChatMember": self._unban_chat_member,
            "leaveChat": self._leave_chat,
            "pinChatMessage": self._pin_chat_message,
            "unpinChatMessage": self._unpin_chat_message,
            "unpinAllChatMessages": self._unpin_all_chat_messages,
            "setChatTitle": self._set_chat_title,
            "setMessageReaction": self._set_message_reaction,
            "setChatDescription": self._set_chat_description,
            "sendChatAction": self._send_chat_action,
            "createChatInviteLink": self._create_chat_invite_link,
            "answerCallbackQuery": self._answer_callback_query,
        }

    # ------------------------------------------------------------------ updates

    async def _get_me(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        return self.me

    async def _get_updates(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        if self.webhook is not None:
            raise ApiError(
                409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook first"
            )
        loop = asyncio.get_running_loop()
        if self._poll is not None and not self._poll[0].done():
            superseded, older = self._poll
            superseded.set_result(None)
            if not _gone(older):
                self.conflicts += 1
        mine: asyncio.Future[None] = loop.create_future()
        self._poll = (mine, request)
        offset = p.get("offset")
        if isinstance(offset, int):
            self.pending = [u for u in self.pending if u["update_id"] >= offset]
        limit = min(int(p.get("limit") or 100), 100)
        deadline = loop.time() + float(p.get("timeout") or 0)
        try:
            while not self.pending and not mine.done() and not _gone(request):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                changed: asyncio.Future[Any] = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait(
                    [changed, mine], timeout=min(remaining, 0.5), return_when=asyncio.FIRST_COMPLETED
                )
                changed.cancel()
        finally:
            if self._poll is not None and self._poll[0] is mine:
                self._poll = None
        if mine.done():
            raise ApiError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        batch = [] if _gone(request) else self.pending[:limit]
        for update in batch:
            self.served[update["update_id"]] += 1
        return batch

    async def _set_webhook(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        url = p.get("url") or ""
        if not url:
            return await self._delete_webhook(request, p, files)
        if p.get("drop_pending_updates"):
            self.pending.clear()
        self.webhook = Webhook(
            url, p.get("secret_token"), p.get("allowed_updates"), int(p.get("max_connections", 40))
        )
        if self._deliverer is None or self._deliverer.done():
            self._deliverer = asyncio.ensure_future(self._deliver())
        return True

    async def _delete_webhook(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        self.webhook = None
        self._changed.set()  # the deliverer notices and ends
        self._changed = asyncio.Event()
        if p.get("drop_pending_updates"):
            self.pending.clear()
        return True

    async def _get_webhook_info(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        hook = self.webhook
        info: dict[str, Any] = {
            "url": hook.url if hook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self.pending),
        }
        if hook is not None:
            info["max_connections"] = hook.max_connections
            if hook.allowed_updates is not None:
                info["allowed_updates"] = hook.allowed_updates
            if hook.last_error_message:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message
        return info

    async def _deliver(self) -> None:
        """Post queued updates to the webhook in order, retrying until 2xx."""
        async with aiohttp.ClientSession() as session:
            while self.webhook is not None:
                if not self.pending:
                    await self._changed.wait()
                    continue
                hook = self.webhook
                update = self.pending[0]
                headers = {"Content-Type": "application/json"}
                if hook.secret_token:
                    headers[SECRET_HEADER] = hook.secret_token
                try:
                    async with session.post(hook.url, data=orjson.dumps(update), headers=headers) as response:
                        status = response.status
                except aiohttp.ClientError as exc:
                    status, reason = 0, f"Connection failed: {type(exc).__name__}"
                else:
                    reason = f"Wrong response from the webhook: {status}"
                hook.statuses.append(status)
                self.served[update["update_id"]] += 1
                if 200 <= status < 300:
                    if self.pending and self.pending[0] is update:
                        self.pending.pop(0)
                    continue
                hook.last_error_date = int(time.time())
                hook.last_error_message = reason
                await asyncio.sleep(self.webhook_retry)

    # ------------------------------------------------------------------ messages

    def _next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _chat(self, chat_id: Any) -> dict[str, Any]:
        if isinstance(chat_id, str) and chat_id.startswith("@"):
            for chat in self.chats.values():
                if chat.get("username") == chat_id[1:]:
                    return chat
            raise ApiError(400, "Bad Request: chat not found")
        try:
            chat = self.chats[int(chat_id)]
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "Bad Request: chat not found") from None
        return chat

    def _writable(self, chat_id: Any) -> dict[str, Any]:
        chat = self._chat(chat_id)
        if chat["id"] in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat["id"] in self.left_chats:
            raise ApiError(403, "Forbidden: bot is not a member of the supergroup chat")
        return chat

    def _stored(self, chat_id: int, message_id: Any, what: str) -> dict[str, Any]:
        try:
            return self.messages[(chat_id, int(message_id))]
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, f"Bad Request: message to {what} not found") from None

    def _new_message(
        self, chat: dict[str, Any], p: dict[str, Any], content: dict[str, Any]
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat["id"]),
            "from": self.me,
            "chat": chat,
            "date": int(time.time()),
            **content,
        }
        thread = p.get("message_thread_id")
        if thread is not None:
            message["message_thread_id"] = thread
            if chat.get("is_forum"):
                message["is_topic_message"] = True
        reply = p.get("reply_parameters")
        if isinstance(reply, dict):
            original = self.messages.get((chat["id"], int(reply["message_id"])))
            if original is not None:
                message["reply_to_message"] = original
            elif not reply.get("allow_sending_without_reply"):
                raise ApiError(400, "Bad Request: message to be replied not found")
        self.messages[(chat["id"], message["message_id"])] = message
        self.sent.append(message)
        return message

    async def _send_message(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._writable(p.get("chat_id"))
        text = p.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        content: dict[str, Any] = {"text": text}
        entities = _entities(text, p.get("entities"))
        if entities:
            content["entities"] = entities
        return self._new_message(chat, p, content)

    async def _send_media(self, request: web.Request, p: dict[str, Any], files: dict[str, Any]) -> Any:
        chat = self._writable(p.get("chat_id"))
        method = request.match_info["method"]
        kind = _snake(method.removeprefix("send"))
        content: dict[str, Any] = {}
        if kind == "location":
            content["location"] = {"latitude": float(p["latitude"]), "longitude": float(p["longitude"])}
        else:
            content[kind] = self._media_object(kind, p.get(kind), files, p.get("filename"))
        caption = p.get("caption")
        if caption is not None:
            if kind not in _CAPTIONED:
                raise ApiError(400, f"Bad Request: {kind} can't have a caption")
            if utf16_len(caption) > 1024:
                raise ApiError(400, "Bad Request: message caption is too long")
            content["caption"] = caption
            entities = _entities(caption, p.get("caption_entities"))
            if entities:
                content["caption_entities"] = entities
        return self._new_message(chat, p, content)

    def _media_object(self, kind: str, value: Any, files: dict[str, tuple[str, bytes]], filename: Any) -> Any:
        if isinstance(value, str) and value.startswith("attach://"):
            value = files.get(value.removeprefix("attach://"))
        elif value is None:
            value = files.get(kind)
        if isinstance(value, tuple):  # an upload
            name, content = value
            file_id = self.add_file(content, path=f"{kind}s/{name or 'upload'}")
            size = len(content)
            name = filename or name
        elif isinstance(value, str) and value:
            if value.startswith(("http://", "https://")):
                file_id = self.add_file(b"downloaded:" + value.encode(), path=f"{kind}s/from-url")
            elif value in self.files:
                file_id = value
            else:
                raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
            size = len(self.files[file_id][1])
            name = filename or self.files[file_id][0].rsplit("/", 1)[-1]
        else:
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        base = {"file_id": file_id, "file_unique_id": f"U{file_id}", "file_size": size}
        if kind == "photo":
            return [{**base, "width": 90, "height": 60}, {**base, "width": 800, "height": 600}]
        if kind == "document":
            return {**base, "file_name": name}
        if kind in ("voice", "audio", "video_note"):
            return {**base, "duration": 3, **({"length": 240} if kind == "video_note" else {})}
        if kind == "sticker":
            return {
                **base,
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
            }
        return {**base, "width": 640, "height": 480, "duration": 3}

    async def _forward_message(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._writable(p.get("chat_id"))
        source_chat = self._chat(p.get("from_chat_id"))
        original = self._stored(source_chat["id"], p.get("message_id"), "forward")
        content = {
            k: v for k, v in original.items() if k in ("text", "entities", "caption", *_MEDIA, "location")
        }
        sender = original.get("from")
        origin: dict[str, Any] = (
            {"type": "user", "date": original["date"], "sender_user": sender}
            if sender is not None
            else {"type": "chat", "date": original["date"], "sender_chat": source_chat}
        )
        return self._new_message(chat, p, {**content, "forward_origin": origin})

    def _own_message(self, p: dict[str, Any], what: str) -> dict[str, Any]:
        chat = self._chat(p.get("chat_id"))
        message = self._stored(chat["id"], p.get("message_id"), what)
        if message.get("from", {}).get("id") != self.me["id"]:
            raise ApiError(400, f"Bad Request: message can't be {what}ed")
        return message

    async def _edit_message_text(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        message = self._own_message(p, "edit")
        if "text" not in message:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        text = p.get("text") or ""
        if utf16_len(text) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        message["text"] = text
        message.pop("entities", None)
        entities = _entities(text, p.get("entities"))
        if entities:
            message["entities"] = entities
        message["edit_date"] = int(time.time())
        return message

    async def _edit_message_caption(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        message = self._own_message(p, "edit")
        if "text" in message:
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        message["caption"] = p.get("caption") or ""
        message["edit_date"] = int(time.time())
        return message

    async def _delete_message(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._chat(p.get("chat_id"))
        self._stored(chat["id"], p.get("message_id"), "delete")
        del self.messages[(chat["id"], int(p["message_id"]))]
        return True

    # ------------------------------------------------------------------ chats and members

    async def _get_chat(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._chat(p.get("chat_id"))
        return {
            **chat,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
            **self.chat_info.get(chat["id"], {}),
        }

    def _group(self, chat_id: Any) -> dict[str, Any]:
        chat = self._chat(chat_id)
        if chat["type"] == "private":
            raise ApiError(400, "Bad Request: method is available for supergroup and channel chats only")
        return chat

    async def _get_chat_member_count(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._chat(p.get("chat_id"))
        members = self.members.get(chat["id"], {}).values()
        return sum(1 for m in members if m["status"] not in ("left", "kicked"))

    async def _get_chat_administrators(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._group(p.get("chat_id"))
        return [m for m in self.members[chat["id"]].values() if m["status"] in ("creator", "administrator")]

    def _member(self, p: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        chat = self._group(p.get("chat_id"))
        found = self.members[chat["id"]].get(int(p.get("user_id", 0)))
        if found is None:
            raise ApiError(400, "Bad Request: user not found")
        return chat, found

    async def _get_chat_member(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        return self._member(p)[1]

    async def _restrict_chat_member(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat, found = self._member(p)
        permissions = p.get("permissions")
        if not isinstance(permissions, dict):
            raise ApiError(400, "Bad Request: can't parse permissions JSON object")
        until = int(p.get("until_date") or 0)
        restricted = member(found["user"], "restricted", until_date=until, **permissions)
        self.members[chat["id"]][found["user"]["id"]] = restricted
        return True

    async def _ban_chat_member(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat, found = self._member(p)
        self.members[chat["id"]][found["user"]["id"]] = member(found["user"], "kicked")
        return True

    async def _unban_chat_member(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat, found = self._member(p)
        if found["status"] == "kicked" or not p.get("only_if_banned"):
            self.members[chat["id"]][found["user"]["id"]] = member(found["user"], "left")
        return True

    async def _leave_chat(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._chat(p.get("chat_id"))
        self.left_chats.append(chat["id"])
        return True

    async def _pin_chat_message(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._chat(p.get("chat_id"))
        self._stored(chat["id"], p.get("message_id"), "pin")
        self.pinned.setdefault(chat["id"], []).append(int(p["message_id"]))
        return True

    async def _unpin_chat_message(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._chat(p.get("chat_id"))
        pinned = self.pinned.get(chat["id"], [])
        message_id = p.get("message_id")
        if message_id is None:
            if pinned:
                pinned.pop()
            return True
        if int(message_id) not in pinned:
            raise ApiError(400, "Bad Request: message to unpin not found")
        pinned.remove(int(message_id))
        return True

    async def _unpin_all_chat_messages(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._chat(p.get("chat_id"))
        self.pinned[chat["id"]] = []
        return True

    async def _set_chat_title(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._group(p.get("chat_id"))
        title = p.get("title") or ""
        if not 1 <= len(title) <= 128:
            raise ApiError(
                400,
                "Bad Request: chat title is empty" if not title else "Bad Request: chat title is too long",
            )
        chat["title"] = title
        return True

    async def _set_message_reaction(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._chat(p.get("chat_id"))
        message = self._stored(chat["id"], p.get("message_id"), "react to")
        reaction = p.get("reaction") or []
        if not isinstance(reaction, list) or any(
            r.get("type") not in ("emoji", "custom_emoji") for r in reaction
        ):
            raise ApiError(400, "Bad Request: REACTION_INVALID")
        self.reactions[(chat["id"], message["message_id"])] = reaction
        return True

    async def _set_chat_description(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        chat = self._group(p.get("chat_id"))
        self.chat_info[chat["id"]]["description"] = p.get("description") or ""
        return True

    async def _send_chat_action(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        self._writable(p.get("chat_id"))
        if p.get("action") not in _CHAT_ACTIONS:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    async def _create_chat_invite_link(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        self._group(p.get("chat_id"))
        link: dict[str, Any] = {
            "invite_link": f"https://t.me/+fake{next(self._file_ids)}",
            "creator": self.me,
            "creates_join_request": bool(p.get("creates_join_request")),
            "is_primary": False,
            "is_revoked": False,
        }
        for key in ("name", "expire_date", "member_limit"):
            if p.get(key) is not None:
                link[key] = p[key]
        return link

    async def _answer_callback_query(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        if not p.get("callback_query_id"):
            raise ApiError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        self.callback_answers.append(p)
        return True

    async def _get_file(self, request: web.Request, p: dict[str, Any], files: Any) -> Any:
        file_id = p.get("file_id")
        if file_id not in self.files:
            raise ApiError(400, "Bad Request: invalid file_id")
        path, content = self.files[file_id]
        return {
            "file_id": file_id,
            "file_unique_id": f"U{file_id}",
            "file_size": len(content),
            "file_path": path,
        }


# ---------------------------------------------------------------------- helpers


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _error(code: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
    """Parameters as Telegram reads them: form values are text, JSON-encoded
    unless they are text parameters; uploads are multipart files."""
    params: dict[str, Any] = {}
    files: dict[str, tuple[str, bytes]] = {}
    if request.content_type == "application/json":
        body = await request.read()
        return (orjson.loads(body) if body else {}), files
    form = await request.post() if request.can_read_body else {}
    merged: list[tuple[str, Any]] = [*request.query.items(), *form.items()]
    for key, value in merged:
        if isinstance(value, web.FileField):
            files[key] = (value.filename, value.file.read())
        elif key in _TEXT_PARAMS:
            params[key] = value
        else:
            try:
                params[key] = orjson.loads(value)
            except orjson.JSONDecodeError:
                params[key] = value
    return params, files


def _entities(text: str, entities: Any) -> list[dict[str, Any]]:
    if not entities:
        return []
    if not isinstance(entities, list):
        raise ApiError(400, "Bad Request: can't parse entities JSON object")
    length = utf16_len(text)
    for entity in entities:
        offset, size = entity.get("offset"), entity.get("length")
        if not isinstance(offset, int) or not isinstance(size, int) or offset < 0 or size <= 0:
            raise ApiError(400, "Bad Request: can't parse entities: bad offset or length")
        if offset + size > length:
            raise ApiError(400, "Bad Request: can't parse entities: entity beyond end of text")
    return entities


def _camel(snake: str) -> str:
    return "".join(word.capitalize() for word in snake.split("_"))


def _snake(camel: str) -> str:
    out = ""
    for char in camel:
        out += f"_{char.lower()}" if char.isupper() and out else char.lower()
    return out
