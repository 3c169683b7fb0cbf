"""The ``plugin`` handler: an event goes through the plugins' listeners by priority.

A listener may stop later listeners (``prevent_postorder``) and the bot's
fallback: the routing rules after this one, which otherwise run too
(``prevent_default``). One plugin failing (an exception, a missed
deadline, a runner that died) does not keep the event from the plugins after
it; the run is still recorded as failed, with every failure named.
"""

from __future__ import annotations

import logging
from typing import ClassVar

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

    async def close(self) -> None:
        return None

    async def handle(self, ctx: HandlerContext) -> None:
        steps = await self.hub.plan(ctx.event, self.plugin_filter)
        failures: list[str] = []
        for step in steps:
            try:
                result = await self.hub.emit(step, ctx)
            except (PluginRunFailed, PluginUnavailable) as exc:
                log.error("%s: event %s: %s", ctx.session, ctx.event.event_id, exc)
                failures.append(str(exc))
                continue
            for failed in result.get("failed") or ():
                failures.append(f"plugin {step.plugin}: listener {failed['listener']}: {failed['error']}")
            if result.get("prevent_default"):
                ctx.default_prevented = True  # the session runs no rule after this one
            if result.get("prevent_postorder"):
                break
        if failures:
            raise PluginRunFailed("; ".join(failures))
