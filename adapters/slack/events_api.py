"""EventsApiConnection: Slack posts events and interactions to this engine.

The request URL is ``/slack/<bot id>/events`` on the engine's HTTP server, for
Event Subscriptions, Interactivity and slash commands alike. Each request's
v0 signature is verified before anything else is read into an event: a bad or
stale one gets 401 and touches nothing. ``url_verification`` is answered with
its challenge. Otherwise the payload is converted and journaled, and the
answer is 200 only once the events are committed (well within Slack's 3 s);
a failed store answers 500 and a full backlog (``AdapterBusy``) 429, so Slack
retries. Slack's retries (``X-Slack-Retry-Num``) carry the same event_id and
message ts, which the journal recognises, so a retried event is acknowledged
and not handled again.

There is no socket to watch, so health is the token's: auth.test at start and
every ``token_check_interval`` (a refused token stops the bot with a clear
error; Slack unreachable marks the connection down until it answers again),
and Slack's ``app_uninstalled``/``tokens_revoked`` events stop the bot too.
Stop before start: ``accepting`` goes false in ``on_stop`` (a late request
gets 503 and Slack retries it), and the route stays with the bot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from callboard.adapters.base import AdapterAuthError, AdapterBusy
from callboard.adapters.slack.convert import Converter
from callboard.adapters.slack.errors import SlackAPIError, connection_error
from callboard.adapters.slack.inbound import EVENTS, INTERACTIVE, SLASH_COMMANDS, events_of, ingest, revoked
from callboard.adapters.slack.signature import BadSignature, verify
from callboard.engine.actor import Actor

if TYPE_CHECKING:
    from callboard.adapters.slack.adapter import SlackAdapter

log = logging.getLogger("callboard.slack")

#: Slack's bodies are small; anything far larger is not Slack
MAX_BODY = 1024 * 1024


class _Revoked:
    __slots__ = ("event_type",)

    def __init__(self, event_type: str) -> None:
        self.event_type = event_type


class _CheckToken:
    __slots__ = ()

    def __repr__(self) -> str:
        return "_CheckToken()"


_CHECK_TOKEN = _CheckToken()


class EventsApiConnection(Actor):
    def __init__(self, adapter: SlackAdapter, wall: Callable[[], float] = time.time) -> None:
        self.adapter = adapter
        self.host = adapter.host
        self.config = adapter.slack_config
        assert self.config.signing_secret is not None
        self.secret = self.config.signing_secret.get_secret_value()
        self.wall = wall
        self.converter: Converter | None = None
        self.accepting = False
        self.requests = 0
        self.refused = 0
        self.status = ""

    @property
    def path(self) -> str:
        return f"/slack/{self.host.bot_id}/events"

    async def on_start(self) -> None:
        try:
            self.converter = await self.adapter.converter()
        except SlackAPIError as exc:
            error = connection_error(exc, self.host.bot_id)
            self.host.set_connected(False, f"cannot connect: {error}")
            raise error from None
        self.host.add_route("POST", self.path, self._on_request)
        self.accepting = True
        me = self.converter.me
        self.status = f"events api {self.path} as @{me.name or me.user_id}"
        self.host.set_connected(True, self.status)
        self.context.schedule_once(self.config.token_check_interval, _CHECK_TOKEN, key="token")
        log.info(
            "%s: Slack Events API on %s as %s in %s", self.host.bot_id, self.path, me.user_id, me.team_id
        )

    async def receive(self, message: Any) -> Any:
        if message is _CHECK_TOKEN:
            await self._check_token()
            self.context.schedule_once(self.config.token_check_interval, _CHECK_TOKEN, key="token")
            return None
        if isinstance(message, _Revoked):
            raise AdapterAuthError(
                f"bot {self.host.bot_id!r}: Slack sent {message.event_type}: the app was uninstalled or its "
                "tokens revoked; reinstall the app and update bot_token"
            )
        raise TypeError(f"unexpected message {message!r}")

    async def _check_token(self) -> None:
        try:
            await self.adapter.web.call("auth.test", lambda c: c.auth_test())
        except SlackAPIError as exc:
            error = connection_error(exc, self.host.bot_id)
            if isinstance(error, AdapterAuthError):
                self.host.set_connected(False, "stopped: Slack refused the bot token")
                raise error from None
            self.host.set_connected(False, f"Slack unreachable: {exc}")
            log.warning("%s: auth.test failed: %s", self.host.bot_id, exc)
            return
        self.host.set_connected(True, self.status)

    async def on_stop(self) -> None:
        self.accepting = False

    async def _on_request(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting or self.converter is None:
            return web.json_response({"ok": False, "error": "not accepting events now"}, status=503)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"ok": False, "error": "body too large"}, status=413)
        body = await request.read()
        try:
            verify(
                self.secret,
                request.headers.get("X-Slack-Request-Timestamp"),
                request.headers.get("X-Slack-Signature"),
                body,
                self.wall(),
            )
        except BadSignature as exc:
            self.refused += 1
            log.warning("%s: refused a Slack request from %s: %s", self.host.bot_id, request.remote, exc)
            return web.json_response({"ok": False, "error": str(exc)}, status=401)
        self.requests += 1
        try:
            kind, payload = _payload(request.content_type, body)
        except ValueError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        if kind == "url_verification":
            return web.json_response({"challenge": payload.get("challenge")})
        if kind == "ssl_check":  # Slack checking the certificate of a slash command's URL
            return web.Response(status=200)
        events = events_of(self.converter, kind, payload)
        stored = ingest(self.host, events)
        try:
            await asyncio.shield(stored)
        except AdapterBusy as exc:
            return web.json_response(
                {"ok": False, "error": f"busy: {exc}"},
                status=429,
                headers={"Retry-After": str(max(1, round(exc.retry_after)))},
            )
        except Exception as exc:
            log.error("%s: could not store a Slack %s request: %r", self.host.bot_id, kind, exc)
            return web.json_response({"ok": False, "error": "could not store the event; retry"}, status=500)
        gone = revoked(kind, payload)
        if gone is not None:
            self.ref.tell(_Revoked(gone))
        return web.Response(status=200)


def _payload(content_type: str, body: bytes) -> tuple[str, dict[str, Any]]:
    """(kind, payload): JSON for events; a form with ``payload`` for interactions,
    or the fields of a slash command."""
    if content_type == "application/json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ValueError("not a Slack event (a JSON object)")
        kind = data.get("type")
        if kind == "url_verification":
            return "url_verification", data
        if kind != "event_callback":
            raise ValueError(f"unknown Slack request type {str(kind)[:40]!r}")
        return EVENTS, data
    if content_type == "application/x-www-form-urlencoded":
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        if "payload" in form:
            try:
                data = orjson.loads(form["payload"])
            except orjson.JSONDecodeError:
                raise ValueError("the interaction payload is not valid JSON") from None
            if not isinstance(data, dict):
                raise ValueError("not a Slack interaction (a JSON object)")
            return INTERACTIVE, data
        if "command" in form:
            return SLASH_COMMANDS, form
        if "ssl_check" in form:
            return "ssl_check", form
        raise ValueError("a form without 'payload' or 'command'")
    raise ValueError(f"unsupported content type {content_type[:60]!r}")
