"""BotActor: one bot of the fleet, supervising its connection, sessions and outbound.

Children start in the order outbound, sessions, connection, and so stop in
the reverse order: first no new events are accepted, then sessions flush
their open bursts (sending through outbound), then outbound drains.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from callboard.actors.config import BotConfig
from callboard.actors.http import Handler, HttpServer
from callboard.actors.messages import Inbound
from callboard.actors.outbound import OutboundActor, Outlet
from callboard.actors.router import SessionRouter
from callboard.actors.runtime import BotCounters, BotRuntime, FleetStats, SandboxFactory
from callboard.adapters.base import Adapter, AdapterAuthError, adapter_types
from callboard.engine.actor import Actor
from callboard.engine.clock import Clock
from callboard.engine.events import Event
from callboard.engine.journal import Journal
from callboard.engine.ref import ActorRef
from callboard.engine.supervision import Backoff, Directive, SupervisorStrategy, decider_from_mapping
from callboard.handlers.base import build_router

log = logging.getLogger("callboard.bot")

#: connections never give up on transient failures (about x1.75 per attempt, capped
#: near 10 minutes); a rejected credential stops the bot instead.
CONNECTION_STRATEGY = SupervisorStrategy(
    decider=decider_from_mapping({AdapterAuthError: Directive.ESCALATE}),
    max_restarts=None,
    backoff=Backoff(min=1.0, max=600.0, factor=1.75, jitter=0.2, reset_after=60.0),
)


class BotHost:
    """``AdapterHost`` for one bot: how its adapter reaches the engine."""

    def __init__(
        self, bot_id: str, journal: Journal, clock: Clock, http: HttpServer, stats: FleetStats
    ) -> None:
        self._bot_id = bot_id
        self._stats = stats
        self._journal = journal
        self._clock = clock
        self._http = http
        self.router: ActorRef | None = None
        self.runtime: BotRuntime | None = None
        self.connected = False
        self.connection_detail = "starting"

    @property
    def bot_id(self) -> str:
        return self._bot_id

    @property
    def journal(self) -> Journal:
        return self._journal

    @property
    def clock(self) -> Clock:
        return self._clock

    def accept(self, event: Event) -> asyncio.Future[int | None]:
        return self._journal.append(event, event.session_key())

    def route(self, seq: int | None, event: Event) -> None:
        runtime = self.runtime
        if seq is None:
            if runtime is not None:
                runtime.counters.duplicates += 1
            return
        if runtime is not None:
            runtime.counters.accepted += 1
            runtime.counters.by_type[event.type] += 1
        if self.router is not None:
            self.router.tell(Inbound(seq, event, event.session_key(), self._clock.now()))

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        self._http.add(method, path, handler, owner=self._bot_id)

    def set_connected(self, connected: bool, detail: str = "") -> None:
        self.connected = connected
        self.connection_detail = detail or ("connected" if connected else "disconnected")
        self._stats.connections[self._bot_id] = (connected, self.connection_detail)


class BotActor(Actor):
    def __init__(
        self,
        config: BotConfig,
        journal: Journal,
        http: HttpServer,
        stats: FleetStats,
        sandbox: SandboxFactory,
    ) -> None:
        self.config = config
        self.journal = journal
        self.http = http
        self.fleet_stats = stats
        self.sandbox = sandbox
        self.host = BotHost(config.id, journal, self.context.system.clock, http, stats)
        self.adapter: Adapter | None = None
        self.runtime: BotRuntime | None = None

    async def on_start(self) -> None:
        config = self.config
        adapter_cls = adapter_types()[config.adapter.type]
        self.adapter = adapter = adapter_cls(self.host, config.adapter)
        counters = BotCounters()
        clock = self.context.system.clock
        outlet = Outlet(config.id, adapter, self.journal, counters, adapter.rate_limits, clock)
        outbound = self.context.spawn(OutboundActor, "outbound", outlet)
        self.runtime = BotRuntime(
            config=config,
            api=adapter,
            router=build_router(config.handlers),
            journal=self.journal,
            clock=self.context.system.clock,
            stats=lambda: self.fleet_stats.for_bot(config.id),
            sandbox=self.sandbox,
            outbound=outbound,
            outlet=outlet,
            counters=counters,
        )
        self.host.runtime = self.runtime
        self.fleet_stats.runtimes[config.id] = self.runtime
        self.host.router = self.context.spawn(SessionRouter, "sessions", self.runtime)
        connection_cls, args = adapter.connection()
        self.context.spawn(connection_cls, "connection", *args, supervisor=CONNECTION_STRATEGY)
        log.info("bot %s started (%s adapter)", config.id, config.adapter.type)

    async def receive(self, message: Any) -> Any:
        if message == "ping":  # answered once on_start (adapter, children) has run
            return True
        raise TypeError(f"unexpected message {message!r}")

    async def on_stop(self) -> None:
        if self.fleet_stats.runtimes.get(self.config.id) is self.runtime:
            del self.fleet_stats.runtimes[self.config.id]
        self.http.remove_owner(self.config.id)
        self.fleet_stats.connections.pop(self.config.id, None)
        if self.adapter is not None:
            try:
                await self.adapter.close()
            except Exception:
                log.exception("bot %s: adapter close failed", self.config.id)
        log.info("bot %s stopped", self.config.id)
