"""A plugin: a class whose methods are listeners, marked with ``@on`` or ``@command``.

class KeywordReply(Plugin):
    class Config(BaseModel):
        keywords: dict[str, str] = {}

    @on("message.received", priority=10)
    async def answer(self, ctx: Context) -> None:
        reply = self.config.keywords.get(ctx.text.strip().lower())
        if reply:
            await ctx.reply(reply)
            ctx.prevent_default()
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel

from callboard.engine.plugin_protocol import ListenerInfo

if TYPE_CHECKING:
    from callboard.plugin.context import Context

ListenerFn = Callable[[Any, "Context"], Awaitable[None]]
F = TypeVar("F", bound=ListenerFn)

_MARK = "__callboard_listener__"


@dataclass(frozen=True)
class ListenerSpec:
    events: tuple[str, ...]
    priority: int
    command: str | None
    idempotent: bool


def on(*events: str, priority: int = 0, idempotent: bool = False) -> Callable[[F], F]:
    """Listen to events: exact types ("message.received"), a namespace ("group.*") or "*".

    Higher ``priority`` runs first, across every plugin the rule dispatches to.
    ``idempotent``: running the listener twice for one event is harmless, so an
    event in flight when the runner died is tried once more after the restart.
    """
    if not events:
        raise TypeError("@on needs at least one event type")

    def mark(fn: F) -> F:
        setattr(fn, _MARK, ListenerSpec(tuple(events), priority, None, idempotent))
        return fn

    return mark


def command(name: str, *, priority: int = 0, idempotent: bool = False) -> Callable[[F], F]:
    """Listen to "/name ..." messages; ``ctx.args`` holds the text after the command."""
    if not name or " " in name or name.startswith("/"):
        raise ValueError(f"command name {name!r}: one word, without the '/'")

    def mark(fn: F) -> F:
        setattr(fn, _MARK, ListenerSpec(("message.received",), priority, name, idempotent))
        return fn

    return mark


class Plugin:
    """Base of every plugin. ``Config`` (a pydantic model) validates the values
    the fleet file gives under the plugin's ``config:``; the instance is
    ``self.config``. The runner sets ``name``, ``config`` and ``log`` before
    ``on_load``."""

    Config: ClassVar[type[BaseModel] | None] = None

    name: str
    config: Any
    log: logging.Logger

    async def on_load(self) -> None:
        """After the plugin is constructed and configured, before any event."""

    async def on_unload(self) -> None:
        """Before the runner stops or the plugin is reloaded."""

    async def on_config(self, config: Any) -> None:
        """The fleet file gave new config values (already validated)."""
        self.config = config

    @classmethod
    def listeners(cls) -> dict[str, tuple[ListenerInfo, str]]:
        """Listener id -> (what the host is told, method name); derived from the decorators."""
        found: dict[str, tuple[ListenerInfo, str]] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                spec = getattr(value, _MARK, None)
                if isinstance(spec, ListenerSpec):
                    info = ListenerInfo(
                        id=attr,
                        events=list(spec.events),
                        priority=spec.priority,
                        command=spec.command,
                        idempotent=spec.idempotent,
                    )
                    found[attr] = (info, attr)
        return found
