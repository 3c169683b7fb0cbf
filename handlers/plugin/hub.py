"""The host's directory of plugins: which runner serves which plugin, their
listeners, the links that are up, and the dispatches in flight.

Runner host actors (in ``actors``) attach a link when their runner is ready
and detach it when it goes; the ``plugin`` handler plans an event's route
through the listeners and emits it over those links. An emit to a runner that
is restarting waits for it to come back (up to ``wait``), so an event that
arrives during a restart is handled after it rather than dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from callboard.engine.events import EVENT_TYPE_NAMES, Event, MessageReceived, encode_event
from callboard.engine.plugin_protocol import (
    Action,
    Code,
    Link,
    LinkClosed,
    ListenerInfo,
    RemoteError,
    command_args,
)
from callboard.handlers.context import HandlerContext, RunFailed
from callboard.handlers.plugin.bridge import Dispatch, PluginCounters, serve_call
from callboard.handlers.plugin.config import PluginRuntimeConfig, PluginSpec
from callboard.handlers.routing import type_matches

log = logging.getLogger("callboard.plugins")


class PluginUnavailable(Exception):
    """The plugin's runner is stopped for good (restart limit) or did not come back in time."""


class PluginRunFailed(RunFailed):
    """One or more listeners failed, timed out, or their runner died mid-event
    (logged where it happened: the run is recorded as failed without a traceback)."""


@dataclass(frozen=True, slots=True)
class Step:
    """Consecutive listeners of one plugin, in priority order: one emit."""

    plugin: str
    listeners: tuple[str, ...]
    idempotent: bool


class PluginEntry:
    def __init__(self, spec: PluginSpec, order: int) -> None:
        self.listeners: list[ListenerInfo] = []
        self.status = "starting"  # ready | failed (did not load) | stopped
        self.error = ""
        self.counters = PluginCounters()
        self.loaded = asyncio.Event()  # set once the plugin has (or could not have) registered
        self.use(spec, order)

    def use(self, spec: PluginSpec, order: int) -> None:
        """Take a (new) spec; what every event reads is copied out of it once, here."""
        self.spec = spec
        self.order = order
        self.name = spec.name
        self.runner = spec.runner_name
        self.capabilities = frozenset(spec.manifest.capabilities)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.spec.manifest.version,
            "description": self.spec.manifest.description,
            "runner": self.runner,
            "status": self.status,
            "error": self.error,
            "capabilities": sorted(self.capabilities),
            "events": sorted({e for listener in self.listeners for e in listener.events}),
            "listeners": [listener.model_dump() for listener in self.listeners],
            "counters": self.counters.as_dict(),
        }


class RunnerSlot:
    def __init__(self, name: str) -> None:
        self.name = name
        self.link: Link | None = None
        self.pid: int | None = None
        self.restarts = 0
        self.gone = False  # stopped for good: emits fail at once
        self.changed = asyncio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class PluginHub:
    def __init__(self, settings: PluginRuntimeConfig) -> None:
        self.settings = settings
        self.plugins: dict[str, PluginEntry] = {}
        self.runners: dict[str, RunnerSlot] = {}
        self.dispatches: dict[int, Dispatch] = {}
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ configuration (actors)

    def configure(self, specs: Sequence[PluginSpec]) -> None:
        """The plugins to serve; a kept plugin keeps its listeners and counters."""
        old = self.plugins
        self.plugins = {}
        for order, spec in enumerate(s for s in specs if s.enabled):
            entry = old.get(spec.name)
            if entry is None:
                entry = PluginEntry(spec, order)
            entry.use(spec, order)
            self.plugins[spec.name] = entry
            self.runners.setdefault(spec.runner_name, RunnerSlot(spec.runner_name))
        for name in list(self.runners):
            if not any(e.runner == name for e in self.plugins.values()):
                self.runners.pop(name).notify()

    def specs_of(self, runner: str) -> list[PluginSpec]:
        return [e.spec for e in self.plugins.values() if e.runner == runner]

    def attach(self, runner: str, link: Link, pid: int, registrations: list[dict[str, Any]]) -> None:
        slot = self.runners.setdefault(runner, RunnerSlot(runner))
        slot.link, slot.pid, slot.gone = link, pid, False
        for registration in registrations:
            self.registered(registration)
        slot.notify()

    def registered(self, registration: dict[str, Any]) -> None:
        """A plugin loaded (its listeners) or failed to load (its error)."""
        entry = self.plugins.get(str(registration.get("name")))
        if entry is None:
            return
        if registration.get("error"):
            entry.status, entry.listeners = "failed", []
            entry.error = _load_error(registration)
            log.error("plugin %s did not load: %s", entry.name, entry.error)
        else:
            listeners = [ListenerInfo.model_validate(x) for x in registration.get("listeners", [])]
            bad = [e for listener in listeners for e in listener.events if not _known_pattern(e)]
            if bad:
                entry.status, entry.listeners = "failed", []
                entry.error = (
                    f"listeners name unknown event types {bad}; known: {', '.join(EVENT_TYPE_NAMES)}"
                )
                log.error("plugin %s did not load: %s", entry.name, entry.error)
            else:
                entry.status, entry.error, entry.listeners = "ready", "", listeners
        entry.loaded.set()

    def detach(self, runner: str, link: Link | None, *, gone: bool = False, reason: str = "") -> None:
        slot = self.runners.get(runner)
        if slot is None:
            return
        if link is None or slot.link is link:
            slot.link, slot.pid = None, None
        if gone:
            slot.gone = True
            for entry in self.plugins.values():
                if entry.runner == runner:
                    entry.status = "stopped"
                    entry.error = reason
                    entry.loaded.set()
        slot.notify()

    def restarted(self, runner: str) -> None:
        slot = self.runners.get(runner)
        if slot is not None:
            slot.restarts += 1

    # ------------------------------------------------------------------ calls from runners (actors)

    async def serve(self, runner: str, action: str, data: dict[str, Any]) -> Any:
        """A call from ``runner``: it may act only for events emitted to that runner,
        so a plugin can never borrow another runner's dispatch (and capabilities)."""
        if action != Action.CALL:
            raise RemoteError(Code.UNKNOWN, f"unknown action {action!r}")
        ctx = data.get("ctx")
        dispatch = self.dispatches.get(ctx) if isinstance(ctx, int) else None
        if dispatch is None or dispatch.runner != runner:
            raise RemoteError(Code.UNKNOWN, "no event of this runner in flight with that ctx")
        return await serve_call(dispatch, data)

    # ------------------------------------------------------------------ the handler side

    async def plan(self, event: Event, plugin_filter: Sequence[str]) -> list[Step]:
        """The listeners that see ``event``, highest priority first (ties: plugin
        order in the fleet file, then the plugin's own order), as emits."""
        entries = (
            [self.plugins[n] for n in plugin_filter if n in self.plugins]
            if plugin_filter
            else list(self.plugins.values())
        )
        for entry in entries:
            if not entry.loaded.is_set():  # first start still running: wait for its listeners
                try:
                    async with asyncio.timeout(self.settings.start_timeout):
                        await entry.loaded.wait()
                except TimeoutError:
                    log.warning("plugin %s: not loaded yet; event %s skips it", entry.name, event.event_id)
        text = event.text if isinstance(event, MessageReceived) else ""
        found: list[tuple[int, int, int, PluginEntry, ListenerInfo]] = []
        for entry in entries:
            if entry.status not in ("ready", "starting"):
                continue
            for index, listener in enumerate(entry.listeners):
                if not any(type_matches(pattern, event) for pattern in listener.events):
                    continue
                if listener.command is not None and command_args(listener.command, text) is None:
                    continue
                found.append((-listener.priority, entry.order, index, entry, listener))
        found.sort(key=lambda item: item[:3])
        steps: list[Step] = []
        for _, _, _, entry, listener in found:
            if steps and steps[-1].plugin == entry.name:
                last = steps[-1]
                steps[-1] = Step(
                    last.plugin, (*last.listeners, listener.id), last.idempotent and listener.idempotent
                )
            else:
                steps.append(Step(entry.name, (listener.id,), listener.idempotent))
        return steps

    async def emit(self, step: Step, ctx: HandlerContext) -> dict[str, Any]:
        """Run one step's listeners in their runner; retried once after a runner
        death when every listener of the step is idempotent."""
        entry = self.plugins.get(step.plugin)
        if entry is None:
            raise PluginUnavailable(f"plugin {step.plugin!r} is no longer configured")
        events = [encode_event(e).decode() for e in ctx.events]
        attempts = 2 if step.idempotent else 1
        for attempt in range(attempts):
            link = await self._link(entry)
            dispatch_id = next(self._ids)
            self.dispatches[dispatch_id] = Dispatch(
                ctx, entry.name, entry.runner, entry.capabilities, entry.counters
            )
            entry.counters.events += 1
            data = {
                "ctx": dispatch_id,
                "plugin": entry.name,
                "listeners": list(step.listeners),
                "events": events,
                "bot_id": ctx.bot_id,
                "session": list(ctx.session),
                "deadline": self.settings.event_timeout,
                "replayed": ctx.replayed,
            }
            try:
                result: dict[str, Any] = await link.call(
                    Action.EMIT_EVENT, data, timeout=self.settings.event_timeout + 1.0
                )
            except LinkClosed as exc:
                if attempt + 1 < attempts:
                    entry.counters.retries += 1
                    log.warning("plugin %s: runner died mid-event (%s); retrying once", entry.name, exc)
                    continue
                entry.counters.failures += 1
                raise PluginRunFailed(
                    f"plugin {entry.name}: its runner died during the event ({exc})"
                ) from None
            except RemoteError as exc:
                entry.counters.failures += 1
                if exc.code == Code.TIMEOUT:
                    entry.counters.timeouts += 1
                raise PluginRunFailed(f"plugin {entry.name}: {exc}") from None
            except TimeoutError:
                entry.counters.failures += 1
                entry.counters.timeouts += 1
                raise PluginRunFailed(f"plugin {entry.name}: its runner did not answer in time") from None
            finally:
                self.dispatches.pop(dispatch_id, None)
            if result.get("state") is not None:
                (await ctx.state())[f"plugin:{entry.name}"] = result["state"]
            if result.get("failed"):
                entry.counters.failures += 1
            return result
        raise AssertionError("unreachable")

    async def _link(self, entry: PluginEntry) -> Link:
        """The plugin's runner link once it is up; waits while it restarts."""
        slot = self.runners.get(entry.runner)
        if slot is not None and slot.link is not None and not slot.link.closed and entry.status != "stopped":
            return slot.link  # the usual case: up, no deadline to arm
        wait = self.settings.start_timeout + self.settings.backoff_max
        try:
            async with asyncio.timeout(wait):
                while True:
                    if slot is None or slot.gone or entry.status == "stopped":
                        raise PluginUnavailable(
                            f"plugin {entry.name} is stopped: {entry.error or 'not running'}"
                        )
                    if slot.link is not None and not slot.link.closed:
                        return slot.link
                    await slot.changed.wait()
        except TimeoutError:
            raise PluginUnavailable(f"plugin {entry.name}: its runner is not up after {wait:.0f}s") from None

    def info(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.plugins.values():
            slot = self.runners.get(entry.runner)
            item = entry.info()
            item["pid"] = slot.pid if slot is not None else None
            item["restarts"] = slot.restarts if slot is not None else 0
            out.append(item)
        return out


def _known_pattern(pattern: str) -> bool:
    if pattern == "*" or pattern.startswith("platform."):
        return True
    if pattern.endswith(".*"):
        return any(name.startswith(pattern[:-1]) for name in EVENT_TYPE_NAMES)
    return pattern in EVENT_TYPE_NAMES


def _load_error(registration: dict[str, Any]) -> str:
    problems = registration.get("problems") or []
    if not problems:
        return str(registration.get("error"))
    parts = [f"config.{'.'.join(map(str, p.get('loc', [])))}: {p.get('msg')}" for p in problems]
    return f"{registration.get('error')}: " + "; ".join(parts)
