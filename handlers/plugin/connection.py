"""The host side of one runner's connection: the one-time token handshake, the
plugins' registration, then the runner's calls (to the hub) and its log
batches (into ``callboard.plugin.<name>`` loggers)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

from callboard.engine.plugin_protocol import PROTOCOL_VERSION, Action, Code, RemoteError
from callboard.handlers.plugin.config import PluginSpec
from callboard.handlers.plugin.hub import PluginHub

log = logging.getLogger("callboard.plugins")


class HandshakeRefused(Exception):
    """A peer on the runner's socket did not present the session token."""


class LogBridge:
    """Replays a runner's log records into the host's loggers, at most
    ``rate`` records a second (the rest are counted and reported), so a plugin
    flooding its log cannot flood the engine's."""

    def __init__(self, runner: str, plugins: list[str], rate: int) -> None:
        self.runner = runner
        self.plugins = set(plugins)
        self.rate = float(rate)
        self.tokens = float(rate)
        self.updated = time.monotonic()
        self.dropped = 0
        self.reported = 0.0
        self.written = 0

    def logger_for(self, name: str) -> tuple[logging.Logger, str]:
        """``plugin.<name>...`` records go to ``callboard.plugin.<name>...``; others
        (the runner's libraries) to the runner's logger, with their origin in front."""
        if name.startswith("plugin."):
            return logging.getLogger(f"callboard.{name}"), ""
        return logging.getLogger(f"callboard.plugin.{self.runner}"), f"[{name}] "

    def write(self, entries: list[dict[str, Any]], dropped: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        for entry in entries:
            if self.tokens < 1:
                self.dropped += 1
                continue
            self.tokens -= 1
            logger, prefix = self.logger_for(str(entry.get("name", "")))
            level = int(entry.get("level", logging.INFO))
            if not logger.isEnabledFor(level):
                continue
            message = prefix + str(entry.get("message", ""))
            if entry.get("exc"):
                message += "\n" + str(entry["exc"])
            record = logger.makeRecord(logger.name, level, "(plugin)", 0, message, (), None)
            record.created = float(entry.get("created", record.created))
            logger.handle(record)
            self.written += 1
        self.dropped += dropped
        if self.dropped and now - self.reported >= 1.0:
            self.reported = now
            logging.getLogger(f"callboard.plugin.{self.runner}").warning(
                "%d log records dropped (the runner's buffer or the host's %d/s limit was full)",
                self.dropped,
                int(self.rate),
            )
            self.dropped = 0


class RunnerConnection:
    """Serves one runner: ``hello`` must carry the token (checked once; any
    attempt uses it up), then ``ready`` registers the plugins."""

    def __init__(
        self, hub: PluginHub, runner: str, token: str, specs: list[PluginSpec], log_level: int
    ) -> None:
        self.hub = hub
        self.runner = runner
        self._token = token
        self.specs = specs
        self.log_level = log_level
        loop = asyncio.get_running_loop()
        self.hello: asyncio.Future[int] = loop.create_future()
        self.ready: asyncio.Future[list[dict[str, Any]]] = loop.create_future()
        self.logs = LogBridge(runner, [s.name for s in specs], hub.settings.log_rate)

    async def on_request(self, action: str, data: dict[str, Any]) -> Any:
        if action == Action.HELLO:
            return self._hello(data)
        if not self.hello.done() or self.hello.exception() is not None:
            raise RemoteError(Code.UNAUTHORIZED, "handshake first")
        if action == Action.READY:
            if not self.ready.done():
                self.ready.set_result(list(data.get("plugins") or []))
            return {"ok": True}
        if action == Action.LOG_BATCH:
            self.logs.write(list(data.get("entries") or []), int(data.get("dropped") or 0))
            return None
        return await self.hub.serve(self.runner, action, data)

    def _hello(self, data: dict[str, Any]) -> dict[str, Any]:
        token, self._token = self._token, ""  # one attempt, right or wrong
        offered = str(data.get("token", ""))
        if not token or not hmac.compare_digest(offered.encode(), token.encode()):
            error = HandshakeRefused(
                f"runner {self.runner}: handshake refused (wrong or reused session token)"
            )
            if not self.hello.done():
                self.hello.set_exception(error)
            log.error("%s", error)
            raise RemoteError(Code.UNAUTHORIZED, "handshake refused: wrong or reused session token")
        if data.get("protocol") != PROTOCOL_VERSION:
            error = HandshakeRefused(
                f"runner {self.runner}: protocol {data.get('protocol')!r} is not {PROTOCOL_VERSION}"
            )
            self.hello.set_exception(error)
            raise RemoteError(Code.BAD_REQUEST, str(error))
        self.hello.set_result(int(data.get("pid", 0)))
        settings = self.hub.settings
        return {
            "plugins": [spec.wire() for spec in self.specs],
            "settings": {
                "call_timeout": settings.call_timeout,
                "log_queue": settings.log_queue,
                "log_batch": settings.log_batch,
                "log_interval": settings.log_interval,
                "log_level": self.log_level,
            },
        }
