"""A local Slack for tests and benchmarks: the Web API, Socket Mode, and a
client that posts signed Events API requests.

Web API: ``/api/<method>`` (GET or POST) takes parameters as a query string,
a form (urlencoded or multipart) or a JSON body, authenticates the
``Authorization: Bearer`` token, and answers ``{"ok": true, ...}`` or
``{"ok": false, "error": "<code>"}`` (HTTP 200, as Slack does); a rate limit is
HTTP 429 with ``Retry-After``. List methods paginate with
``response_metadata.next_cursor``. Files follow the files_upload_v2 flow:
files.getUploadURLExternal, a POST of the bytes to the returned URL,
files.completeUploadExternal; downloads need the bot token. The server keeps
the state the methods need (users, channels, members, messages, threads,
files, reactions, pins) and, like Slack, sends the bot its own actions back as
events (``echo``): its messages, edits, deletions and reactions.

Socket Mode: apps.connections.open (app token) returns a one-use
``ws://`` URL; the socket greets with ``hello``, sends each event as an
envelope (``events_api``, ``interactive``, ``slash_commands``) and takes
``{"envelope_id": ...}`` acks. An envelope not acknowledged is sent again (a
new envelope, ``retry_attempt`` + 1) on the next connection, or after
``redeliver_after`` seconds. ``disconnect()`` sends Slack's ``disconnect``
message, ``drop_socket()`` cuts the connection, ``mute()`` stops answering
pings and sending (a silent socket); ``lose_acks`` drops acks on the way;
``refuse_sockets`` fails the next websocket upgrades.

Events API: with ``deliver_to(url)`` set, the same events are posted there
instead, signed (v0), retried with
``X-Slack-Retry-Num`` until answered 2xx. ``http_per_channel`` requests
of one channel may be in flight at once (1, the default, keeps them in order;
Slack itself does not promise order). ``post`` sends one crafted request
(bad signature, stale timestamp) for tests of refusal.

Faults per method: ``fail(method, Failure...)``; ``hold(method)`` keeps calls
waiting until ``release()``, and a call whose client has gone away meanwhile is
not carried out. Every call is recorded in ``calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import web

from callboard.testing.server import FakePlatform

BOT_TOKEN = "xoxb-1111-2222-callboardtest"
APP_TOKEN = "xapp-1-A0CALLAPP-3333-callboardtest"
SIGNING_SECRET = "8f742231b10e8888abcd99b1c2d3e4f5"
TEAM = "T0CALLTEAM"
BOT_USER = "U0CALLBOT"
BOT_ID = "B0CALLBOT"
APP_ID = "A0CALLAPP"

#: parameters sent as JSON text inside a form or query string
_JSON_PARAMS = frozenset({"blocks", "attachments", "files", "view", "metadata"})
TEXT_MAX = 40_000
SECTION_MAX = 3000


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 request signature (computed here on its own, as Slack does)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------- faults and records


@dataclass(frozen=True)
class Failure:
    """One injected answer. ``kind``: error (``ok: false`` with ``code``), status
    (an HTTP status without a Slack body), ratelimited (429 + Retry-After),
    drop (close without answering), none (answer normally)."""

    kind: str
    code: str = ""
    status: int = 200
    retry_after: int = 1

    @classmethod
    def error(cls, code: str) -> Failure:
        return cls("error", code)

    @classmethod
    def server_error(cls, status: int = 500) -> Failure:
        return cls("status", status=status)

    @classmethod
    def ratelimited(cls, seconds: int = 1) -> Failure:
        return cls("ratelimited", "ratelimited", 429, seconds)

    @classmethod
    def drop(cls) -> Failure:
        return cls("drop")

    @classmethod
    def none(cls) -> Failure:
        return cls("none")


class SlackError(Exception):
    def __init__(self, code: str, **extra: Any) -> None:
        super().__init__(code)
        self.code = code
        self.extra = extra


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 0  # HTTP status answered; 0 while pending or when dropped
    ok: bool = False
    error: str | None = None

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


@dataclass
class Delivery:
    """One event, interaction or command on its way to the app, until acknowledged."""

    key: str  # event_id, or the interaction's own id
    kind: str  # events_api, interactive, slash_commands
    payload: dict[str, Any]
    channel: str
    attempts: int = 0
    sent_at: float = 0.0
    acked: bool = False


@dataclass
class Socket:
    ws: web.WebSocketResponse
    queue: asyncio.Queue[Delivery | None] = field(default_factory=asyncio.Queue)
    envelopes: dict[str, Delivery] = field(default_factory=dict)


# ---------------------------------------------------------------------- the server


class FakeSlack(FakePlatform[Failure, Call]):
    """``await start()``, point the adapter's base_url at ``base_url``, ``await close()``."""

    def __init__(
        self,
        *,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        signing_secret: str = SIGNING_SECRET,
        echo: bool = True,
    ) -> None:
        super().__init__()
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.echo = echo
        self.revoked: set[str] = set()
        self.answered_count: Counter[str] = Counter()
        # state
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.members: dict[str, list[str]] = {}
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.uploads: dict[str, dict[str, Any]] = {}  # file id -> pending upload
        self.pins: dict[str, list[str]] = {}
        self.reactions: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.ephemeral: list[dict[str, Any]] = []
        self.scheduled: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        # delivery
        self.pending: dict[str, Delivery] = {}
        self.served: Counter[str] = Counter()  # deliveries sent, by key
        self.acks: list[str] = []  # keys, in ack order
        self.sockets: list[Socket] = []
        self.opened = 0
        self.max_open = 0
        self.tickets: set[str] = set()
        self.muted = False
        self.lose_acks = False
        self.refuse_sockets = 0  # the next n websocket upgrades answer 503
        self.lost_acks = 0
        self.redeliver_after: float | None = None
        self.events_url: str | None = None
        self.http_statuses: list[int] = []
        self.retry_delay = 0.2
        self.http_concurrency = 8
        self.http_per_channel = 1  # requests in flight per channel (1: in order)
        self._http_busy: Counter[str] = Counter()
        self._http_tasks: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._redeliverer: asyncio.Task[None] | None = None
        self._ts = itertools.count(int(time.time() * 1_000_000))
        self._ids = itertools.count(1)
        self.add_user(BOT_USER, "callboard", is_bot=True, bot_id=BOT_ID)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeSlack:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files-pri/{file_id}/{name}", self._download)
        app.router.add_get("/link/", self._socket)
        await self.serve(app)
        self._redeliverer = asyncio.ensure_future(self._redeliver_loop())
        return self

    async def close(self) -> None:
        self.release()
        for task in [self._redeliverer, *self._http_tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *[t for t in [self._redeliverer, *self._http_tasks] if t], return_exceptions=True
        )
        for sock in list(self.sockets):
            await sock.ws.close()
        if self._http is not None:
            await self._http.close()
        await self.stop_serving()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/api/"

    def adapter_yaml(self, mode: str = "socket") -> str:
        """The ``adapter:`` block (YAML) of a Slack bot talking to this fake in ``mode``
        with its tokens; a test appends any other fields."""
        return (
            f'type: slack\nmode: {mode}\nbot_token: "{self.bot_token}"\napp_token: "{self.app_token}"\n'
            f'signing_secret: "{self.signing_secret}"\nbase_url: {self.base_url}\n'
        )

    # ------------------------------------------------------------------ test controls

    def revoke(self, token: str) -> None:
        """Calls with ``token`` answer ``token_revoked`` from now on."""
        self.revoked.add(token)

    def calls_of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def answered(self, method: str) -> list[Call]:
        return [c for c in self.calls_of(method) if c.ok]

    async def wait_acked(self, timeout: float = 15.0) -> None:
        """Until every delivery was acknowledged."""
        await self.until(
            lambda: not self.pending, timeout, lambda: f"{len(self.pending)} deliveries still unacknowledged"
        )

    async def wait_socket(self, count: int = 1, timeout: float = 15.0) -> None:
        """Until at least ``count`` Socket Mode connections were opened in all."""
        await self.until(
            lambda: self.opened >= count and bool(self.sockets),
            timeout,
            lambda: f"{self.opened} Socket Mode connections opened, waiting for {count}",
        )

    # ------------------------------------------------------------------ workspace

    def add_user(self, user_id: str, name: str, *, is_bot: bool = False, **profile: Any) -> dict[str, Any]:
        bot_id = profile.pop("bot_id", None)
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": TEAM,
            "name": name,
            "real_name": profile.get("real_name", name.title()),
            "is_bot": is_bot,
            "deleted": False,
            "tz": "Europe/London",
            "profile": {
                "display_name": profile.get("display_name", name),
                "real_name": profile.get("real_name", name.title()),
                "image_192": f"https://avatars.example/{user_id}.png",
                **profile,
            },
        }
        if bot_id:
            user["profile"]["bot_id"] = bot_id
        self.users[user_id] = user
        return user

    def add_channel(
        self,
        channel_id: str,
        name: str = "",
        *,
        kind: str = "channel",
        members: Sequence[str] = (),
        bot: bool = True,
        **extra: Any,
    ) -> dict[str, Any]:
        """A conversation: ``kind`` channel (public), group (private), mpim or im."""
        channel: dict[str, Any] = {
            "id": channel_id,
            "name": name or channel_id.lower(),
            "is_channel": kind == "channel",
            "is_group": kind == "group",
            "is_im": kind == "im",
            "is_mpim": kind == "mpim",
            "is_private": kind in ("group", "mpim", "im"),
            "is_archived": False,
            "created": 1_700_000_000,
            "creator": members[0] if members else BOT_USER,
            "topic": {"value": extra.pop("topic", "")},
            "purpose": {"value": extra.pop("purpose", "")},
            **extra,
        }
        if kind == "im":
            channel["user"] = members[0] if members else ""
            channel.pop("name")
        self.channels[channel_id] = channel
        self.members[channel_id] = [*members, *([BOT_USER] if bot and BOT_USER not in members else [])]
        self.messages.setdefault(channel_id, [])
        return channel

    def im(self, user_id: str) -> str:
        """The DM channel with ``user_id`` (made on first use)."""
        for channel in self.channels.values():
            if channel.get("is_im") and channel.get("user") == user_id:
                return str(channel["id"])
        channel_id = f"D{user_id[1:]}"
        self.add_channel(channel_id, kind="im", members=[user_id])
        return channel_id

    def kind(self, channel_id: str) -> str:
        channel = self.channels[channel_id]
        for kind in ("im", "mpim", "group", "channel"):
            if channel.get(f"is_{kind}"):
                return kind
        return "channel"

    def next_ts(self) -> str:
        n = next(self._ts)
        return f"{n // 1_000_000}.{n % 1_000_000:06d}"

    def add_file(
        self, content: bytes, name: str, mimetype: str, *, user: str = "", file_id: str | None = None
    ) -> dict[str, Any]:
        """A file in the workspace (shared by someone, or uploaded by the bot)."""
        file_id = file_id or f"F{next(self._ids):08d}"
        file = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1] if "." in name else "binary",
            "size": len(content),
            "user": user or BOT_USER,
            "url_private": f"{self.root}/files-pri/{file_id}/{name}",
            "url_private_download": f"{self.root}/files-pri/{file_id}/{name}?download=1",
            "permalink": f"https://fake.slack.example/files/{file_id}",
        }
        if mimetype.startswith("image/"):
            file.update(original_w=640, original_h=480)
        self.files[file_id] = file
        self.contents[file_id] = content
        return file

    # ------------------------------------------------------------------ events people cause

    def message(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: Sequence[dict[str, Any]] = (),
        subtype: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """``user`` says ``text`` in ``channel`` (stored, so the bot can read, react to
        or pin it). Returns the ``message`` event; ``push`` delivers it."""
        message: dict[str, Any] = {
            "type": "message",
            "user": user,
            "text": text,
            "ts": self.next_ts(),
            **extra,
        }
        if subtype is not None:
            message["subtype"] = subtype
        elif files:
            message["subtype"] = "file_share"
        if files:
            message["files"] = list(files)
        if thread_ts is not None:
            message["thread_ts"] = thread_ts
        self._store(channel, message)
        return {**message, "channel": channel, "channel_type": self.kind(channel), "event_ts": message["ts"]}

    def app_mention(self, message_event: dict[str, Any]) -> dict[str, Any]:
        """The ``app_mention`` event Slack sends besides ``message`` for a mention."""
        event = {k: v for k, v in message_event.items() if k != "channel_type"}
        event["type"] = "app_mention"
        return event

    def edit(self, channel: str, ts: str, text: str, *, user: str | None = None) -> dict[str, Any]:
        stored = self._find(channel, ts)
        previous = dict(stored)
        stored["text"] = text
        stored["edited"] = {"user": user or stored.get("user"), "ts": self.next_ts()}
        return {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "channel": channel,
            "channel_type": self.kind(channel),
            "ts": stored["edited"]["ts"],
            "event_ts": stored["edited"]["ts"],
            "message": dict(stored),
            "previous_message": previous,
        }

    def delete(self, channel: str, ts: str) -> dict[str, Any]:
        stored = self._find(channel, ts)
        self.messages[channel].remove(stored)
        now = self.next_ts()
        return {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "channel": channel,
            "channel_type": self.kind(channel),
            "ts": now,
            "event_ts": now,
            "deleted_ts": ts,
            "previous_message": stored,
        }

    def reaction(self, channel: str, ts: str, user: str, name: str, *, added: bool = True) -> dict[str, Any]:
        stored = self._find(channel, ts)
        return {
            "type": "reaction_added" if added else "reaction_removed",
            "user": user,
            "reaction": name,
            "item_user": stored.get("user"),
            "item": {"type": "message", "channel": channel, "ts": ts},
            "event_ts": self.next_ts(),
        }

    def member_joined(self, channel: str, user: str, *, inviter: str | None = None) -> dict[str, Any]:
        if user not in self.members[channel]:
            self.members[channel].append(user)
        event = {
            "type": "member_joined_channel",
            "user": user,
            "channel": channel,
            "channel_type": "G" if self.kind(channel) == "group" else "C",
            "team": TEAM,
            "event_ts": self.next_ts(),
        }
        if inviter:
            event["inviter"] = inviter
        return event

    def member_left(self, channel: str, user: str) -> dict[str, Any]:
        if user in self.members[channel]:
            self.members[channel].remove(user)
        return {
            "type": "member_left_channel",
            "user": user,
            "channel": channel,
            "channel_type": "G" if self.kind(channel) == "group" else "C",
            "team": TEAM,
            "event_ts": self.next_ts(),
        }

    def rename(self, channel: str, name: str) -> dict[str, Any]:
        self.channels[channel]["name"] = name
        kind = "group_rename" if self.kind(channel) == "group" else "channel_rename"
        return {
            "type": kind,
            "channel": {"id": channel, "name": name, "created": 1_700_000_000},
            "event_ts": self.next_ts(),
        }

    def block_action(
        self, channel: str, message_ts: str, user: str, action_id: str, value: str, **extra: Any
    ) -> dict[str, Any]:
        """A button press on a message (an ``interactive`` payload)."""
        n = next(self._ids)
        return {
            "type": "block_actions",
            "user": {"id": user, "username": self.users.get(user, {}).get("name", user), "team_id": TEAM},
            "api_app_id": APP_ID,
            "team": {"id": TEAM, "domain": "fake"},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, **extra},
            "trigger_id": f"{n}.{TEAM}.trigger",
            "channel": {"id": channel, "name": self.channels[channel].get("name", channel)},
            "message": dict(self._find(channel, message_ts)),
            "response_url": f"{self.root}/actions/{n}",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "b1",
                    "type": "button",
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                    "text": {"type": "plain_text", "text": value},
                }
            ],
        }

    def slash_command(self, channel: str, user: str, command: str, text: str = "") -> dict[str, Any]:
        n = next(self._ids)
        return {
            "token": "verification",
            "team_id": TEAM,
            "channel_id": channel,
            "channel_name": self.channels[channel].get("name", channel),
            "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "response_url": f"{self.root}/commands/{n}",
            "trigger_id": f"{n}.{TEAM}.cmd",
        }

    # ------------------------------------------------------------------ delivery

    def push(self, event: dict[str, Any], *, event_id: str | None = None) -> str:
        """Deliver one event (an ``event_callback``); returns its event_id."""
        event_id = event_id or f"Ev{next(self._ids):010d}"
        payload = {
            "token": "verification",
            "team_id": TEAM,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True}],
        }
        channel = event.get("channel") or (event.get("item") or {}).get("channel") or ""
        self._deliver(Delivery(event_id, "events_api", payload, channel if isinstance(channel, str) else ""))
        return event_id

    def push_interactive(self, payload: dict[str, Any]) -> str:
        key = f"int-{payload.get('trigger_id') or next(self._ids)}"
        self._deliver(
            Delivery(key, "interactive", payload, str((payload.get("channel") or {}).get("id") or ""))
        )
        return key

    def push_command(self, form: dict[str, Any]) -> str:
        key = f"cmd-{form.get('trigger_id')}"
        self._deliver(Delivery(key, "slash_commands", form, str(form.get("channel_id") or "")))
        return key

    def deliver_to(self, url: str | None) -> None:
        """Post events to ``url`` (the Events API) instead of a socket."""
        self.events_url = url
        self._pump_http()

    def _deliver(self, delivery: Delivery) -> None:
        self.pending[delivery.key] = delivery
        if self.events_url is not None:
            self._pump_http()
        elif self.sockets and not self.muted:
            self.sockets[-1].queue.put_nowait(delivery)

    async def _redeliver_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            after = self.redeliver_after
            if after is None or self.events_url is not None or not self.sockets or self.muted:
                continue
            now = time.monotonic()
            for delivery in list(self.pending.values()):
                if delivery.sent_at and now - delivery.sent_at > after:
                    self.sockets[-1].queue.put_nowait(delivery)

    # ------------------------------------------------------------------ Socket Mode

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's ``disconnect`` message; the socket closes a moment later."""
        for sock in list(self.sockets):
            frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
            task = asyncio.ensure_future(self._send_then_close(sock, frame))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _send_then_close(self, sock: Socket, frame: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await sock.ws.send_str(orjson.dumps(frame).decode())
        await asyncio.sleep(0.5)
        await sock.ws.close()

    def drop_socket(self) -> None:
        """Cut every connection without a close handshake."""
        for sock in list(self.sockets):
            transport = sock.ws._req.transport if sock.ws._req is not None else None
            if transport is not None:
                transport.abort()

    def mute(self, muted: bool = True) -> None:
        """A silent socket: no pongs, no envelopes (until unmuted)."""
        self.muted = muted
        if not muted and self.sockets:
            for delivery in self.pending.values():
                self.sockets[-1].queue.put_nowait(delivery)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if self.refuse_sockets > 0:
            self.refuse_sockets -= 1
            return web.Response(status=503, text="try again")
        if ticket not in self.tickets:
            return web.Response(status=401, text="invalid ticket")
        self.tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        sock = Socket(ws)
        self.sockets.append(sock)
        self.opened += 1
        self.max_open = max(self.max_open, len(self.sockets))
        writer = asyncio.ensure_future(self._write(sock))
        try:
            hello = {
                "type": "hello",
                "num_connections": len(self.sockets),
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
            await ws.send_str(orjson.dumps(hello).decode())
            for delivery in list(self.pending.values()):  # what no one acknowledged comes again
                sock.queue.put_nowait(delivery)
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.PING:
                    if not self.muted:
                        await ws.pong(frame.data)
                elif frame.type == aiohttp.WSMsgType.TEXT:
                    self._on_ack(sock, frame.data)
        finally:
            self.sockets.remove(sock)
            sock.queue.put_nowait(None)
            await asyncio.gather(writer, return_exceptions=True)
        return ws

    async def _write(self, sock: Socket) -> None:
        while True:
            delivery = await sock.queue.get()
            if delivery is None or sock.ws.closed:
                return
            if delivery.acked or delivery.key not in self.pending or self.muted:
                continue
            envelope_id = f"env-{next(self._ids)}"
            delivery.attempts += 1
            delivery.sent_at = time.monotonic()
            sock.envelopes[envelope_id] = delivery
            envelope = {
                "envelope_id": envelope_id,
                "type": delivery.kind,
                "payload": delivery.payload,
                "accepts_response_payload": delivery.kind != "events_api",
                "retry_attempt": delivery.attempts - 1,
                "retry_reason": "timeout" if delivery.attempts > 1 else "",
            }
            self.served[delivery.key] += 1
            try:
                await sock.ws.send_str(orjson.dumps(envelope).decode())
            except (ConnectionError, RuntimeError):
                return

    def _on_ack(self, sock: Socket, data: str) -> None:
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        delivery = sock.envelopes.pop(frame.get("envelope_id", ""), None) if isinstance(frame, dict) else None
        if delivery is not None and self.lose_acks:
            self.lost_acks += 1  # lost on the way: Slack sends the event again
            return
        if delivery is not None and not delivery.acked:
            delivery.acked = True
            self.pending.pop(delivery.key, None)
            self.acks.append(delivery.key)

    # ------------------------------------------------------------------ Events API (as Slack's client)

    def _pump_http(self) -> None:
        """Start posting what is pending: one request in flight per channel."""
        if self.events_url is None:
            return
        busy = len(self._http_tasks)
        for delivery in list(self.pending.values()):
            if busy >= self.http_concurrency:
                return
            if self._http_busy[delivery.channel] >= self.http_per_channel or delivery.sent_at:
                continue
            self._http_busy[delivery.channel] += 1
            delivery.sent_at = time.monotonic()
            task = asyncio.ensure_future(self._post_delivery(delivery))
            self._http_tasks.add(task)
            task.add_done_callback(self._http_done)
            busy += 1

    def _http_done(self, task: asyncio.Task[None]) -> None:
        self._http_tasks.discard(task)
        self._pump_http()

    async def _post_delivery(self, delivery: Delivery) -> None:
        try:
            while self.events_url is not None and not delivery.acked:
                if delivery.kind == "events_api":
                    body, content_type = orjson.dumps(delivery.payload), "application/json"
                elif delivery.kind == "interactive":
                    body = urlencode({"payload": orjson.dumps(delivery.payload).decode()}).encode()
                    content_type = "application/x-www-form-urlencoded"
                else:
                    body = urlencode(delivery.payload).encode()
                    content_type = "application/x-www-form-urlencoded"
                headers = {}
                if delivery.attempts:
                    headers = {
                        "X-Slack-Retry-Num": str(delivery.attempts),
                        "X-Slack-Retry-Reason": "http_error",
                    }
                delivery.attempts += 1
                self.served[delivery.key] += 1
                try:
                    status, _ = await self.post(self.events_url, body, content_type, headers=headers)
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                self.http_statuses.append(status)
                if 200 <= status < 300:
                    delivery.acked = True
                    self.pending.pop(delivery.key, None)
                    self.acks.append(delivery.key)
                    return
                await asyncio.sleep(self.retry_delay)
        finally:
            self._http_busy[delivery.channel] -= 1
            if not delivery.acked:
                delivery.sent_at = 0.0

    async def post(
        self,
        url: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        headers: dict[str, str] | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
        signature: str | None = None,
    ) -> tuple[int, bytes]:
        """One signed request as Slack sends it: (status, body). ``timestamp``,
        ``secret`` and ``signature`` forge a stale or wrong one."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature or sign(secret or self.signing_secret, stamp, body),
            **(headers or {}),
        }
        async with self._http.post(url, data=body, headers=sent) as response:
            return response.status, await response.read()

    # ------------------------------------------------------------------ the Web API

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await _read_params(request)
        call = Call(method, params, time.monotonic())
        self.calls.append(call)
        try:
            response = await self._answer(request, method, params, call)
            call.status = response.status if not _gone(request) else 0
            if call.ok and call.status == 200:
                self.answered_count[method] += 1
            else:
                call.ok = False
            return response
        finally:
            self.call_done()

    async def _answer(
        self, request: web.Request, method: str, params: dict[str, Any], call: Call
    ) -> web.StreamResponse:
        while method in self.held:
            await self._released.wait()
        if _gone(request):
            return web.Response(status=499)  # the client left while the call waited: never carried out
        failure = self.next_failure(method)
        if failure is not None and failure.kind == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=499)
        if failure is not None and failure.kind == "status":
            return web.Response(status=failure.status, text="upstream failure")
        if failure is not None and failure.kind == "ratelimited":
            call.error = "ratelimited"
            return _json(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(failure.retry_after)},
            )
        if failure is not None and failure.kind == "error":
            call.error = failure.code
            return _json({"ok": False, "error": failure.code})
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or params.pop(
            "token", ""
        )
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        try:
            self._authenticate(method, token)
            if handler is None:
                raise SlackError("unknown_method")
            result = handler(params) or {}
        except SlackError as exc:
            call.error = exc.code
            return _json({"ok": False, "error": exc.code, **exc.extra})
        call.ok = True
        return _json({"ok": True, **result})

    def _authenticate(self, method: str, token: str) -> None:
        if not token:
            raise SlackError("not_authed")
        if token in self.revoked:
            raise SlackError("token_revoked")
        if method == "apps.connections.open":
            if token == self.bot_token:
                raise SlackError("not_allowed_token_type")
            if token != self.app_token:
                raise SlackError("invalid_auth")
            return
        if token == self.app_token:
            raise SlackError("not_allowed_token_type")
        if token != self.bot_token:
            raise SlackError("invalid_auth")

    # ------------------------------------------------------------------ helpers

    def _store(self, channel: str, message: dict[str, Any]) -> None:
        if channel not in self.channels:
            raise KeyError(f"unknown channel {channel}")
        self.messages[channel].append(message)
        thread = message.get("thread_ts")
        if thread and thread != message["ts"]:
            parent = next((m for m in self.messages[channel] if m["ts"] == thread), None)
            if parent is not None:
                parent["thread_ts"] = thread
                parent["reply_count"] = parent.get("reply_count", 0) + 1

    def _find(self, channel: str, ts: Any) -> dict[str, Any]:
        for message in self.messages.get(channel, []):
            if message["ts"] == ts:
                return message
        raise SlackError("message_not_found")

    def _channel(self, p: dict[str, Any], key: str = "channel") -> dict[str, Any]:
        channel_id = p.get(key)
        if isinstance(channel_id, str) and channel_id.startswith(("U", "W")) and channel_id in self.users:
            channel_id = self.im(channel_id)  # a user id: their DM, as Slack does
        channel = self.channels.get(str(channel_id))
        if channel is None:
            raise SlackError("channel_not_found")
        return channel

    def _writable(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        if channel.get("is_archived"):
            raise SlackError("is_archived")
        if BOT_USER not in self.members[channel["id"]]:
            raise SlackError("not_in_channel")
        return channel

    def _echo(self, event: dict[str, Any]) -> None:
        if self.echo:
            self.push(event)

    @staticmethod
    def _check_blocks(blocks: Any) -> None:
        if not isinstance(blocks, list) or len(blocks) > 50:
            raise SlackError("invalid_blocks", errors=["must be a list of at most 50 blocks"])
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "section":
                text = (block.get("text") or {}).get("text")
                if not isinstance(text, str) or not 1 <= len(text) <= SECTION_MAX:
                    raise SlackError("invalid_blocks", errors=["section text must be 1-3000 characters"])
            elif kind == "image":
                if not (block.get("image_url") or block.get("slack_file")) or not block.get("alt_text"):
                    raise SlackError(
                        "invalid_blocks", errors=["image needs image_url or slack_file, and alt_text"]
                    )
            elif kind not in ("context", "divider", "actions", "header", "rich_text", "input", "file"):
                raise SlackError("invalid_blocks", errors=[f"unknown block type {kind!r}"])

    def _content(self, p: dict[str, Any]) -> dict[str, Any]:
        text = p.get("text")
        blocks = p.get("blocks")
        if blocks in ("", None, []):
            blocks = None
        if not text and blocks is None:
            raise SlackError("no_text")
        if isinstance(text, str) and len(text) > TEXT_MAX:
            raise SlackError("msg_too_long")
        content: dict[str, Any] = {"text": text or ""}
        if blocks is not None:
            self._check_blocks(blocks)
            content["blocks"] = blocks
        return content

    def _page(self, items: list[Any], p: dict[str, Any], key: str) -> dict[str, Any]:
        limit = int(p.get("limit") or 100)
        cursor = str(p.get("cursor") or "")
        start = int(cursor.removeprefix("next:")) if cursor.startswith("next:") else 0
        page = items[start : start + limit]
        more = start + limit < len(items)
        return {key: page, "response_metadata": {"next_cursor": f"next:{start + limit}" if more else ""}}

    def _bot_message(
        self, channel: dict[str, Any], content: dict[str, Any], thread_ts: Any
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "ts": self.next_ts(),
            **content,
        }
        if thread_ts:
            message["thread_ts"] = str(thread_ts)
        self._store(channel["id"], message)
        self._echo({**message, "channel": channel["id"], "channel_type": self.kind(channel["id"])})
        return message

    # ------------------------------------------------------------------ methods

    def _m_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.example/",
            "team": "Callboard Test",
            "user": "callboard",
            "team_id": TEAM,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _m_apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        ticket = f"t{next(self._ids)}"
        self.tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={APP_ID}"}

    def _m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._writable(p)
        message = self._bot_message(channel, self._content(p), p.get("thread_ts"))
        return {"channel": channel["id"], "ts": message["ts"], "message": message}

    def _m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        stored = self._find(channel["id"], p.get("ts"))
        if stored.get("bot_id") != BOT_ID:
            raise SlackError("cant_update_message")
        previous = dict(stored)
        content = self._content(p)
        stored["text"] = content["text"]
        if "blocks" in content:
            stored["blocks"] = content["blocks"]
        else:
            stored.pop("blocks", None)
        stored["edited"] = {"user": BOT_USER, "ts": self.next_ts()}
        self._echo(
            {
                "type": "message",
                "subtype": "message_changed",
                "hidden": True,
                "channel": channel["id"],
                "channel_type": self.kind(channel["id"]),
                "ts": stored["edited"]["ts"],
                "message": dict(stored),
                "previous_message": previous,
            }
        )
        return {"channel": channel["id"], "ts": stored["ts"], "text": stored["text"]}

    def _m_chat_delete(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        stored = self._find(channel["id"], p.get("ts"))
        if stored.get("bot_id") != BOT_ID:
            raise SlackError("cant_delete_message")
        self.messages[channel["id"]].remove(stored)
        now = self.next_ts()
        self._echo(
            {
                "type": "message",
                "subtype": "message_deleted",
                "hidden": True,
                "channel": channel["id"],
                "channel_type": self.kind(channel["id"]),
                "ts": now,
                "deleted_ts": stored["ts"],
                "previous_message": stored,
            }
        )
        return {"channel": channel["id"], "ts": stored["ts"]}

    def _m_chat_getPermalink(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        stored = self._find(channel["id"], p.get("message_ts"))
        ts = stored["ts"].replace(".", "")
        return {
            "channel": channel["id"],
            "permalink": f"https://fake.slack.example/archives/{channel['id']}/p{ts}",
        }

    def _m_chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._writable(p)
        user = p.get("user")
        if user not in self.members[channel["id"]]:
            raise SlackError("user_not_in_channel")
        self.ephemeral.append({"channel": channel["id"], "user": user, **self._content(p)})
        return {"message_ts": self.next_ts()}

    def _m_chat_scheduleMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._writable(p)
        post_at = int(p.get("post_at") or 0)
        if post_at <= time.time():
            raise SlackError("time_in_past")
        scheduled = {
            "id": f"Q{next(self._ids):08d}",
            "channel": channel["id"],
            "post_at": post_at,
            **self._content(p),
        }
        self.scheduled.append(scheduled)
        return {"channel": channel["id"], "scheduled_message_id": scheduled["id"], "post_at": post_at}

    def _m_conversations_history(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        if BOT_USER not in self.members[channel["id"]]:
            raise SlackError("not_in_channel")
        messages = [
            m
            for m in reversed(self.messages[channel["id"]])
            if not m.get("thread_ts") or m["thread_ts"] == m["ts"] or m.get("subtype") == "thread_broadcast"
        ]
        messages = _between(messages, p)
        page = self._page(messages, p, "messages")
        page["has_more"] = bool(page["response_metadata"]["next_cursor"])
        return page

    def _m_conversations_replies(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        ts = p.get("ts")
        stored = self._find(channel["id"], ts)
        parent = stored.get("thread_ts") or stored["ts"]
        thread = [
            m for m in self.messages[channel["id"]] if m["ts"] == parent or m.get("thread_ts") == parent
        ]
        page = self._page(_between(thread, p), p, "messages")
        page["has_more"] = bool(page["response_metadata"]["next_cursor"])
        return page

    def _m_conversations_info(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = dict(self._channel(p))
        if p.get("include_num_members") in (True, "true", "1", 1):
            channel["num_members"] = len(self.members[channel["id"]])
        channel["is_member"] = BOT_USER in self.members[channel["id"]]
        return {"channel": channel}

    def _m_conversations_list(self, p: dict[str, Any]) -> dict[str, Any]:
        types = str(p.get("types") or "public_channel").split(",")
        wanted = {"public_channel": "channel", "private_channel": "group", "mpim": "mpim", "im": "im"}
        kinds = {wanted[t] for t in types if t in wanted}
        channels = []
        for channel_id in sorted(self.channels):
            kind = self.kind(channel_id)
            if kind not in kinds:
                continue
            member = BOT_USER in self.members[channel_id]
            if kind != "channel" and not member:
                continue  # private conversations are listed only to members
            if p.get("exclude_archived") in (True, "true", "1", 1) and self.channels[channel_id].get(
                "is_archived"
            ):
                continue
            channels.append({**self.channels[channel_id], "is_member": member})
        return self._page(channels, p, "channels")

    def _m_conversations_members(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        return self._page(list(self.members[channel["id"]]), p, "members")

    def _m_conversations_rename(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        name = str(p.get("name") or "")
        if not name or len(name) > 80 or name != name.lower() or " " in name:
            raise SlackError("invalid_name_specials")
        if BOT_USER not in self.members[channel["id"]]:
            raise SlackError("not_in_channel")
        self._echo(self.rename(channel["id"], name))
        return {"channel": self.channels[channel["id"]]}

    def _m_conversations_kick(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        user = str(p.get("user") or "")
        if user == BOT_USER:
            raise SlackError("cant_kick_self")
        if user not in self.members[channel["id"]]:
            raise SlackError("not_in_channel")
        self._echo(self.member_left(channel["id"], user))
        return {}

    def _m_conversations_leave(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        if BOT_USER not in self.members[channel["id"]]:
            return {"not_in_channel": True}
        self._echo(self.member_left(channel["id"], BOT_USER))
        return {}

    def _m_users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(p.get("user")))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user}

    def _m_users_lookupByEmail(self, p: dict[str, Any]) -> dict[str, Any]:
        for user in self.users.values():
            if user["profile"].get("email") == p.get("email"):
                return {"user": user}
        raise SlackError("users_not_found")

    def _m_reactions_add(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        stored = self._find(channel["id"], p.get("timestamp"))
        name = str(p.get("name") or "")
        if not name or ":" in name or " " in name:
            raise SlackError("invalid_name")
        given = self.reactions.setdefault((channel["id"], stored["ts"]), [])
        if (BOT_USER, name) in given:
            raise SlackError("already_reacted")
        given.append((BOT_USER, name))
        self._echo(self.reaction(channel["id"], stored["ts"], BOT_USER, name))
        return {}

    def _m_pins_add(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        stored = self._find(channel["id"], p.get("timestamp"))
        pinned = self.pins.setdefault(channel["id"], [])
        if stored["ts"] in pinned:
            raise SlackError("already_pinned")
        pinned.append(stored["ts"])
        return {}

    def _m_pins_remove(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        pinned = self.pins.get(channel["id"], [])
        if p.get("timestamp") not in pinned:
            raise SlackError("no_pin")
        pinned.remove(p["timestamp"])
        return {}

    def _m_views_open(self, p: dict[str, Any]) -> dict[str, Any]:
        view = p.get("view")
        if not p.get("trigger_id"):
            raise SlackError("invalid_trigger_id")
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise SlackError("invalid_arguments")
        opened = {"id": f"V{next(self._ids):08d}", **view}
        self.views.append(opened)
        return {"view": opened}

    def _m_conversations_setTopic(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(p)
        channel["topic"] = {"value": str(p.get("topic") or "")}
        return {"channel": channel}

    # files_upload_v2: getUploadURLExternal, POST the bytes, completeUploadExternal

    def _m_files_getUploadURLExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        filename = p.get("filename")
        length = int(p.get("length") or 0)
        if not filename or length <= 0:
            raise SlackError("invalid_arguments")
        file_id = f"F{next(self._ids):08d}"
        self.uploads[file_id] = {"filename": filename, "length": length, "data": None}
        return {"upload_url": f"{self.root}/upload/{file_id}", "file_id": file_id}

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="no such upload")
        data = await request.read()
        if len(data) != upload["length"]:
            return web.Response(status=400, text="length mismatch")
        upload["data"] = data
        return web.Response(text=f"OK - {len(data)}")

    def _m_files_completeUploadExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        items = p.get("files")
        if not isinstance(items, list) or not items:
            raise SlackError("invalid_arguments")
        channel = self._writable({"channel": p["channel_id"]}) if p.get("channel_id") else None
        done = []
        for item in items:
            upload = self.uploads.get(str(item.get("id")))
            if upload is None or upload["data"] is None:
                raise SlackError("file_not_found")
        for item in items:
            upload = self.uploads.pop(str(item["id"]))
            name = upload["filename"]
            file = self.add_file(upload["data"], name, _mime(name), file_id=str(item["id"]))
            file["title"] = item.get("title") or name
            done.append(file)
        if channel is not None:
            self._bot_message(
                channel,
                {"text": p.get("initial_comment") or "", "files": done, "subtype": "file_share"},
                p.get("thread_ts"),
            )
        return {"files": [{"id": f["id"], "title": f["title"]} for f in done]}

    def _m_files_info(self, p: dict[str, Any]) -> dict[str, Any]:
        file = self.files.get(str(p.get("file")))
        if file is None:
            raise SlackError("file_not_found")
        return {"file": file}

    async def _download(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token != self.bot_token or token in self.revoked:
            return web.Response(status=403, text="<html>sign in to Slack</html>", content_type="text/html")
        file_id = request.match_info["file_id"]
        if file_id not in self.contents:
            return web.Response(status=404)
        return web.Response(body=self.contents[file_id], content_type=self.files[file_id]["mimetype"])


# ---------------------------------------------------------------------- helpers


def _json(data: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _mime(name: str) -> str:
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return {
        "png": "image/png",
        "jpg": "image/jpeg",
        "jpeg": "image/jpeg",
        "gif": "image/gif",
        "txt": "text/plain",
        "pdf": "application/pdf",
        "ogg": "audio/ogg",
        "mp3": "audio/mpeg",
    }.get(suffix, "application/octet-stream")


def _between(messages: list[dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    inclusive = p.get("inclusive") in (True, "true", "1", 1)
    latest, oldest = p.get("latest"), p.get("oldest")

    def keep(message: dict[str, Any]) -> bool:
        ts = float(message["ts"])
        if latest is not None and (ts > float(latest) or (ts == float(latest) and not inclusive)):
            return False
        return not (oldest is not None and (ts < float(oldest) or (ts == float(oldest) and not inclusive)))

    return [m for m in messages if keep(m)]


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Parameters as Slack reads them: query string, then a form or JSON body;
    JSON-valued form fields (blocks, files, view...) decoded."""
    params: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            body = await request.read()
            if body:
                data = orjson.loads(body)
                if isinstance(data, dict):
                    params.update(data)
        else:
            form = await request.post()
            for key, value in form.items():
                params[key] = value.file.read() if isinstance(value, web.FileField) else value
    for key in _JSON_PARAMS & params.keys():
        value = params[key]
        if isinstance(value, str) and value[:1] in ("[", "{"):
            with contextlib.suppress(orjson.JSONDecodeError):
                params[key] = orjson.loads(value)
    return params
