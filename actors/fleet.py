"""FleetActor: the root of the bots; applies a changed fleet file without
touching the bots that did not change.

A crash in one bot never reaches another: each bot restarts on its own (at
most 3 times a minute), a bot whose credentials are rejected stops with a
clear log line, and nothing escalates to the fleet.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callboard.actors.bot import BotActor
from callboard.actors.config import BotConfig, FleetConfig
from callboard.actors.http import HttpServer
from callboard.actors.messages import Ping
from callboard.actors.plugin_container import PluginContainers
from callboard.actors.plugins import ApplyPlugins, PluginSupervisor
from callboard.actors.runtime import FleetStats, SandboxFactory
from callboard.actors.sandbox import sandbox_factory, spawn_sandbox_manager
from callboard.actors.sandbox_admin import add_sandbox_routes
from callboard.adapters.base import AdapterAuthError
from callboard.engine.actor import Actor
from callboard.engine.journal_store import JournalStore
from callboard.engine.ref import ActorRef
from callboard.engine.sandbox_api import SandboxTools
from callboard.engine.signals import Terminated
from callboard.engine.supervision import Directive, SupervisorStrategy, decider_from_mapping
from callboard.handlers.plugin.hub import PluginHub
from callboard.handlers.routing import HANDLER_TYPES
from callboard.sandbox.config import SandboxSettings

log = logging.getLogger("callboard.fleet")

BOT_STRATEGY = SupervisorStrategy(
    decider=decider_from_mapping({AdapterAuthError: Directive.STOP}),
    max_restarts=3,
    within_seconds=60.0,
    escalate_on_limit=False,
)

PRUNE_EVERY = 3600.0

#: the plugin supervisor only fails on a bug of its own (each runner has its own
#: strategy): restart it, never take the bots down with it
PLUGINS_STRATEGY = SupervisorStrategy(max_restarts=3, within_seconds=60.0, escalate_on_limit=False)


@dataclass
class ApplyConfig:
    """Reload: bring the running bots in line with ``config``."""

    config: FleetConfig


@dataclass
class ReloadResult:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)


class Ready:
    """Ask: answered with the running bots' ids once each has started (or
    failed to start, which is logged)."""

    __slots__ = ()


class _Prune:
    __slots__ = ()


def handler_sandboxes(manager: ActorRef | None, bot: BotConfig) -> SandboxFactory | None:
    """Sandbox tools per handler kind, so ``sandbox.exec_handlers`` can tell them apart;
    None when the bot has no sandbox (a session then skips the lookup on every run)."""
    if manager is None or not bot.sandbox.enabled:
        return None
    kinds = {kind: sandbox_factory(manager, bot.sandbox, bot.id, handler=kind) for kind in HANDLER_TYPES}

    def build(chat_type: str, chat_id: str, thread: str, user_id: str, kind: str) -> SandboxTools | None:
        return kinds[kind](chat_type, chat_id, thread, user_id)

    return build


class FleetActor(Actor):
    def __init__(
        self,
        config: FleetConfig,
        journal: JournalStore,
        http: HttpServer,
        stats: FleetStats,
    ) -> None:
        self.config = config
        self.journal = journal
        self.http = http
        self.stats = stats
        self.sandbox: ActorRef | None = None
        self.plugin_hub = PluginHub(config.plugin_runtime)
        self.plugins: ActorRef | None = None
        self.bots: dict[str, ActorRef] = {}
        self.bot_configs: dict[str, BotConfig] = {}
        self.respawn: dict[str, BotConfig] = {}

    async def on_start(self) -> None:
        # Spawned first, so it stops last: bots flushing their bursts can still use it.
        self.sandbox = spawn_sandbox_manager(
            self.context, self.config.name, self._sandbox_settings(), audit=self.journal
        )
        add_sandbox_routes(self.http, self.sandbox, self.journal)
        self.plugins = self.context.spawn(
            PluginSupervisor,
            "plugins",
            self.config.plugins,
            self.config.plugin_runtime,
            self.plugin_hub,
            self.http,
            self._plugin_containers(),
            supervisor=PLUGINS_STRATEGY,
        )
        for bot in self.config.bots:
            if bot.enabled:
                self._spawn(bot)
        self.context.schedule_once(60.0, _Prune(), key="prune")

    def _plugin_containers(self) -> PluginContainers | None:
        """Where ``isolation: container`` runners go: the fleet's sandbox engine and image."""
        settings = self._sandbox_settings()
        return None if settings is None else PluginContainers(self.config.name, settings)

    def _sandbox_settings(self) -> SandboxSettings | None:
        settings = self.config.sandbox
        if settings is None or not settings.enabled:
            return None
        if settings.workspace_dir is None:  # workspace images live next to the journal by default
            folder = Path(os.path.abspath(self.journal.path)).parent / "workspaces"
            settings = settings.model_copy(update={"workspace_dir": str(folder)})
        return settings

    def _spawn(self, bot: BotConfig) -> None:
        factory = handler_sandboxes(self.sandbox, bot)
        ref = self.context.spawn(
            BotActor,
            bot.id,
            bot,
            self.journal,
            self.http,
            self.stats,
            factory,
            self.plugin_hub,
            supervisor=BOT_STRATEGY,
        )
        self.context.watch(ref)
        self.bots[bot.id] = ref
        self.bot_configs[bot.id] = bot

    async def receive(self, message: Any) -> Any:
        if isinstance(message, ApplyConfig):
            return self._apply(message.config)
        if isinstance(message, Terminated):
            bot_id = message.ref.name
            if self.bots.get(bot_id) is message.ref:
                del self.bots[bot_id]
                self.bot_configs.pop(bot_id, None)
                if isinstance(message.reason, BaseException):
                    log.error("bot %s stopped: %r", bot_id, message.reason)
            again = self.respawn.pop(bot_id, None)
            if again is not None:
                self._spawn(again)
            return None
        if isinstance(message, _Prune):
            try:
                counts = await self.journal.prune()
                if any(counts.values()):
                    log.info("journal retention: removed %s", counts)
            except Exception:
                log.exception("journal pruning failed")
            self.context.schedule_once(PRUNE_EVERY, _Prune(), key="prune")
            return None
        if isinstance(message, Ready):
            for ref in list(self.bots.values()):
                try:
                    await ref.ask(Ping(), timeout=30)
                except Exception as exc:
                    log.error("bot %s did not start: %r", ref.name, exc)
            return sorted(self.bots)
        raise TypeError(f"unexpected message {message!r}")

    def _apply(self, new: FleetConfig) -> ReloadResult:
        result = ReloadResult()
        if new.engine != self.config.engine:
            result.restart_needed.append("engine")
        if new.sandbox != self.config.sandbox:
            result.restart_needed.append("sandbox")
        if new.plugin_runtime != self.config.plugin_runtime:
            result.restart_needed.append("plugin_runtime")
        if new.plugins != self.config.plugins and self.plugins is not None:
            self.plugins.tell(ApplyPlugins(tuple(new.plugins)))
        wanted = {bot.id: bot for bot in new.bots if bot.enabled}
        for bot_id in list(self.bots):
            if bot_id not in wanted:
                self.bots[bot_id].stop()
                self.respawn.pop(bot_id, None)
                result.removed.append(bot_id)
        for bot_id, bot in wanted.items():
            current = self.bot_configs.get(bot_id)
            if current is None and bot_id not in self.respawn:
                self._spawn(bot)
                result.added.append(bot_id)
            elif current == bot:
                result.unchanged.append(bot_id)
            else:
                self.respawn[bot_id] = bot  # spawned again once the old one has stopped
                if bot_id in self.bots:
                    self.bots[bot_id].stop()
                result.changed.append(bot_id)
        self.config = new.model_copy(
            update={
                "engine": self.config.engine,
                "sandbox": self.config.sandbox,
                "plugin_runtime": self.config.plugin_runtime,
            }
        )
        log.info(
            "reload: added %s, removed %s, changed %s, unchanged %s%s",
            result.added,
            result.removed,
            result.changed,
            result.unchanged,
            f"; restart needed for {result.restart_needed}" if result.restart_needed else "",
        )
        return result
