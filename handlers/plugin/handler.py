"""The ``plugin`` handler: an event goes through the plugins' listeners by priority.

A listener may stop later listeners (``prevent_postorder``) and the bot's
fallback (``prevent_default``). One plugin failing (an exception, a missed
deadline, a runner that died) does not keep the event from the plugins after
it; the run is still recorded as failed, with every failure named.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from callboard.engine.events import Event
from callboard.handlers.context import HandlerContext
from callboard.handlers.plugin.config import PluginHandlerConfig
from callboard.handlers.plugin.hub import PluginHub, PluginRunFailed, PluginUnavailable

log = logging.getLogger("callboard.plugins")


class PluginHandler:
    kind: ClassVar[str] = "plugin"
    busy: ClassVar[str] = "queue"

    def __init__(self, config: PluginHandlerConfig, hub: PluginHub) -> None:
        self.plugin_filter = list(config.plugin_filter)
        self.hub = hub
        #: the rules that match after this one (set by ``build_routes``): run unless prevented
        self.fallback: Callable[[Event], list[tuple[int, Any]]] | None = None

    async def close(self) -> None:
        return None

    async def handle(self, ctx: HandlerContext) -> None:
        prevented = await self.run(ctx)
        if not prevented and self.fallback is not None:
            for _, handler in self.fallback(ctx.event):
                await handler.handle(ctx)

    async def run(self, ctx: HandlerContext) -> bool:
        """Run the listeners; True when one of them prevented the bot's fallback."""
        steps = await self.hub.plan(ctx.event, self.plugin_filter)
        failures: list[str] = []
        default_prevented = False
        for step in steps:
            try:
                result = await self.hub.emit(step, ctx)
            except (PluginRunFailed, PluginUnavailable) as exc:
                log.error("%s: event %s: %s", ctx.session, ctx.event.event_id, exc)
                failures.append(str(exc))
                continue
            for failed in result.get("failed") or ():
                failures.append(f"plugin {step.plugin}: listener {failed['listener']}: {failed['error']}")
            default_prevented = default_prevented or bool(result.get("prevent_default"))
            if result.get("prevent_postorder"):
                break
        if failures:
            raise PluginRunFailed("; ".join(failures))
        return default_prevented
