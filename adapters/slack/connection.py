"""SocketModeConnection: one bot's Socket Mode websocket, through slack_sdk.

Start: auth.test (who the bot is; a refused bot token stops the bot), then
apps.connections.open with the app token (refused: stops the bot too), then
slack_sdk's aiohttp ``SocketModeClient`` connects to the URL it returned.

Each envelope (``events_api``, ``interactive``, ``slash_commands``) is
converted and handed to the journal; the envelope is acknowledged only once
its events are committed, so an envelope Slack never saw acknowledged is
delivered again and the journal drops what it already holds. The SDK runs
each received frame's listeners in a task of its own, in arrival order, and
our listener calls ``ingest`` before its first suspension, so events reach
the journal in the order Slack sent them while commits and acks overlap.
When the engine's backlog is full (``AdapterBusy``) nothing is stored and the
envelope stays unacknowledged: Slack sends it again later.

Health is freshness, not socket state: every ``ping_interval`` the actor asks
the SDK whether the session is alive (open, and a pong within four pings);
down at two checks in a row fails this actor and the bot's supervisor
reconnects with backoff, never giving up. Slack's own ``disconnect``
(refresh) messages are followed by the SDK, which closes the old socket
before opening the new one. Stop before start: ``on_stop`` closes the client
(socket, tasks, HTTP session) before a restarted instance opens its own; a
frame from a replaced client is ignored (fenced).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.web.async_client import AsyncWebClient

from callboard.adapters.base import AdapterAuthError, AdapterBusy
from callboard.adapters.slack.convert import Converter
from callboard.adapters.slack.errors import ConnectionFailed, SlackAPIError, connection_error
from callboard.adapters.slack.inbound import KINDS, events_of, ingest, revoked
from callboard.adapters.slack.request import SlackWeb
from callboard.engine.actor import Actor

if TYPE_CHECKING:
    from callboard.adapters.slack.adapter import SlackAdapter

log = logging.getLogger("callboard.slack")
#: the SDK's own logger says every reconnect at INFO; ours says what matters
_SDK_LOG = logging.getLogger("callboard.slack.sdk")


#: seconds between two "engine busy" log lines
BUSY_LOG_EVERY = 5.0


class _Check:
    __slots__ = ()

    def __repr__(self) -> str:
        return "_Check()"


_CHECK = _Check()


class _Revoked:
    """Listener -> actor: Slack said the app's tokens are gone."""

    __slots__ = ("client", "event_type")

    def __init__(self, client: object, event_type: str) -> None:
        self.client = client
        self.event_type = event_type


class StaleConnection(ConnectionFailed):
    """The SDK reports the socket down (closed, or no pong) at two checks in a row."""


class SocketModeConnection(Actor):
    def __init__(self, adapter: SlackAdapter) -> None:
        self.adapter = adapter
        self.host = adapter.host
        self.config = adapter.slack_config
        self.client: SocketModeClient | None = None
        self.converter: Converter | None = None
        self.down_checks = 0
        self.pending: set[asyncio.Future[Any]] = set()
        self.envelopes = 0
        self.refused = 0  # envelopes left unacknowledged because the engine was busy
        self.busy_logged = float("-inf")

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        try:
            await self._connect()
        except Exception as exc:
            self.host.set_connected(False, f"cannot connect: {exc}")
            client, self.client = self.client, None
            if client is not None:  # half-open: the SDK would keep reconnecting in the background
                await client.close()  # type: ignore[no-untyped-call]
            raise

    async def _connect(self) -> None:
        config = self.config
        assert config.app_token is not None
        token = config.app_token.get_secret_value()
        try:
            self.converter = await self.adapter.converter()
            app = SlackWeb(token, config.base_url, config.request_timeout, self.host.clock, paced=False)
            try:
                opened = await app.call(
                    "apps.connections.open", lambda c: c.apps_connections_open(app_token=token)
                )
            finally:
                await app.close()
        except SlackAPIError as exc:
            raise connection_error(exc, self.host.bot_id) from None
        url = opened.get("url")
        if not isinstance(url, str):
            raise ConnectionFailed("apps.connections.open returned no websocket URL")
        client = SocketModeClient(
            app_token=token,
            logger=_SDK_LOG,
            web_client=AsyncWebClient(
                base_url=config.base_url, timeout=int(max(1, config.request_timeout)), retry_handlers=[]
            ),
            auto_reconnect_enabled=False,
            ping_interval=config.ping_interval,
        )
        client.wss_uri = url
        client.message_listeners.append(self._on_frame)
        self.client = client
        try:
            # the SDK retries a failing connect forever at a fixed pace: bound it, and let
            # the supervisor's backoff decide when to try again
            await asyncio.wait_for(client.connect(), timeout=config.request_timeout)  # type: ignore[no-untyped-call]
        except TimeoutError:
            raise ConnectionFailed(
                f"the Socket Mode websocket did not open within {config.request_timeout:.0f}s"
            ) from None
        self.context.schedule_once(config.ping_interval, _CHECK, key="check")
        me = self.converter.me
        self.host.set_connected(True, f"socket mode as @{me.name or me.user_id}")
        log.info("%s: connected to Slack (socket mode) as %s in %s", self.host.bot_id, me.user_id, me.team_id)

    async def receive(self, message: Any) -> Any:
        if message is _CHECK:
            await self._check()
            self.context.schedule_once(self.config.ping_interval, _CHECK, key="check")
            return None
        if isinstance(message, _Revoked):
            if message.client is not self.client:
                return None
            raise AdapterAuthError(
                f"bot {self.host.bot_id!r}: Slack sent {message.event_type}: the app was uninstalled or its "
                "tokens revoked; reinstall the app and update bot_token"
            )
        raise TypeError(f"unexpected message {message!r}")

    async def _check(self) -> None:
        client = self.client
        if client is not None and await client.is_connected():
            if self.down_checks:
                self.host.set_connected(True, "socket mode")
            self.down_checks = 0
            return
        self.down_checks += 1
        if self.down_checks >= 2:
            self.host.set_connected(False, "reconnecting: the Socket Mode websocket went silent")
            raise StaleConnection("the Socket Mode websocket is closed or stopped answering pings")

    async def on_stop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]
        if self.pending:  # events already in the journal still reach their sessions
            await asyncio.gather(*self.pending, return_exceptions=True)

    # ------------------------------------------------------------------ frames

    async def _on_frame(
        self, client: AsyncBaseSocketModeClient, frame: dict[str, Any], raw: str | None
    ) -> None:
        """One frame from Slack. Runs without suspending up to ``ingest``, so the
        order of ``ingest`` calls is the order frames arrived in."""
        if client is not self.client or self.converter is None:
            return  # a replaced client's frame: fenced
        kind = frame.get("type")
        envelope_id = frame.get("envelope_id")
        if kind not in KINDS or not isinstance(envelope_id, str):
            return  # hello, or a frame the SDK already acted on
        payload = frame.get("payload")
        if not isinstance(payload, dict):
            log.warning("%s: Socket Mode envelope without a payload; acknowledged", self.host.bot_id)
            await self._ack(client, envelope_id)
            return
        self.envelopes += 1
        events = events_of(self.converter, str(kind), payload)
        stored = ingest(self.host, events)
        self.pending.add(stored)
        gone = revoked(str(kind), payload)
        try:
            await asyncio.shield(stored)
        except AdapterBusy as exc:
            self.refused += 1
            now = self.host.clock.now()
            if now >= self.busy_logged + BUSY_LOG_EVERY:  # one line per burst, not one per envelope
                self.busy_logged = now
                log.warning(
                    "%s: engine busy (%s); envelopes left unacknowledged (%d so far), Slack redelivers them",
                    self.host.bot_id,
                    exc,
                    self.refused,
                )
            return
        except Exception as exc:
            log.error(
                "%s: could not store Slack envelope %s: %r; not acknowledged, Slack will redeliver it",
                self.host.bot_id,
                envelope_id,
                exc,
            )
            return
        finally:
            self.pending.discard(stored)
        await self._ack(client, envelope_id)
        if gone is not None:
            self.ref.tell(_Revoked(client, gone))

    async def _ack(self, client: AsyncBaseSocketModeClient, envelope_id: str) -> None:
        if client is not self.client:
            return  # closed: Slack redelivers to the next connection, and the journal drops the copy
        try:
            await client.send_message(orjson.dumps({"envelope_id": envelope_id}).decode())
        except Exception as exc:  # the socket went: the envelope comes again
            log.warning("%s: could not acknowledge envelope %s: %r", self.host.bot_id, envelope_id, exc)
