"""Handler types and how a routing rule becomes a runnable handler."""

from __future__ import annotations

from typing import Literal, Protocol

from callboard.handlers.agent.config import AgentConfig
from callboard.handlers.agent.handler import AgentHandler
from callboard.handlers.context import HandlerContext
from callboard.handlers.pipeline import PipelineHandler
from callboard.handlers.plugin.config import PluginHandlerConfig, PluginRuntimeConfig
from callboard.handlers.plugin.handler import PluginHandler
from callboard.handlers.plugin.hub import PluginHub
from callboard.handlers.routing import RouteRule, RouteTable
from callboard.handlers.webhook.config import WebhookConfig
from callboard.handlers.webhook.handler import WebhookHandler


class Handler(Protocol):
    """What a routing rule runs. ``kind`` names it to the sandbox policy
    (``exec_handlers``); ``busy`` is what its session does with messages that
    arrive during a run (``queue``, ``collect`` or ``interrupt``)."""

    @property
    def kind(self) -> str: ...

    @property
    def busy(self) -> str: ...

    async def handle(self, ctx: HandlerContext) -> None: ...

    async def close(self) -> None:
        """Release what it holds (HTTP sessions) when its bot stops."""
        ...


#: the rule ``default: plugins`` adds after a bot's own: the lowest priority there is
DEFAULT_PLUGINS_PRIORITY = -(2**31)


def build_handler(rule: RouteRule, plugins: PluginHub | None = None) -> Handler:
    """The runnable handler of a (validated) rule; ``plugins`` serves plugin rules."""
    config = rule.handler_config
    if isinstance(config, PluginHandlerConfig):
        return PluginHandler(config, plugins or PluginHub(PluginRuntimeConfig()))
    if isinstance(config, AgentConfig):
        return AgentHandler(config)
    if isinstance(config, WebhookConfig):
        return WebhookHandler(config)
    return PipelineHandler(config)


def build_routes(
    rules: list[RouteRule], *, default: Literal["drop", "plugins"] = "drop", plugins: PluginHub | None = None
) -> RouteTable[Handler]:
    """A bot's route table; ``default: plugins`` sends what no rule matches to every plugin."""
    if default == "plugins":
        catch_all = RouteRule(
            event_type="*",
            handler_type="plugin",
            handler_config=PluginHandlerConfig(),
            priority=DEFAULT_PLUGINS_PRIORITY,
            description="the bot's default: every plugin",
        )
        rules = [*rules, catch_all]
    return RouteTable([(rule, build_handler(rule, plugins)) for rule in rules])
