"""PluginSupervisor (the fleet's ``plugins`` actor): one ``RunnerHost`` per
runner process, and hot reload.

Each runner restarts on its own under ``RUNNER_STRATEGY``: at most
``max_restarts`` in ``restart_window`` with exponential backoff between them;
past that it stops, its plugins are marked stopped (their events fail fast
and are recorded as failed runs) and nothing escalates to the fleet: a bad
plugin never takes a bot down. Reloading one plugin (its files changed, the
fleet file was reloaded, or ``POST /api/plugins/reload``) touches only that
plugin: its runner loads its files afresh or takes its new config values.
With container runners configured, containers a dead engine of this machine
left behind are removed at start (``plugin_container.sweep_strays``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from callboard.actors.http import HttpServer
from callboard.actors.plugin_container import PluginContainers, sweep_strays
from callboard.actors.plugin_runner import PushConfig, ReloadPlugin, RunnerHost
from callboard.engine.actor import Actor
from callboard.engine.errors import ActorDeadError
from callboard.engine.ref import ActorRef
from callboard.engine.sandbox_api import SandboxError
from callboard.engine.signals import Terminated
from callboard.engine.supervision import Backoff, SupervisorStrategy
from callboard.handlers.plugin.config import PluginRuntimeConfig, PluginSpec
from callboard.handlers.plugin.hub import PluginHub
from callboard.handlers.plugin.manifest import files_mtime

log = logging.getLogger("callboard.plugins")

#: the admin API's owner: engine-owned paths pass the admin check (bearer token)
OWNER = "engine"


def runner_strategy(settings: PluginRuntimeConfig) -> SupervisorStrategy:
    """A crashing runner comes back with backoff; one that keeps crashing is
    given up on (its plugins stop) without failing the fleet."""
    return SupervisorStrategy(
        max_restarts=settings.max_restarts,
        within_seconds=settings.restart_window,
        backoff=Backoff(min=settings.backoff_min, max=settings.backoff_max, factor=2.0, jitter=0.2),
        escalate_on_limit=False,
    )


@dataclass(frozen=True, slots=True)
class ApplyPlugins:
    """The fleet file was reloaded: bring the plugins in line with ``specs``."""

    specs: tuple[PluginSpec, ...]


@dataclass(frozen=True, slots=True)
class Reload:
    """Reload one plugin now (the admin API)."""

    name: str


class _Watch:
    __slots__ = ()


class PluginSupervisor(Actor):
    def __init__(
        self,
        specs: Sequence[PluginSpec],
        settings: PluginRuntimeConfig,
        hub: PluginHub,
        http: HttpServer,
        containers: PluginContainers | None = None,
    ) -> None:
        self.specs = tuple(specs)
        self.containers = containers
        self.settings = settings
        self.hub = hub
        self.http = http
        self.strategy = runner_strategy(settings)
        self.hosts: dict[str, ActorRef] = {}
        self.respawn: set[str] = set()
        self.mtimes: dict[str, float] = {}

    async def on_start(self) -> None:
        self.hub.configure(self.specs)
        self.mtimes = {s.name: files_mtime(s.root) for s in self.specs}
        if self.containers is not None and any(s.isolation == "container" for s in self.specs):
            try:
                removed = await asyncio.to_thread(sweep_strays, self.containers)
            except SandboxError as exc:  # the runners' own starts say so again, and retry
                log.warning("plugin containers of a previous engine not swept: %s", exc)
            else:
                if removed:
                    log.warning("removed plugin containers a dead engine left: %s", ", ".join(removed))
        for runner in self.hub.runners:
            self._spawn(runner)
        self._routes()
        if self.settings.watch:
            self._arm_watch()

    def _arm_watch(self) -> None:
        with contextlib.suppress(ActorDeadError):  # stopping: nothing more to watch
            self.context.schedule_once(self.settings.watch_interval, _Watch(), key="watch")

    def _spawn(self, runner: str) -> None:
        ref = self.context.spawn(
            RunnerHost, runner, runner, self.hub, self.settings, self.containers, supervisor=self.strategy
        )
        self.context.watch(ref)
        self.hosts[runner] = ref

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Terminated):
            runner = message.ref.name
            if self.hosts.get(runner) is message.ref:
                del self.hosts[runner]
                if isinstance(message.reason, BaseException):
                    log.error("plugin runner %s stopped for good: %s", runner, message.reason)
                    self.hub.detach(runner, None, gone=True, reason=str(message.reason))
            if runner in self.respawn and runner in self.hub.runners:
                self.respawn.discard(runner)
                self._spawn(runner)
            return None
        if isinstance(message, Reload):
            return await self._reload(message.name)
        if isinstance(message, ApplyPlugins):
            return await self._apply(message.specs)
        if isinstance(message, _Watch):
            await self._check_files()
            self._arm_watch()
            return None
        raise TypeError(f"unexpected message {message!r}")

    async def _reload(self, name: str) -> dict[str, Any]:
        entry = self.hub.plugins.get(name)
        if entry is None:
            raise LookupError(f"no plugin named {name!r}")
        runner = entry.spec.runner_name
        host = self.hosts.get(runner)
        if host is None:  # given up on after too many restarts: a reload starts it again
            self.hub.runners[runner].gone = False
            entry.status = "starting"
            entry.loaded.clear()
            self._spawn(runner)
            return entry.info()
        self.mtimes[name] = files_mtime(entry.spec.root)
        info: dict[str, Any] = await host.ask(ReloadPlugin(name), timeout=self.settings.start_timeout + 5)
        return info

    async def _check_files(self) -> None:
        for name, entry in list(self.hub.plugins.items()):
            mtime = files_mtime(entry.spec.root)
            if mtime > self.mtimes.get(name, 0.0):
                log.info("plugin %s: files changed; reloading it", name)
                try:
                    await self._reload(name)
                except Exception as exc:
                    log.error("plugin %s: reload failed: %s", name, exc)

    async def _apply(self, specs: Sequence[PluginSpec]) -> dict[str, list[str]]:
        old = {s.name: s for s in self.specs if s.enabled}
        new = {s.name: s for s in specs if s.enabled}
        result: dict[str, list[str]] = {
            "added": [],
            "removed": [],
            "reloaded": [],
            "config": [],
            "unchanged": [],
        }
        moved = {n for n in old.keys() & new.keys() if _runner_key(old[n]) != _runner_key(new[n])}
        changed_runners = {old[n].runner_name for n in old.keys() - new.keys() | moved}
        changed_runners |= {new[n].runner_name for n in new.keys() - old.keys() | moved}
        self.specs = tuple(specs)
        self.hub.configure(self.specs)
        for runner in changed_runners:  # membership changed: that runner starts afresh
            ref = self.hosts.get(runner)
            if ref is not None:
                self.respawn.add(runner)
                ref.stop()
            elif runner in self.hub.runners:
                self._spawn(runner)
        for name, spec in new.items():
            if name not in old:
                result["added"].append(name)
                self.mtimes[name] = files_mtime(spec.root)
                continue
            if spec.runner_name in changed_runners:
                result["reloaded"].append(name)
                continue
            host = self.hosts.get(spec.runner_name)
            files_changed = files_mtime(spec.root) > self.mtimes.get(name, 0.0)
            code_changed = (old[name].path, old[name].package, old[name].manifest) != (
                spec.path,
                spec.package,
                spec.manifest,
            )
            if host is not None and (files_changed or code_changed):
                await self._reload(name)
                result["reloaded"].append(name)
            elif host is not None and old[name].config != spec.config:
                await host.ask(PushConfig(name), timeout=self.settings.call_timeout + 5)
                result["config"].append(name)
            else:
                result["unchanged"].append(name)
        result["removed"] = sorted(old.keys() - new.keys())
        log.info("plugins reloaded: %s", {k: v for k, v in result.items() if v})
        return result

    # ------------------------------------------------------------------ admin API

    def _routes(self) -> None:
        async def listing(request: web.Request) -> web.StreamResponse:
            return web.json_response(self.hub.info())

        async def reload(request: web.Request) -> web.StreamResponse:
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"error": 'send JSON: {"plugin": "<name>"}'}, status=400)
            name = body.get("plugin") if isinstance(body, dict) else None
            if not isinstance(name, str) or name not in self.hub.plugins:
                return web.json_response(
                    {"error": f"unknown plugin; configured: {sorted(self.hub.plugins)}"}, status=404
                )
            try:
                info = await self.ref.ask(Reload(name), timeout=self.settings.start_timeout + 10)
            except Exception as exc:
                return web.json_response({"error": f"reload failed: {exc}"}, status=500)
            return web.json_response(info)

        self.http.add("GET", "/api/plugins", listing, owner=OWNER)
        self.http.add("POST", "/api/plugins/reload", reload, owner=OWNER)


def _runner_key(spec: PluginSpec) -> tuple[object, ...]:
    """What a plugin's runner is started with: a change restarts the runner. A container
    runner mounts its plugins' folders at start, so for it the folder counts too."""
    key: tuple[object, ...] = (spec.runner_name, spec.memory_limit, spec.isolation, spec.sandbox_profile)
    return (*key, spec.path, spec.package) if spec.isolation == "container" else key
