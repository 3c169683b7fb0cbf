"""The web chat's endpoints: ``POST /web/{bot}/session`` and the websocket ``/web/{bot}/ws``.

A websocket is opened only for an allowed ``Origin`` and a valid session (in anonymous
mode a client without one gets a fresh anonymous session, announced in ``hello``). Each
event frame is checked against the user (``convert.check``), the connection's and the
user's rate limits, then handed to ``host.ingest``, which refuses it with
``AdapterBusy`` when the engine's backlog is full. Frames are acknowledged in the order
they came, each once it is durable; refused ones get an ``error`` (``busy`` with
``retry_after_ms``), and nothing refused is stored. After a ``busy`` the connection is
not read until the advised time, so a flooding client is held back by TCP.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from callboard.adapters.base import AdapterBusy, AdapterHost, HttpHandler
from callboard.adapters.web.client import WebClient
from callboard.adapters.web.config import WebAdapterConfig
from callboard.adapters.web.convert import check, to_event
from callboard.adapters.web.directory import Directory
from callboard.adapters.web.identity import COOKIE, AuthError, Identity, Sessions, bearer, origin_allowed
from callboard.adapters.web.limits import TokenBucket, UserLimits, admit
from callboard.adapters.web.outbox import Outbox
from callboard.adapters.web.protocol import (
    Ack,
    Duplicate,
    EditOp,
    EventOp,
    FrameError,
    Hello,
    JoinOp,
    LeaveOp,
    SendOp,
    SubscribeOp,
    encode,
    error,
    parse_op,
)
from callboard.engine.clock import sleep
from callboard.engine.events import Event

log = logging.getLogger("callboard.web")

#: frames one connection handles before the loop serves the others (a pipelining client
#: with megabytes buffered would otherwise hold the loop until its in-flight queue fills)
FAIR_SHARE = 16


class Acks:
    """A connection's event frames waiting for their answer (``ack``, ``duplicate`` or an
    error), answered in the order they came, each once its ``ingest`` resolved.

    Driven by done callbacks on the ingest futures, not by a task awaiting each in turn:
    an acker task cost a task step (and a queue round trip) per committed batch per
    connection, which is about one per event under load."""

    def __init__(self, client: WebClient, bot_id: str, limit: int) -> None:
        self.client = client
        self.bot_id = bot_id
        self.limit = limit
        self.waiting: deque[tuple[asyncio.Future[list[int | None]], Event, str]] = deque()
        self._loop = asyncio.get_running_loop()
        self._room: asyncio.Future[None] | None = None  # the reader waits for the queue to shrink
        self._empty: asyncio.Future[None] | None = None  # the connection closes once all are answered

    def add(self, future: asyncio.Future[list[int | None]], event: Event, client_msg_id: str) -> None:
        self.waiting.append((future, event, client_msg_id))
        future.add_done_callback(self._settled)

    def full(self) -> bool:
        return len(self.waiting) >= self.limit

    async def room(self) -> None:
        """Until fewer than ``limit`` frames wait (the reader holds off meanwhile)."""
        while self.full():
            self._room = self._loop.create_future()
            await self._room

    async def drained(self) -> None:
        """Until every frame taken has been answered."""
        while self.waiting:
            self._empty = self._loop.create_future()
            await self._empty

    def _settled(self, _: asyncio.Future[list[int | None]]) -> None:
        waiting = self.waiting
        while waiting and waiting[0][0].done():
            self.client.push(self._answer(*waiting.popleft()))
        if self._room is not None and not self.full():
            _wake(self._room)
            self._room = None
        if self._empty is not None and not waiting:
            _wake(self._empty)
            self._empty = None

    def _answer(self, future: asyncio.Future[list[int | None]], event: Event, client_msg_id: str) -> bytes:
        failure = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if isinstance(failure, AdapterBusy):
            return error(client_msg_id, "busy", f"{failure}; retry later", failure.retry_after)
        if failure is not None:
            log.error("web %s: journal append failed: %r", self.bot_id, failure)
            return error(client_msg_id, "unavailable", "could not store the event; retry")
        (seq,) = future.result()
        if seq is None:
            return encode(Duplicate(client_msg_id=client_msg_id))
        message_id = getattr(event, "message_id", None)
        return encode(Ack(client_msg_id=client_msg_id, message_id=message_id, event_id=event.event_id))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Gateway:
    """One bot's session and websocket endpoints."""

    def __init__(
        self,
        host: AdapterHost,
        config: WebAdapterConfig,
        base_path: str,
        sessions: Sessions,
        directory: Directory,
        outbox: Outbox,
    ) -> None:
        self.host = host
        self.config = config
        self.base_path = base_path
        self.sessions = sessions
        self.directory = directory
        self.outbox = outbox
        self.user_limits = UserLimits(config.rate_per_user, host.clock)
        self.accepting = False
        self.stopped = asyncio.Event()

    def start(self) -> None:
        self.accepting = True
        self.stopped.clear()

    def stop(self) -> None:
        """No new events from now on; connections held off wake up and are refused."""
        self.accepting = False
        self.stopped.set()

    def routes(self) -> list[tuple[str, str, HttpHandler]]:
        return [
            ("POST", f"{self.base_path}/session", self.issue_session),
            ("GET", f"{self.base_path}/ws", self.websocket),
        ]

    # ------------------------------------------------------------------ sessions

    async def issue_session(self, request: web.Request) -> web.StreamResponse:
        """Issue (or renew) a session as ``auth.mode`` allows; sets the cookie too."""
        if not origin_allowed(request, self.config.allowed_origins):
            return _refuse(403, "this origin may not use the chat")
        body = await _json_body(request)
        if body is None:
            return _refuse(400, "the body must be a JSON object of at most 4 KiB")
        try:
            identity = self._identity_for(request, body)
        except AuthError as exc:
            return _refuse(401, str(exc))
        token = self.sessions.issue(identity)
        response = web.json_response(
            {
                "token": token,
                "user_id": identity.user_id,
                "user_name": identity.name,
                "expires_in": self.config.session_ttl,
            }
        )
        response.set_cookie(
            COOKIE,
            token,
            path=f"{self.base_path}/",
            max_age=int(self.config.session_ttl),
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response

    def _identity_for(self, request: web.Request, body: dict[str, Any]) -> Identity:
        mode = self.config.auth.mode
        name = body["name"] if isinstance(body.get("name"), str) else ""
        if mode == "shared_secret":
            user_id = body.get("user_id")
            if not isinstance(user_id, str):
                raise AuthError('name the user: {"user_id": ...}')
            return self.sessions.from_shared_secret(bearer(request), user_id, name)
        if mode == "signed_token" and isinstance(body.get("auth"), str):
            return self.sessions.from_site_token(body["auth"])
        try:
            current = self.sessions.from_request(request)  # renew the session presented
        except AuthError:
            current = None
        if current is not None:
            return current
        if mode == "signed_token":
            raise AuthError('present the token the site signed: {"auth": ...}')
        return self.sessions.anonymous(name)

    # ------------------------------------------------------------------ the websocket

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if not origin_allowed(request, self.config.allowed_origins):
            return _refuse(403, "this origin may not open the chat's websocket")
        issued: str | None = None
        try:
            identity = self.sessions.from_request(request)
        except AuthError as exc:
            return _refuse(401, str(exc))
        if identity is None:
            if not self.sessions.anonymous_allowed:
                return _refuse(401, f"sign in first: POST {self.base_path}/session")
            identity = self.sessions.anonymous()
            issued = self.sessions.issue(identity)
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4 * 1024 * 1024, compress=False)
        stream = await ws.prepare(request)
        user_id = identity.user_id
        client = WebClient(
            ws,
            stream,
            identity,
            self.config.send_queue,
            TokenBucket(self.config.rate_per_connection, self.host.clock),
            self.user_limits.attach(user_id),
        )
        client.push(encode(Hello(user_id=user_id, user_name=identity.name, token=issued)))
        acks = Acks(client, self.host.bot_id, self.config.max_in_flight)
        try:
            taken = 0
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    waiting = self._on_frame(client, message.data, acks)
                    if waiting is not None:
                        await waiting
                    taken += 1
                    if taken % FAIR_SHARE == 0:
                        await asyncio.sleep(0)  # buffered frames do not suspend: let others in
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self.user_limits.detach(user_id)
            await acks.drained()
            self.outbox.forget(client)
            await client.close()
        return ws

    def _on_frame(self, client: WebClient, data: str | bytes, acks: Acks) -> Awaitable[None] | None:
        """Take one frame. Returns what to await before reading the next one (a group to
        load, a subscribe's backlog, a pause after ``busy``, room among the frames in
        flight), or None: most frames need no wait, and a coroutine per frame was a
        measurable part of the hot path."""
        limit = self.config.max_frame_bytes
        if len(data) * 4 > limit:  # a character is at most 4 bytes: only a long frame is measured
            size = len(data.encode() if isinstance(data, str) else data)
            if size > limit:
                client.push(error(None, "too_large", f"frame of {size} bytes exceeds {limit}"))
                return None
        try:
            op = parse_op(data)
            loading = self._load_group(client, op)
            if loading is None:
                self._admit(client, op)
        except FrameError as exc:
            return self._refused(client, exc)
        if loading is not None:
            return self._load_then_take(client, op, loading, acks)
        return self._take(client, op, acks)

    async def _load_then_take(
        self, client: WebClient, op: EventOp | SubscribeOp, loading: Awaitable[None], acks: Acks
    ) -> None:
        """A group frame: the directory reads the group first, then the frame is admitted."""
        try:
            await self._loaded(loading, op)
            self._admit(client, op)
        except FrameError as exc:
            waiting = self._refused(client, exc)
        else:
            waiting = self._take(client, op, acks)
        if waiting is not None:
            await waiting

    def _refused(self, client: WebClient, exc: FrameError) -> Awaitable[None] | None:
        client.push(exc.frame())
        return None if exc.retry_after is None else self._pause(exc.retry_after)  # see _hold_off

    def _take(self, client: WebClient, op: EventOp | SubscribeOp, acks: Acks) -> Awaitable[None] | None:
        """An admitted frame: a subscribe, or an event to ingest (answered in order by ``acks``)."""
        if isinstance(op, SubscribeOp):
            return self.outbox.subscribe(client, op.chat_id, op.since)
        event = to_event(self.host.bot_id, op, client.identity, self.directory)
        if isinstance(op, LeaveOp):
            self.outbox.unfollow_user(op.chat_id, client.identity.user_id)
        elif op.chat_id not in client.chats:
            self.outbox.follow(client, op.chat_id)
        future = self.host.ingest([event])
        acked = future
        if isinstance(op, JoinOp | LeaveOp):  # acknowledged once the directory stored it too
            acked = asyncio.ensure_future(_both(future, self.directory.writing(op.chat_id)))
        acks.add(acked, event, op.client_msg_id)
        return self._hold_off(future) if not acks.full() else self._room_then_hold_off(acks, future)

    async def _room_then_hold_off(self, acks: Acks, future: asyncio.Future[list[int | None]]) -> None:
        await acks.room()
        waiting = self._hold_off(future)
        if waiting is not None:
            await waiting

    def _hold_off(self, future: asyncio.Future[list[int | None]]) -> Awaitable[None] | None:
        """A connection told ``busy`` is not read again until the advised retry time:
        what it sends meanwhile waits in its socket (TCP pushes back on the sender), so
        a flood costs one refusal per interval, not one per frame."""
        if future.done() and not future.cancelled():
            busy = future.exception()
            if isinstance(busy, AdapterBusy):
                return self._pause(busy.retry_after)
        return None

    async def _pause(self, seconds: float) -> None:
        """Wait on the engine's clock, or until the bot stops (a shutdown waits for no one)."""
        timer = asyncio.ensure_future(sleep(self.host.clock, seconds))
        stopping = asyncio.ensure_future(self.stopped.wait())
        await asyncio.wait((timer, stopping), return_when=asyncio.FIRST_COMPLETED)
        for task in (timer, stopping):
            task.cancel()

    def _load_group(self, client: WebClient, op: EventOp | SubscribeOp) -> Awaitable[None] | None:
        """What to await so the directory holds the frame's group (None: nothing)."""
        if ":" in op.chat_id or (not isinstance(op, SubscribeOp) and op.chat_type != "group"):
            return None
        return self.directory.ensure(op.chat_id, client.identity.user_id, isinstance(op, SendOp | EditOp))

    async def _loaded(self, loading: Awaitable[None], op: EventOp | SubscribeOp) -> None:
        try:
            await asyncio.shield(loading)  # shared with other frames: a closing socket must not cancel it
        except Exception as exc:
            log.error("web %s: reading group %s failed: %r", self.host.bot_id, op.chat_id, exc)
            cid = None if isinstance(op, SubscribeOp) else op.client_msg_id
            raise FrameError("unavailable", "could not read the group; retry", cid) from None

    def _admit(self, client: WebClient, op: EventOp | SubscribeOp) -> None:
        """Refuse (``FrameError``) what this user may not do, or may not do now."""
        identity = client.identity
        if isinstance(op, SubscribeOp):
            cid = None
            if not self.directory.may_read(identity, op.chat_id):
                raise FrameError("forbidden", "you may read your own private chats and the groups you joined")
        else:
            cid = op.client_msg_id
            if not self.accepting:
                raise FrameError("shutting_down", "the bot is not accepting events now", cid)
            check(op, identity, self.directory)
        wait = admit(client.rate, client.user_rate)
        if wait > 0:
            raise FrameError("busy", "rate limit reached; retry later", cid, retry_after=wait)


async def _both(ingested: asyncio.Future[list[int | None]], stored: Awaitable[None]) -> list[int | None]:
    seqs = await ingested
    await asyncio.shield(stored)  # the directory's write, never cancelled from here
    return seqs


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    if not request.can_read_body:
        return {}
    if (request.content_length or 0) > 4096:
        return None
    raw = await request.read()  # chunked bodies: bounded by the server's client_max_size
    if len(raw) > 4096:
        return None
    if not raw.strip():
        return {}
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return body if isinstance(body, dict) else None


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)
