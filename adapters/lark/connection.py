"""LarkConnection: one bot's link to Lark, the long connection or a webhook.

Start: the bot's identity is fetched (``bot/v3/info``), which also proves the
credentials: a refusal raises ``AdapterAuthError`` and stops the bot; any other
failure fails the actor and the supervisor retries with backoff, for ever.

Long connection (``mode: ws``): lark-oapi's client runs in a ``LongConnWorker``
thread (``longconn.py``). Each event it receives is handed to this loop,
converted, and ingested; the SDK answers Lark only when ``ingest`` resolved,
so an answered event is in the journal, and an event whose store failed is
answered 500 and redelivered. Health is freshness: every frame (events, and
the pongs to the SDK's pings) is noted, and a link silent for ``stale_after``
fails the actor, as does a closed socket. Stop before start: ``on_stop``
closes the socket and joins the thread before a restarted instance opens a
new one; reports of a replaced worker are ignored.

Webhook (``mode: webhook``): ``POST /lark/<bot id>/events`` on the engine's
server. ``webhook.open_delivery`` answers the URL challenge and rejects a
bad signature or token with 401 before anything is stored; an event is
answered 200 only once it is in the journal (500 otherwise, and Lark retries
for about 7 hours; the journal drops what it already has). Card actions
arrive on the same path.

Events are deduplicated by the journal (keys in ``convert.py``). When the bot
is added to a group and ``bot_added_welcome`` is set, the welcome is sent
once the event is stored the first time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import orjson
import pykka
from aiohttp import web

from callboard.adapters.base import AdapterAuthError, AdapterBusy
from callboard.adapters.lark.api import CredentialsRejected
from callboard.adapters.lark.errors import ConnectionFailed, LarkAPIError, auth_error
from callboard.adapters.lark.webhook import Challenge, Rejected, open_delivery
from callboard.engine.actor import Actor
from callboard.engine.clock import sleep
from callboard.engine.entities import MessageChain
from callboard.engine.events import BotInvitedToGroup, Event

if TYPE_CHECKING:
    from callboard.adapters.lark.adapter import LarkAdapter
    from callboard.adapters.lark.longconn import Link

log = logging.getLogger("callboard.lark")

#: a webhook delivery waits at most this long for room in a full backlog (Lark wants an answer in 3 s)
WEBHOOK_BUSY_WAIT = 2.0
#: largest webhook body taken (Lark's events are a few KB)
MAX_BODY = 1024 * 1024


class _Connected:
    """Worker -> actor: the socket of ``link``'s run is open."""

    __slots__ = ("link",)

    def __init__(self, link: Link) -> None:
        self.link = link


class _Ended:
    """Worker -> actor: ``link``'s run ended (``error`` None after a requested stop)."""

    __slots__ = ("error", "link")

    def __init__(self, link: Link, error: BaseException | None) -> None:
        self.link = link
        self.error = error

    def __repr__(self) -> str:
        return f"_Ended({self.error!r})"


class _Check:
    __slots__ = ()


_CHECK = _Check()


class StaleConnection(ConnectionFailed):
    """No frame from Lark for longer than a healthy link stays quiet."""


class LarkConnection(Actor):
    def __init__(self, adapter: LarkAdapter) -> None:
        self.adapter = adapter
        self.host = adapter.host
        self.config = adapter.lark_config
        self.worker: pykka.ActorRef[Any] | None = None
        self.link: Link | None = None
        self.accepting = False
        self.pending: set[asyncio.Future[Any]] = set()
        self.turn: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def webhook_path(self) -> str:
        return f"/lark/{self.host.bot_id}/events"

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            if self.config.app_type == "isv":
                # a store app's tokens need the app ticket Lark pushes to the webhook; asking for
                # it checks the credentials, and the bot's identity is read once a tenant writes
                await self.adapter.api.resend_app_ticket()
            else:
                await self.adapter.bot_info()
        except CredentialsRejected as exc:
            self.host.set_connected(False, "Lark rejected the app's credentials")
            raise auth_error(self.host.bot_id, exc.code, str(exc)) from None
        except LarkAPIError as exc:
            self.host.set_connected(False, f"cannot reach Lark: {exc}")
            raise ConnectionFailed(f"bot/v3/info: {exc}") from None
        name = self.adapter.bot_name or self.config.app_id
        if self.config.mode == "webhook":
            self.host.add_route("POST", self.webhook_path, self._on_webhook)
            self.accepting = True
            self.host.set_connected(True, f"webhook {self.webhook_path} as {name}")
        else:
            self.accepting = True
            self._start_worker()
            self.context.schedule_once(self._check_every, _CHECK, key="check")
        log.info("%s: Lark app %s ready (%s)", self.host.bot_id, name, self.config.mode)

    @property
    def _check_every(self) -> float:
        return max(self.config.stale_after / 4, 0.05)

    def _start_worker(self) -> None:
        # lark-oapi is imported only here: importing it takes seconds and about 100 MB (it
        # loads every API model), which a webhook bot never needs
        from callboard.adapters.lark.longconn import RUN, Link, LongConnWorker

        loop = self.loop
        assert loop is not None
        ref = self.ref
        link = self.link = Link(self.host.clock.now)

        def connected() -> None:
            loop.call_soon_threadsafe(ref.tell, _Connected(link))

        def report(error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the engine's loop is gone: nobody to tell
                loop.call_soon_threadsafe(ref.tell, _Ended(link, error))

        self.worker = LongConnWorker.start(
            self.host.bot_id,
            self.config.app_id,
            self.config.app_secret.get_secret_value(),
            self.config.base_url,
            link,
            self._deliver,
            connected,
            report,
        )
        self.worker.tell(RUN)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, _Connected | _Ended) and message.link is not self.link:
            return None  # from the worker of an instance this one replaced
        if isinstance(message, _Connected):
            self.host.set_connected(True, f"long connection as {self.adapter.bot_name or self.config.app_id}")
            return None
        if isinstance(message, _Ended):
            error = message.error or ConnectionFailed("the long connection stopped")
            self.host.set_connected(False, f"reconnecting: {error}")
            raise _connection_error(error)
        if message is _CHECK:
            link = self.link
            if link is not None:
                silent = self.host.clock.now() - link.last_frame
                if silent > self.config.stale_after:
                    self.host.set_connected(False, "reconnecting: the long connection went silent")
                    raise StaleConnection(f"no frame from Lark for {silent:.0f}s")
            self.context.schedule_once(self._check_every, _CHECK, key="check")
            return None
        raise TypeError(f"unexpected message {message!r}")

    async def on_stop(self) -> None:
        self.accepting = False
        worker, self.worker = self.worker, None
        if self.link is not None:
            self.link.request_stop()
        if worker is not None:
            await asyncio.to_thread(_join, worker)
        if self.pending:  # events already handed over still reach their sessions
            await asyncio.gather(*self.pending, return_exceptions=True)

    # ------------------------------------------------------------------ events

    async def _deliver(self, payload: bytes) -> Any:
        """On the SDK's loop: hand the event over and wait until it is stored."""
        loop = self.loop
        if not self.accepting or loop is None:
            raise ConnectionFailed("not accepting events now")
        future = asyncio.run_coroutine_threadsafe(self._take_bytes(payload), loop)
        # cancelled by a stop, or timed out: the store itself goes on (shielded); Lark redelivers
        return await asyncio.wait_for(asyncio.wrap_future(future), self.config.ack_timeout)

    async def _take_bytes(self, payload: bytes) -> Any:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.error("%s: Lark sent an event that is not JSON; answered as failed", self.host.bot_id)
            raise
        return await self.take(data)

    async def take(self, data: dict[str, Any]) -> dict[str, Any]:
        """Convert, store and route one delivery; resolves once it is committed."""
        task = asyncio.ensure_future(self._take(data))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        return await asyncio.shield(task)

    async def _take(self, data: dict[str, Any]) -> dict[str, Any]:
        adapter = self.adapter
        # deliveries are ingested in arrival order even when one's conversion looks
        # something up: each waits for the one before it to be handed to the engine
        before, turn = self.turn, asyncio.get_running_loop().create_future()
        self.turn = turn
        try:
            events = await adapter.converter.convert(data)
            if before is not None:
                await before
            batch = await self._ingest(events)
        finally:
            turn.set_result(None)
        seqs = await batch
        if adapter.bot_open_id is None and adapter.api.app_ticket and adapter.converter.last_tenant:
            try:
                await adapter.bot_info()
            except LarkAPIError as exc:
                log.warning("%s: cannot read the bot's identity yet: %s", self.host.bot_id, exc)
        welcome = self.config.bot_added_welcome
        if welcome:
            for event, seq in zip(events, seqs, strict=True):
                if seq is not None and isinstance(event, BotInvitedToGroup):
                    self._welcome(event, welcome)
        return {}

    async def _ingest(self, events: list[Event]) -> asyncio.Future[list[int | None]]:
        """Hand ``events`` to the engine. While its backlog is full, wait and offer them
        again (up to ``busy_wait``), holding back the deliveries behind them, so a busy
        engine slows Lark down instead of losing the order; then give up (``AdapterBusy``:
        the event is not answered, and Lark delivers it again)."""
        clock = self.host.clock
        limit = self.config.ack_timeout / 2 if self.config.mode == "ws" else WEBHOOK_BUSY_WAIT
        deadline = clock.now() + limit
        while True:
            batch = self.host.ingest(events)
            if not batch.done() or batch.cancelled() or not isinstance(batch.exception(), AdapterBusy):
                return batch
            busy = batch.exception()
            assert isinstance(busy, AdapterBusy)
            left = deadline - clock.now()
            if left <= 0 or not self.accepting:
                raise busy
            await sleep(clock, min(busy.retry_after, left))

    def _welcome(self, event: Event, text: str) -> None:
        assert isinstance(event, BotInvitedToGroup)
        send = self.adapter.send_message(
            "group", event.group.id, MessageChain.of(text), idempotency_key=f"welcome:{event.dedup_key}"
        )
        task = asyncio.ensure_future(send)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        task.add_done_callback(_log_failure(self.host.bot_id, event.group.id))

    # ------------------------------------------------------------------ webhook

    async def _on_webhook(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            return web.json_response({"msg": "not accepting events now"}, status=503)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"msg": "body too large"}, status=413)
        body = await request.read()
        token = self.config.verification_token
        assert token is not None
        key = self.config.encrypt_key
        opened = open_delivery(
            body,
            request.headers,
            verification_token=token.get_secret_value(),
            encrypt_key=key.get_secret_value() if key is not None else None,
        )
        if isinstance(opened, Rejected):
            if opened.status == 401:
                log.warning(
                    "%s: webhook from %s rejected: %s", self.host.bot_id, request.remote, opened.reason
                )
            return web.json_response({"msg": opened.reason}, status=opened.status)
        if isinstance(opened, Challenge):
            return web.json_response({"challenge": opened.challenge})
        try:
            answer = await self.take(opened.payload)
        except AdapterBusy as busy:  # nothing was stored; Lark retries later
            retry = str(max(1, round(busy.retry_after)))
            return web.json_response({"msg": str(busy)}, status=429, headers={"Retry-After": retry})
        except Exception as exc:
            log.error("%s: could not store a Lark event: %r", self.host.bot_id, exc)
            return web.json_response({"msg": "could not store the event; retry"}, status=500)
        return web.json_response(answer)


def _join(worker: pykka.ActorRef[Any]) -> None:
    try:
        worker.stop(block=True, timeout=15)
    except pykka.ActorDeadError:
        pass
    except pykka.Timeout:
        log.error("the Lark long-connection thread did not stop within 15 s; left behind")


def _log_failure(bot_id: str, group: str) -> Any:
    def done(task: asyncio.Future[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: the welcome message to %s failed: %s", bot_id, group, task.exception())

    return done


def _connection_error(error: BaseException) -> Exception:
    if isinstance(error, AdapterAuthError | ConnectionFailed):
        return error
    return ConnectionFailed(f"long connection: {type(error).__name__}: {error}")
