"""Handler types and how a routing rule becomes a runnable handler."""

from __future__ import annotations

from typing import Protocol

from callboard.handlers.context import HandlerContext
from callboard.handlers.routing import Router, RouteRule


class Handler(Protocol):
    async def handle(self, ctx: HandlerContext) -> None: ...


def build_handler(rule: RouteRule) -> Handler:
    """The runnable handler of a (validated) rule."""
    from callboard.handlers.pipeline import PipelineHandler

    return PipelineHandler(rule.handler_config)


def build_router(rules: list[RouteRule]) -> Router[Handler]:
    return Router([(rule, build_handler(rule)) for rule in rules])
