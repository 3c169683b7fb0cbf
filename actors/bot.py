"""BotActor: one bot of the fleet, supervising its connection, sessions and outbound.

Children start in the order outbound, sessions, connection, and so stop in
the reverse order: first no new events are accepted, then sessions flush
their open bursts (sending through outbound), then outbound drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from callboard.actors.backlog import BotBacklog
from callboard.actors.config import BotConfig
from callboard.actors.http import HttpServer
from callboard.actors.messages import Inbound, Ping, group_replay
from callboard.actors.outbound import OutboundActor, Outlet
from callboard.actors.runtime import (
    CLUSTER_RESOURCE,
    BotCounters,
    BotRuntime,
    ClusterLink,
    FleetStats,
    SandboxFactory,
)
from callboard.actors.secrets import fleet_secret
from callboard.actors.sessions import SessionsActor
from callboard.adapters.base import Adapter, AdapterAuthError, HttpHandler, load_adapter
from callboard.engine.actor import Actor
from callboard.engine.clock import Clock
from callboard.engine.events import Event, SessionKey
from callboard.engine.journal import PendingEvent
from callboard.engine.journal_store import JournalStore
from callboard.engine.ref import ActorRef
from callboard.engine.supervision import Backoff, Directive, SupervisorStrategy, decider_from_mapping
from callboard.engine.system import ActorSystem
from callboard.handlers.base import build_routes
from callboard.handlers.plugin.hub import PluginHub

log = logging.getLogger("callboard.bot")

#: connections never give up on transient failures (about x1.75 per attempt, capped
#: near 10 minutes); a rejected credential stops the bot instead.
CONNECTION_STRATEGY = SupervisorStrategy(
    decider=decider_from_mapping({AdapterAuthError: Directive.ESCALATE}),
    max_restarts=None,
    backoff=Backoff(min=1.0, max=600.0, factor=1.75, jitter=0.2, reset_after=60.0),
)


STANDBY = "standby: another node of the cluster runs the connection"


class _ConnectionLease:
    """Cluster mode: this node took (``owned``) or lost the lease of a connection that
    runs once per fleet; start or stop it."""

    __slots__ = ("owned",)

    def __init__(self, owned: bool) -> None:
        self.owned = owned


#: the chat type of the state rows kept for the adapter (no session has it, so their
#: names, ``adapter:<key>``, never meet a session's; the key routes a sharded journal)
ADAPTER_STATE = "adapter"


class BotStore:
    """``AdapterStore`` for one bot: its slice of the journal's stored output, and its
    adapter's records in the journal's state table under reserved session keys."""

    def __init__(self, bot_id: str, journal: JournalStore) -> None:
        self._bot_id = bot_id
        self._journal = journal

    def append_outbox(
        self, chat: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> asyncio.Future[tuple[int, dict[str, Any], bool]]:
        return self._journal.append_outbox(self._bot_id, chat, payload, idempotency_key)

    async def read_outbox(
        self, chat: str, since: int = 0, limit: int = 1000
    ) -> list[tuple[int, dict[str, Any]]]:
        return await self._journal.read_outbox(self._bot_id, chat, since, limit)

    async def load_adapter_state(self, key: str) -> dict[str, Any] | None:
        return await self._journal.load_state(self._bot_id, SessionKey(self._bot_id, ADAPTER_STATE, key))

    async def save_adapter_state(self, key: str, value: dict[str, Any]) -> None:
        await self._journal.save_state(self._bot_id, SessionKey(self._bot_id, ADAPTER_STATE, key), value)


class _Batch:
    """One ``ingest`` call waiting for its appends to commit."""

    __slots__ = ("appends", "events", "keys", "result")

    def __init__(
        self,
        appends: list[asyncio.Future[int | None]],
        events: Sequence[Event],
        keys: list[SessionKey],
        result: asyncio.Future[list[int | None]],
    ) -> None:
        self.appends = appends
        self.events = events
        self.keys = keys
        self.result = result

    def committed(self) -> bool:
        return all(append.done() for append in self.appends)


class BotHost:
    """``AdapterHost`` for one bot: how its adapter reaches the engine."""

    def __init__(
        self,
        bot_id: str,
        journal: JournalStore,
        system: ActorSystem,
        http: HttpServer,
        stats: FleetStats,
        backlog: BotBacklog,
    ) -> None:
        self._bot_id = bot_id
        self.in_flight = backlog
        self._stats = stats
        self._journal = journal
        self._system = system
        self._loop = system.loop  # not asyncio.get_running_loop() per event: that call is slow
        self._clock = system.clock
        self._http = http
        self._store = BotStore(bot_id, journal)
        self._batches: deque[_Batch] = deque()
        self.sessions: ActorRef | None = None
        self.runtime: BotRuntime | None = None
        self.connected = False
        self.connection_detail = "starting"
        #: cluster mode: committed events go to the stream, not straight to the sessions
        self.cluster: ClusterLink | None = None
        self.adapter: Adapter | None = None

    @property
    def bot_id(self) -> str:
        return self._bot_id

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def store(self) -> BotStore:
        return self._store

    def ingest(self, events: Sequence[Event]) -> asyncio.Future[list[int | None]]:
        keys = [event.session_key() for event in events]
        busy = self.in_flight.reserve(keys)
        if busy is not None:
            refused: asyncio.Future[list[int | None]] = self._loop.create_future()
            refused.set_exception(busy)
            return refused
        appends = [self._journal.append(event, key) for event, key in zip(events, keys, strict=True)]
        batch = _Batch(appends, events, keys, self._loop.create_future())
        self._batches.append(batch)
        if not appends:
            self._route_committed()
        for append in appends:
            append.add_done_callback(self._on_append_done)
        return batch.result

    def _on_append_done(self, _: asyncio.Future[int | None]) -> None:
        self._route_committed()

    def _route_committed(self) -> None:
        """Route every batch at the head of the queue whose appends are all done."""
        batches = self._batches
        while batches and batches[0].committed():
            batch = batches.popleft()
            seqs: list[int | None] = []
            failure: BaseException | None = None
            for append, event, key in zip(batch.appends, batch.events, batch.keys, strict=True):
                error = append.exception() if not append.cancelled() else asyncio.CancelledError()
                if error is not None:
                    failure = failure or error
                    seqs.append(None)
                    self.in_flight.committed(key, None)
                    continue
                seq = append.result()
                self.in_flight.committed(key, seq)
                self._route(seq, event, key)
                seqs.append(seq)
            if batch.result.cancelled():
                continue
            if failure is not None:
                batch.result.set_exception(failure)
            else:
                batch.result.set_result(seqs)

    def _route(self, seq: int | None, event: Event, key: SessionKey) -> None:
        runtime = self.runtime
        if seq is None:
            if runtime is not None:
                runtime.counters.duplicates += 1
            return
        if runtime is not None:
            runtime.counters.accepted += 1
            runtime.counters.by_type[event.type] += 1
        if self.cluster is not None:  # the partition's owner handles it, maybe this node
            self.cluster.publish(seq, event, key)
            self.in_flight.done([seq])
            return
        if self.sessions is not None:
            self.sessions.tell(Inbound(seq, event, key, self._clock.now()))

    def deliver(self, seq: int, event: Event, key: SessionKey) -> None:
        """Cluster mode: an event of a partition this node owns, from the stream."""
        if self.sessions is not None:
            self.in_flight.replayed(seq, key)  # counted until its session marks it done
            self.sessions.tell(Inbound(seq, event, key, self._clock.now()))

    def busy(self, where: Callable[[SessionKey], bool]) -> bool:
        """Cluster mode: whether sessions ``where`` selects hold unfinished events here."""
        return any(where(key) for key in self.in_flight.seqs.values())

    def replay(self, pending: list[PendingEvent]) -> None:
        """Cluster mode: unfinished events of partitions this node just took over."""
        if self.sessions is None:
            return
        now = self._clock.now()
        pending = [item for item in pending if item.seq not in self.in_flight.seqs]  # not what runs here
        for item in group_replay(pending):
            for inbound in [item] if isinstance(item, Inbound) else item.inbounds:
                inbound.arrived = now
                self.in_flight.replayed(inbound.seq, inbound.key)
            self.sessions.tell(item)

    def from_peer(self, data: bytes) -> None:
        """Cluster mode: what this bot's adapter on another node handed its peers."""
        if self.adapter is not None:
            self.adapter.from_peer(data)

    def peers(self) -> Callable[[bytes], None] | None:
        return self.cluster.peers(self._bot_id) if self.cluster is not None else None

    def secret(self, name: str) -> bytes:
        return fleet_secret(self._journal.path, name)

    def resource(self, name: str) -> object:
        return self._system.resource(name)

    def add_route(self, method: str, path: str, handler: HttpHandler) -> None:
        self._http.add(method, path, handler, owner=self._bot_id)

    def set_connected(self, connected: bool, detail: str = "") -> None:
        self.connected = connected
        self.connection_detail = detail or ("connected" if connected else "disconnected")
        self._stats.connections[self._bot_id] = (connected, self.connection_detail)


class BotActor(Actor):
    def __init__(
        self,
        config: BotConfig,
        journal: JournalStore,
        http: HttpServer,
        stats: FleetStats,
        sandbox: SandboxFactory | None,
        plugins: PluginHub | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.http = http
        self.fleet_stats = stats
        self.sandbox = sandbox
        self.plugins = plugins
        backlog = BotBacklog(stats.backlog, config.session.max_pending)
        self.host = BotHost(config.id, journal, self.context.system, http, stats, backlog)
        self.adapter: Adapter | None = None
        self.runtime: BotRuntime | None = None
        #: cluster mode, a connection run once per fleet: its class and arguments, and
        #: the running actor while this node holds its lease
        self.leased: tuple[type[Actor], tuple[Any, ...]] | None = None
        self.connection: ActorRef | None = None

    async def on_start(self) -> None:
        config = self.config
        adapter_cls = load_adapter(config.adapter.type)
        self.adapter = adapter = adapter_cls(self.host, config.adapter)
        counters = BotCounters()
        clock = self.context.system.clock
        outlet = Outlet(config.id, adapter, self.journal, counters, adapter.rate_limits, clock)
        outbound = self.context.spawn(OutboundActor, "outbound", outlet)
        self.runtime = BotRuntime(
            config=config,
            api=adapter,
            routes=build_routes(config.handlers, default=config.default, plugins=self.plugins),
            journal=self.journal,
            clock=self.context.system.clock,
            stats=lambda: self.fleet_stats.for_bot(config.id),
            sandbox=self.sandbox,
            outbound=outbound,
            outlet=outlet,
            in_flight=self.host.in_flight,
            counters=counters,
            links=adapter.links(),
        )
        cluster = self.context.system.resources.get(CLUSTER_RESOURCE)
        if isinstance(cluster, ClusterLink):
            self.runtime.cluster = cluster
            outlet.fence = cluster.fenced
        self.host.runtime = self.runtime
        self.fleet_stats.runtimes[config.id] = self.runtime
        self.host.sessions = self.context.spawn(SessionsActor, "sessions", self.runtime)
        if isinstance(cluster, ClusterLink):
            self.host.cluster = cluster
            self.host.adapter = adapter
            cluster.attach(config.id, self.host)
        connection_cls, args = adapter.connection()
        if isinstance(cluster, ClusterLink) and adapter.singleton_connection():
            self.leased = (connection_cls, args)
            self.host.set_connected(True, STANDBY)
            me = self.ref
            cluster.claim_connection(
                config.id, config.adapter.type, lambda owned: me.tell(_ConnectionLease(owned))
            )
        else:
            self.context.spawn(connection_cls, "connection", *args, supervisor=CONNECTION_STRATEGY)
        log.info("bot %s started (%s adapter)", config.id, config.adapter.type)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Ping):  # answered once on_start (adapter, children) has run
            return True
        if isinstance(message, _ConnectionLease):
            await self._connection_lease(message.owned)
            return None
        raise TypeError(f"unexpected message {message!r}")

    async def _connection_lease(self, owned: bool) -> None:
        current = self.connection
        if owned and current is None and self.leased is not None:
            cls, args = self.leased
            self.connection = self.context.spawn(cls, "connection", *args, supervisor=CONNECTION_STRATEGY)
        elif not owned and current is not None:
            self.connection = None
            await current.stop()  # before another node may start it (the lease's margin)
            self.host.set_connected(True, STANDBY)

    async def on_stop(self) -> None:
        if self.host.cluster is not None:
            self.host.cluster.detach(self.config.id)
        if self.fleet_stats.runtimes.get(self.config.id) is self.runtime:
            del self.fleet_stats.runtimes[self.config.id]
        self.http.remove_owner(self.config.id)
        self.host.in_flight.close()
        self.fleet_stats.connections.pop(self.config.id, None)
        if self.adapter is not None:
            try:
                await self.adapter.close()
            except Exception:
                log.exception("bot %s: adapter close failed", self.config.id)
        log.info("bot %s stopped", self.config.id)
