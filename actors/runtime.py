"""Per-bot wiring shared by that bot's actors (read-only after start), and
the per-bot counters the admin server exports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from callboard.actors.backlog import MAX_EVENTS, BotBacklog, FleetBacklog
from callboard.engine.clock import Clock
from callboard.engine.events import Event, SessionKey
from callboard.engine.journal_store import JournalStore
from callboard.engine.ref import ActorRef

if TYPE_CHECKING:
    from callboard.actors.config import BotConfig
    from callboard.actors.outbound import Outlet
    from callboard.engine.platform import PlatformAPI
    from callboard.engine.sandbox_api import SandboxTools
    from callboard.handlers.base import Handler
    from callboard.handlers.routing import RouteTable

#: builds the sandbox tools of one session for one handler kind (chat type, chat id,
#: thread, user id, handler kind), or None when sandboxes are off for the bot
SandboxFactory = Callable[[str, str, str, str, str], "SandboxTools | None"]


@dataclass
class BotCounters:
    accepted: int = 0
    duplicates: int = 0
    runs: int = 0
    handled_events: int = 0
    failed_runs: int = 0
    timed_out_runs: int = 0
    unrouted: int = 0
    sends: int = 0
    send_failures: int = 0
    send_retries: int = 0
    receipts_skipped: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    #: handler usage: agent runs, tokens, tool calls, seconds; webhook deliveries, retries...
    usage: dict[str, float] = field(default_factory=dict)

    def count_usage(self, name: str, amount: float) -> None:
        """A handler's ``ctx.count``: adds to one usage figure."""
        self.usage[name] = self.usage.get(name, 0.0) + amount


#: the name under which a cluster node is handed to the actor system (actors/cluster.py)
CLUSTER_RESOURCE = "callboard.cluster"


class Fenced(Exception):
    """Cluster mode: this node no longer holds the lease of the session's partition,
    so it must not send or write for it (its events stay pending for the next owner)."""


@runtime_checkable
class ClusterLink(Protocol):
    """What a bot needs of its cluster node (actors/cluster.py), without importing NATS."""

    def publish(self, seq: int, event: Event, key: SessionKey) -> None: ...

    def owns(self, key: SessionKey) -> bool: ...

    def fenced(self, bot: str, chat_type: str, chat_id: str) -> bool: ...

    def attach(self, bot: str, sink: Any) -> None: ...

    def detach(self, bot: str) -> None: ...

    def claim_connection(self, bot: str, adapter: str, on_change: Callable[[bool], None]) -> None: ...

    def peers(self, bot: str) -> Callable[[bytes], None]: ...


@dataclass
class BotRuntime:
    """What every actor of one bot needs: config, adapter API, routing, storage."""

    config: BotConfig
    api: PlatformAPI
    routes: RouteTable[Handler]
    journal: JournalStore
    clock: Clock
    stats: Callable[[], dict[str, Any]]
    #: None when the bot has no sandbox
    sandbox: SandboxFactory | None
    outbound: ActorRef
    outlet: Outlet
    #: this bot's events in flight (sessions count theirs out as they finish them)
    in_flight: BotBacklog
    counters: BotCounters = field(default_factory=BotCounters)
    links: dict[str, str] = field(default_factory=dict)
    #: the bot's sessions actor, once started (admin retries and callbacks go there)
    sessions: ActorRef | None = None
    live_sessions: int = 0
    #: cluster mode: which sessions this node may act for (None: all, single node)
    cluster: ClusterLink | None = None

    @property
    def bot_id(self) -> str:
        return self.config.id


class FleetStats:
    """Where the admin server and /stats read live figures: each bot
    registers its runtime while it runs. Plain reads on the loop thread."""

    def __init__(
        self,
        live_actors: Callable[[], int],
        messages: Callable[[], int],
        backlog: FleetBacklog | None = None,
    ) -> None:
        self.runtimes: dict[str, BotRuntime] = {}
        #: events in flight across the fleet, and its ceiling (engine.backlog)
        self.backlog = backlog or FleetBacklog(MAX_EVENTS)
        self.connections: dict[str, tuple[bool, str]] = {}
        self._live_actors = live_actors
        self._messages = messages

    def sessions(self) -> int:
        return sum(r.live_sessions for r in self.runtimes.values())

    def for_bot(self, bot_id: str) -> dict[str, Any]:
        runtime = self.runtimes.get(bot_id)
        own: dict[str, Any] = {}
        if runtime is not None:
            own = {
                "sessions (this bot)": runtime.live_sessions,
                "events accepted": runtime.counters.accepted,
                "handler runs": runtime.counters.runs,
            }
        return {
            **own,
            "sessions (fleet)": self.sessions(),
            "bots": len(self.runtimes),
            "actors": self._live_actors(),
            "messages processed": self._messages(),
        }
