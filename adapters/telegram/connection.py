"""TelegramConnection: one bot's link to the Bot API, long polling or webhook.

Polling: one task loops on getUpdates. The updates of a batch are converted,
appended to the journal, and routed in order; only then does the next
getUpdates carry ``offset = last update_id + 1``, which is what confirms them
to Telegram. A crash before that re-reads the batch and the journal drops what
it already holds, so no update is lost and none is handled twice. Routing a
batch that reached the journal is never cut short: stopping waits for it.

Webhook: Telegram posts each update to ``/telegram/<bot id>/webhook`` on the
engine's server. The secret header is checked first; the answer is 200 only
once the update is in the journal, so anything else makes Telegram retry.

Failures (network, 5xx, garbled answers, a poll that stays silent for
``stale_after``) fail this actor and the bot's supervisor reconnects with
backoff; a rejected token raises ``AdapterAuthError``, which stops the bot.
Stop before start: on a restart this instance's ``on_stop`` closes its
poller and HTTP clients before the next instance's ``on_start`` opens new ones.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, Any

import orjson
import telegram as tg
from aiohttp import web
from telegram import error as tg_error

from callboard.adapters.telegram.convert import Converter
from callboard.adapters.telegram.errors import ConnectionFailed, connection_error, redact
from callboard.engine.actor import Actor
from callboard.engine.clock import sleep
from callboard.engine.events import Event
from callboard.engine.journal import StorageUnavailable
from callboard.engine.ref import ActorRef
from callboard.engine.supervision import Backoff

if TYPE_CHECKING:
    from callboard.adapters.telegram.adapter import TelegramAdapter

log = logging.getLogger("callboard.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Telegram's updates nest a few levels; anything this deep is hostile, not an update
MAX_UPDATE_DEPTH = 64
#: while the journal cannot write, a polled batch is offered again at this pace (the
#: offset does not move, so nothing is confirmed to Telegram meanwhile)
STORAGE_RETRY = Backoff(min=0.5, max=15.0, factor=2.0, jitter=0.2)
#: updates per getUpdates (Telegram's maximum)
BATCH = 100


class _Polled:
    """Poller -> actor: a getUpdates call answered (the connection is fresh)."""

    __slots__ = ("poller",)

    def __init__(self, poller: object) -> None:
        self.poller = poller


class _Failed:
    """Poller -> actor: the loop stopped on ``error``; fail so the supervisor reconnects."""

    __slots__ = ("error", "poller")

    def __init__(self, poller: object, error: BaseException) -> None:
        self.poller = poller
        self.error = error

    def __repr__(self) -> str:
        return f"_Failed({self.error!r})"


class _CheckWebhook:
    __slots__ = ()


_CHECK_WEBHOOK = _CheckWebhook()


class StaleConnection(ConnectionFailed):
    """No getUpdates answer for longer than any healthy poll takes."""


class TelegramConnection(Actor):
    def __init__(self, adapter: TelegramAdapter) -> None:
        self.adapter = adapter
        self.host = adapter.host
        self.config = adapter.tg_config
        self.bot: tg.Bot | None = None
        self.converter: Converter | None = None
        self.poller: asyncio.Task[None] | None = None
        self.batch: asyncio.Future[list[int | None]] | None = None
        self.offset: int | None = None
        self.accepting = False
        self.webhook_set = False

    @property
    def webhook_path(self) -> str:
        return f"/telegram/{self.host.bot_id}/webhook"

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        try:
            await self._connect()
        except Exception as exc:
            self.host.set_connected(False, f"cannot connect: {redact(str(exc))}")
            raise

    async def _connect(self) -> None:
        config = self.config
        bot = self.bot = self.adapter.make_bot(polling=True)
        await self._call("getMe", bot.initialize())
        me = bot.bot
        allowed = config.allowed_updates or []
        self.converter = Converter(self.host.bot_id, me, member_updates="chat_member" in allowed)
        if config.mode == "polling":
            info = await self._call("getWebhookInfo", bot.get_webhook_info())
            if info.url:
                log.warning("%s: a webhook was set for this bot; deleting it to poll", self.host.bot_id)
                await self._call("deleteWebhook", bot.delete_webhook())
            self.poller = asyncio.ensure_future(self._poll(bot, self.converter, self.ref))
            self.context.set_receive_timeout(config.stale_seconds)
            self.host.set_connected(True, f"polling as @{me.username}")
        else:
            self.context.schedule_once(config.webhook_check_interval, _CHECK_WEBHOOK, key="check")
            self.host.add_route("POST", self.webhook_path, self._on_webhook)
            self.accepting = True
            await self._set_webhook(bot)
            self.host.set_connected(True, f"webhook {self.webhook_path} as @{me.username}")
        log.info("%s: connected to Telegram as @%s (%s)", self.host.bot_id, me.username, config.mode)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, _Polled | _Failed) and message.poller is not self.poller:
            return None  # from the poller of an instance this one replaced (the mailbox is kept)
        if isinstance(message, _Polled):
            return None
        if isinstance(message, _Failed):
            self.host.set_connected(False, f"reconnecting: {redact(str(message.error))}")
            raise message.error
        if message is _CHECK_WEBHOOK:
            await self._check_webhook()
            self.context.schedule_once(self.config.webhook_check_interval, _CHECK_WEBHOOK, key="check")
            return None
        raise TypeError(f"unexpected message {message!r}")

    async def on_receive_timeout(self) -> None:
        self.host.set_connected(False, "reconnecting: getUpdates went silent")
        raise StaleConnection(f"getUpdates has not answered for {self.config.stale_seconds:.0f}s")

    async def on_stop(self) -> None:
        self.accepting = False
        poller, self.poller = self.poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        if self.batch is not None:  # events already in the journal still reach their sessions
            await asyncio.gather(self.batch, return_exceptions=True)
        bot, self.bot = self.bot, None
        if bot is None:
            return
        if self.webhook_set:
            try:
                await bot.delete_webhook()
            except tg_error.TelegramError as exc:
                log.warning("%s: deleteWebhook failed: %s", self.host.bot_id, redact(exc.message))
        await bot.shutdown()

    async def _call(self, method: str, call: Any) -> Any:
        try:
            return await call
        except tg_error.TelegramError as exc:
            raise connection_error(exc, method, self.host.bot_id) from None

    # ------------------------------------------------------------------ polling

    async def _poll(self, bot: tg.Bot, converter: Converter, ref: ActorRef) -> None:
        config = self.config
        allowed = config.allowed_updates
        me = asyncio.current_task()
        polled = _Polled(me)
        try:
            while True:
                try:
                    updates = await bot.get_updates(
                        offset=self.offset,
                        limit=BATCH,
                        timeout=int(config.poll_timeout),
                        allowed_updates=allowed,
                        read_timeout=config.request_timeout,
                    )
                except tg_error.TelegramError:
                    raise
                except Exception:  # PTB could not parse the batch: take it raw, update by update
                    log.error(
                        "%s: PTB could not parse a batch of updates; converting them one by one",
                        self.host.bot_id,
                    )
                    events, last = await self._raw_batch(bot, converter)
                else:
                    events = [event for update in updates for event in converter.convert(update)]
                    last = updates[-1].update_id if updates else None
                if last is not None:
                    await self._store(events)
                    self.offset = last + 1
                ref.tell(polled)
        except asyncio.CancelledError:
            raise
        except tg_error.TelegramError as exc:
            ref.tell(_Failed(me, connection_error(exc, "getUpdates", self.host.bot_id)))
        except Exception as exc:
            ref.tell(_Failed(me, exc))

    async def _store(self, events: list[Event]) -> None:
        """Ingest a polled batch; while the storage fails, wait and offer it again
        rather than fail the connection (whose restart backoff could outlast the
        outage by minutes). Events that did commit come back as duplicates."""
        attempt = 0
        while True:
            self.batch = self.host.ingest(events)
            try:
                await asyncio.shield(self.batch)
                return
            except StorageUnavailable as exc:
                delay = STORAGE_RETRY.delay(attempt)
                attempt += 1
                log.warning(
                    "%s: cannot store polled updates (%s); retry in %.1fs", self.host.bot_id, exc, delay
                )
            finally:
                self.batch = None
            await sleep(self.host.clock, delay)

    async def _raw_batch(self, bot: tg.Bot, converter: Converter) -> tuple[list[Event], int | None]:
        # Bot API method names are case-insensitive; spelt this way PTB does not
        # point us back to get_updates, which is what just failed to parse
        raw = await bot.do_api_request(
            "getupdates",
            api_kwargs={"offset": self.offset, "limit": BATCH, "timeout": 0},
            read_timeout=self.config.request_timeout,
        )
        events: list[Event] = []
        last = None
        for item in raw:
            last = item["update_id"]
            events.extend(self._convert_raw(bot, converter, item))
        return events, last

    @staticmethod
    def _convert_raw(bot: tg.Bot, converter: Converter, data: dict[str, Any]) -> list[Event]:
        try:
            update = tg.Update.de_json(data, bot)
        except Exception:
            log.exception("%s: PTB cannot parse update %s; kept raw", converter.bot_id, data.get("update_id"))
            return converter.unparsed(data)
        return converter.convert(update)

    # ------------------------------------------------------------------ webhook

    async def _set_webhook(self, bot: tg.Bot) -> None:
        config = self.config
        assert config.webhook_url is not None and config.secret_token is not None
        await self._call(
            "setWebhook",
            bot.set_webhook(
                config.webhook_url,
                secret_token=config.secret_token.get_secret_value(),
                allowed_updates=config.allowed_updates,
                max_connections=config.max_connections,
            ),
        )
        self.webhook_set = True

    async def _check_webhook(self) -> None:
        """Health for a webhook is Telegram's view of it: ours, and delivering."""
        assert self.bot is not None
        info = await self._call("getWebhookInfo", self.bot.get_webhook_info())
        if info.url != self.config.webhook_url:
            raise ConnectionFailed("the webhook was changed or removed outside callboard; setting it again")
        if info.last_error_message:
            detail = f"Telegram reports webhook errors: {redact(info.last_error_message)}"
            self.host.set_connected(False, detail)
            log.warning("%s: %s (%d updates pending)", self.host.bot_id, detail, info.pending_update_count)
        else:
            self.host.set_connected(True, f"webhook {self.webhook_path}")

    async def _on_webhook(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting or self.bot is None or self.converter is None:
            return web.json_response({"ok": False, "error": "not accepting updates now"}, status=503)
        secret = self.config.secret_token
        assert secret is not None
        given = request.headers.get(SECRET_HEADER, "")  # may hold undecodable bytes (as surrogates)
        if not hmac.compare_digest(
            given.encode("utf-8", "surrogatepass"), secret.get_secret_value().encode()
        ):
            log.warning(
                "%s: webhook call with a wrong secret token from %s", self.host.bot_id, request.remote
            )
            return web.json_response({"ok": False, "error": "wrong secret token"}, status=401)
        try:
            data = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"ok": False, "error": "the body is not valid JSON"}, status=400)
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.json_response(
                {"ok": False, "error": "not a Telegram update (an object with an integer update_id)"},
                status=400,
            )
        if _depth(data, MAX_UPDATE_DEPTH) > MAX_UPDATE_DEPTH:
            log.warning(
                "%s: update %d refused: nested more than %d levels",
                self.host.bot_id,
                data["update_id"],
                MAX_UPDATE_DEPTH,
            )
            return web.json_response(
                {"ok": False, "error": f"the update is nested more than {MAX_UPDATE_DEPTH} levels deep"},
                status=422,
            )
        events = self._convert_raw(self.bot, self.converter, data)
        batch = self.host.ingest(events)
        try:
            await asyncio.shield(batch)
        except Exception as exc:  # storage failing: Telegram redelivers on anything but 2xx
            log.error("%s: could not store update %d: %r", self.host.bot_id, data["update_id"], exc)
            return web.json_response(
                {"ok": False, "error": "could not store the update; retry"},
                status=503,
                headers={"Retry-After": "5"},
            )
        return web.json_response({"ok": True})


def _depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (lists and objects), counting no further than ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest
