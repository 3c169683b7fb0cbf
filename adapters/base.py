"""The adapter contract: what a platform package provides and what it may use.

A platform is one package under ``adapters/`` exposing ``ADAPTER``, a subclass
of ``Adapter``. The adapter is the platform's API (``engine.platform.PlatformAPI``:
override what the platform supports, the manifest follows) plus its
connection: an actor the bot spawns to receive events, and HTTP routes on the
engine's shared server. Adapters reach the engine only through ``AdapterHost``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from callboard.engine.actor import Actor
from callboard.engine.clock import Clock
from callboard.engine.events import Event
from callboard.engine.journal import Journal
from callboard.engine.platform import (
    COMMON_APIS,
    Manifest,
    MessageResult,
    NotSupportedError,
    PlatformAction,
    PlatformAPI,
    RateLimits,
    SendError,
)

if TYPE_CHECKING:
    import asyncio

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = [
    "COMMON_APIS",
    "Adapter",
    "AdapterAuthError",
    "AdapterConfig",
    "AdapterHost",
    "Handler",
    "Manifest",
    "MessageResult",
    "NotSupportedError",
    "PlatformAction",
    "RateLimits",
    "SendError",
    "adapter_types",
]


class AdapterConfig(BaseModel):
    """Base of each adapter's ``adapter:`` block; ``type`` selects the adapter."""

    model_config = ConfigDict(extra="forbid")

    type: str


class AdapterAuthError(Exception):
    """The platform rejected our credentials: retrying cannot help, stop the bot."""


class AdapterHost(Protocol):
    """The engine side an adapter talks to (implemented by the bot actor)."""

    @property
    def bot_id(self) -> str: ...

    @property
    def journal(self) -> Journal: ...

    @property
    def clock(self) -> Clock: ...

    def accept(self, event: Event) -> asyncio.Future[int | None]:
        """Start the durable append; resolves to the sequence number, or None
        for a duplicate. Call ``route`` after it resolves, in arrival order."""
        ...

    def route(self, seq: int | None, event: Event) -> None:
        """Hand a committed event to the bot's sessions (``None``, a duplicate,
        is only counted)."""
        ...

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``handler`` on the engine's HTTP server until the bot stops."""
        ...

    def set_connected(self, connected: bool, detail: str = "") -> None:
        """Report the connection's state for /readyz and the admin API."""
        ...


class Adapter(PlatformAPI):
    """One bot's adapter instance: its platform API and connection."""

    config_type: ClassVar[type[AdapterConfig]]

    def __init__(self, host: AdapterHost, config: AdapterConfig) -> None:
        self.host = host
        self.config = config

    def connection(self) -> tuple[type[Actor], tuple[Any, ...]]:
        """The connection actor class and its arguments; the bot spawns it."""
        raise NotImplementedError(f"{type(self).__name__} must provide connection()")

    async def close(self) -> None:
        """Release SDK clients when the bot stops."""


ENTRY_POINT_GROUP = "callboard.adapters"


def adapter_types() -> dict[str, type[Adapter]]:
    """Every installed adapter by config ``type``: the ``callboard.adapters`` entry points
    (ours register the same way as a third party's). Read anew on each call, so a package
    installed or registered after start-up is seen by the next fleet file parsed."""
    found: dict[str, type[Adapter]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        adapter = entry.load()
        if not (isinstance(adapter, type) and issubclass(adapter, Adapter)):
            raise TypeError(f"entry point {entry.name!r} ({entry.value}) is not an Adapter subclass")
        found[adapter.config_type.model_fields["type"].default] = adapter
    return found
