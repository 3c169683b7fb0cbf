"""The adapter contract: what a platform package provides and what it may use.

A platform is a package exposing a subclass of ``Adapter`` through an entry point
of group ``callboard.adapters`` (ours under ``adapters/`` register the same way as
a third party's; see docs/adapters.md). The adapter is the platform's API (``engine.platform.PlatformAPI``:
override what the platform supports, the manifest follows) plus its
connection: an actor the bot spawns to receive events, and HTTP routes on the
engine's shared server. Adapters reach the engine only through ``AdapterHost``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from callboard.engine.actor import Actor
from callboard.engine.clock import Clock
from callboard.engine.events import Event
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

HttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

__all__ = [
    "COMMON_APIS",
    "Adapter",
    "AdapterAuthError",
    "AdapterBusy",
    "AdapterConfig",
    "AdapterHost",
    "AdapterStore",
    "AdapterUnavailable",
    "HttpHandler",
    "Manifest",
    "MessageResult",
    "NotSupportedError",
    "PlatformAction",
    "RateLimits",
    "SendError",
    "SendProgress",
    "action_params",
    "adapter_names",
    "load_adapter",
    "params_doc",
]


class AdapterConfig(BaseModel):
    """Base of each adapter's ``adapter:`` block; ``type`` selects the adapter."""

    model_config = ConfigDict(extra="forbid")

    type: str


class AdapterAuthError(Exception):
    """The platform rejected our credentials: retrying cannot help, stop the bot."""


class AdapterBusy(Exception):
    """The engine refuses new events for now (a chat's backlog, or the whole engine's, is
    full): do not acknowledge them; the sender should retry after ``retry_after`` seconds
    (a web client gets a ``busy`` frame, a platform no ack, so it redelivers)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class AdapterStore(Protocol):
    """The slice of durable storage an adapter may use: its own bot's stored output
    (per-chat sequence numbers, for platforms such as the web chat that replay what a
    reconnecting client missed), and small records of its own state by key (such as the
    web chat's groups and members), kept across restarts and shared by the nodes of a
    cluster. Nothing else of the journal is reachable."""

    def append_outbox(
        self, chat: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> asyncio.Future[tuple[int, dict[str, Any], bool]]:
        """Store one item for ``chat`` under the next per-chat sequence number (also
        written into ``payload["seq"]``). A repeated ``idempotency_key`` stores nothing
        and resolves to the earlier item. Resolves to (seq, stored payload, created)."""
        ...

    async def read_outbox(
        self, chat: str, since: int = 0, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]:
        """Items stored for ``chat`` after ``since``, oldest first, once durable."""
        ...

    async def load_adapter_state(self, key: str) -> dict[str, Any] | None:
        """The record last saved under ``key`` (None: never saved). Not cached: each call
        reads the journal, so a record another node saved is seen."""
        ...

    async def save_adapter_state(self, key: str, value: dict[str, Any]) -> None:
        """Replace the record under ``key`` (JSON-serialisable); returns once committed.
        The last save wins, with no compare-and-set: changes made from several nodes at
        once are ordered elsewhere (the web chat appends them to its stored output, per
        chat in order, and saves here only checkpoints of what it replayed)."""
        ...


class AdapterHost(Protocol):
    """The engine side an adapter talks to (implemented by the bot actor)."""

    @property
    def bot_id(self) -> str: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def store(self) -> AdapterStore: ...

    def ingest(self, events: Sequence[Event]) -> asyncio.Future[list[int | None]]:
        """Store ``events`` durably, then hand them to the bot's sessions.

        The appends start at once (group-committed with everything else); each event
        is routed only after it is committed, and routing follows the order of
        ``ingest`` calls across the whole bot, so a connection may pipeline calls
        without awaiting each. Resolves, once all are routed, to each event's journal
        sequence number, or ``None`` for a duplicate delivery (already stored: do
        acknowledge it, do not handle it). If a store fails, the events that did
        commit are still routed and the future fails with the first error: do not
        acknowledge the platform then, so it redelivers. When the engine's backlog is
        full the future fails at once with ``AdapterBusy`` and nothing is stored.
        """
        ...

    def secret(self, name: str) -> bytes:
        """A random per-fleet secret called ``name`` (32 bytes), created on first use and
        kept across restarts (a 0600 file next to the journal): for signing what the
        adapter issues, such as web chat sessions."""
        ...

    def add_route(self, method: str, path: str, handler: HttpHandler) -> None:
        """Serve ``handler`` on the engine's HTTP server (exact path) until the bot stops."""
        ...

    def set_connected(self, connected: bool, detail: str = "") -> None:
        """Report the connection's state for /readyz and the admin API."""
        ...

    def peers(self) -> Callable[[bytes], None] | None:
        """Cluster mode: a function handing ``data`` to this bot's adapter on every other
        node (their ``Adapter.from_peer``), in order, best effort (a node that is down or
        cut off misses it: keep the durable copy elsewhere). None on a single node."""
        ...

    def resource(self, name: str) -> object:
        """A live object a program embedding callboard handed to ``callboard.app.start``
        (``resources={name: obj}``): a queue, a client, a benchmark's load source. An
        adapter's config names it; a missing name raises ``KeyError`` saying what exists."""
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

    def links(self) -> dict[str, str]:
        """What this bot serves to people, by label (e.g. ``{"web chat": "/web/demo/"}``):
        paths on the engine's HTTP server, or full URLs. Announced at start-up."""
        return {}

    def singleton_connection(self) -> bool:
        """Whether the connection must exist once per fleet, because the platform has a
        single consumer (long polling, a socket-mode or long connection). In cluster mode
        such a connection runs on the one node holding its lease, the others stand by;
        otherwise (webhook routes, web chat sockets) every node runs it."""
        return False

    def from_peer(self, data: bytes) -> None:
        """Cluster mode: what this bot's adapter on another node sent through
        ``AdapterHost.peers`` (e.g. a web chat reply for a socket connected here)."""

    async def close(self) -> None:
        """Release SDK clients when the bot stops."""


def params_doc(model: type[BaseModel]) -> dict[str, str]:
    """A platform action's parameters for its ``PlatformAction``, read from the pydantic
    model that checks them (each field's description, else required/optional), so the
    manifest cannot drift from what is accepted."""
    return {
        name: (info.description or ("required" if info.is_required() else "optional"))
        for name, info in model.model_fields.items()
    }


def action_params(adapter: str, action: str, model: type[M], params: dict[str, Any]) -> M:
    """``params`` checked by ``model``; a ``ValueError`` names the adapter, the action and
    every bad field (never the values, which may be secrets)."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'params'}: {e['msg']}"
            for e in exc.errors(include_input=False)
        )
        raise ValueError(f"{adapter} {action}: {problems}") from None


class SendProgress(Generic[T]):
    """The parts of a multi-part send already out, per idempotency key, kept while the
    send failed transiently: the outbound's retry of a half-sent long text resumes at the
    first part not yet sent. The oldest keys are dropped beyond ``keep``."""

    def __init__(self, keep: int = 1024) -> None:
        self._keep = keep
        self._parts: OrderedDict[str, list[T]] = OrderedDict()

    def resume(self, key: str | None) -> list[T]:
        """The parts already sent under ``key`` (a fresh list without one); the caller
        appends each part it sends."""
        return self._parts.pop(key, []) if key is not None else []

    def failed(self, key: str | None, sent: list[T], error: SendError) -> None:
        """Keep ``sent`` for the retry when ``error`` is transient (a permanent one is not retried)."""
        if key is not None and sent and not error.permanent:
            self._parts[key] = sent
            while len(self._parts) > self._keep:
                self._parts.popitem(last=False)


ENTRY_POINT_GROUP = "callboard.adapters"


class AdapterUnavailable(Exception):
    """A fleet file names an adapter type that is not installed or cannot be imported."""


def adapter_names() -> list[str]:
    """The adapter types installed now (entry points of ``callboard.adapters``), without
    importing them. Read anew on each call, so a package installed after start-up is seen
    by the next fleet file parsed."""
    return sorted({entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)})


def load_adapter(type_name: str) -> type[Adapter]:
    """The adapter class for a config ``type``; ``AdapterUnavailable`` says what to install."""
    found = [entry for entry in entry_points(group=ENTRY_POINT_GROUP) if entry.name == type_name]
    if not found:
        known = ", ".join(repr(name) for name in adapter_names()) or "none"
        raise AdapterUnavailable(f"no adapter of type {type_name!r} is installed (installed: {known})")
    entry = found[0]
    try:
        adapter = entry.load()
    except ImportError as exc:
        ours = entry.dist is not None and entry.dist.name == "callboard"
        hint = (
            f"pip install 'callboard[{type_name}]'" if ours else f"check the package providing {entry.value}"
        )
        raise AdapterUnavailable(
            f"adapter {type_name!r} cannot be imported: module {exc.name or '?'} is missing ({hint})"
        ) from None
    if not (isinstance(adapter, type) and issubclass(adapter, Adapter)):
        raise AdapterUnavailable(f"entry point {type_name!r} ({entry.value}) is not an Adapter subclass")
    declared = adapter.config_type.model_fields["type"].default
    if declared != type_name:
        raise AdapterUnavailable(
            f"entry point {type_name!r} ({entry.value}) has a config of type {declared!r}; they must match"
        )
    return adapter
