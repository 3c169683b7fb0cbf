"""Cluster mode: one fleet on several engine nodes over NATS JetStream and a
shared PostgreSQL journal (docs/scale-out.md).

Every node accepts events (webhooks, sockets), commits them to the journal as
one node would, then publishes each to the stream on ``<stream>.ev.<bot>.<p>``
where ``p = crc32(bot, chat type, chat id) mod partitions``, with
``Nats-Msg-Id`` = the event's dedup key (or bot and seq). A partition's
session actors run on the node holding its lease: a key ``part.<p>`` in a
JetStream KV bucket whose TTL is the lease time, created by its owner
(``create`` fails while another holds it) and renewed by compare-and-set on
its revision. The revision that created it is the lease epoch.

Fencing: a lease is valid locally until the time of the last renewal request
that succeeded plus the TTL minus a margin, so a node that cannot reach NATS
stops acting for a partition before the server lets anyone else take it.
Sends (``Outlet.fence``) and the done marks and state writes at the end of a
run (``SessionActor``) check it; a fenced run leaves its events pending for
the next owner.

Takeover: on acquiring partitions a node replays their unfinished events from
the journal, then consumes the partition's durable consumer (events the old
owner never took, or took and never acknowledged). Redelivered messages and
those older than the replay are checked against the journal first.

Connections that must exist once per fleet (long polling, socket modes) are
leased the same way (actors/cluster_connections.py). What an adapter hands its
peers (``AdapterHost.peers``: a web chat reply for a socket on another node) goes
over core NATS on ``<stream>.peer.<bot>.<node>``, best effort: the journal's
stored output stays the record a reconnecting client reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import nats
import orjson
from aiohttp import web
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StreamConfig
from nats.js.errors import Error as JetStreamError
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from callboard.actors.cluster_connections import ConnectionLeases
from callboard.actors.http import HttpServer
from callboard.engine.clock import Clock, sleep
from callboard.engine.events import Event, SessionKey, decode_event, encode_event
from callboard.engine.journal import PendingEvent
from callboard.engine.journal_store import JournalStore
from callboard.engine.supervision import Backoff

log = logging.getLogger("callboard.cluster")

#: share of the lease time kept as a margin against clock drift and slow replies
LEASE_MARGIN = 0.25
#: how often each owned partition's consumer lag is read from JetStream (seconds)
LAG_INTERVAL = 2.0
#: longest a rebalancing handover waits for this node's sessions to finish what they took (the
#: lease is renewed meanwhile). A run still going then is fenced: its events replay on the new
#: owner, and a send it already made may repeat, as after a kill. Half a lease time (what a stop
#: still allows, its renewals being over) was too short on a loaded machine: a run's send and its
#: fencing straddled the release.
DRAIN_LIMIT = 30.0
PUBLISH_RETRY = Backoff(min=0.1, max=5.0, factor=2.0, jitter=0.2)


def partition_of(key: SessionKey, partitions: int) -> int:
    """Stable across nodes and restarts; every thread of a chat is in one partition."""
    return zlib.crc32(f"{key.bot}\x00{key.chat_type}\x00{key.chat_id}".encode()) % partitions


class BotSink(Protocol):
    """How the cluster hands a bot's events to its sessions on this node."""

    def deliver(self, seq: int, event: Event, key: SessionKey) -> None: ...

    def replay(self, pending: list[PendingEvent]) -> None: ...

    def busy(self, where: Callable[[SessionKey], bool]) -> bool:
        """Whether sessions ``where`` selects hold unfinished events here."""
        ...

    def from_peer(self, data: bytes) -> None:
        """What the bot's adapter on another node handed its peers."""
        ...


@dataclass
class Lease:
    partition: int
    epoch: int  # the KV revision that created it
    revision: int  # the last renewal's
    valid_until: float  # engine-clock time
    #: messages at or below this seq may have been replayed from the journal
    replayed_upto: int = 0
    task: asyncio.Task[None] | None = None


@dataclass
class ClusterCounters:
    acquired: int = 0
    lost: int = 0
    released: int = 0
    published: int = 0
    consumed: int = 0
    skipped_done: int = 0
    publish_retries: int = 0
    last_takeover_seconds: float | None = None
    lag: dict[int, int] = field(default_factory=dict)


class ClusterNode:
    """One engine node's membership: leases, the partitions' consumers, publishing."""

    def __init__(
        self,
        url: str,
        node: str,
        partitions: int,
        journal: JournalStore,
        clock: Clock,
        *,
        lease_ttl: float = 3.0,
        stream: str = "callboard",
    ) -> None:
        self.url = url
        self.node = node
        self.partitions = partitions
        self.journal = journal
        self.clock = clock
        self.ttl = lease_ttl
        self.stream = stream
        self.leases: dict[int, Lease] = {}
        self.sinks: dict[str, BotSink] = {}
        self.nodes: set[str] = {node}
        self.counters = ClusterCounters()
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._task: asyncio.Task[None] | None = None
        self._outgoing: asyncio.Queue[tuple[str, bytes, dict[str, str]]] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self.connections = ConnectionLeases(node, lease_ttl, clock, self._valid_from)
        self._peer_out: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._peer_task: asyncio.Task[None] | None = None
        self._fence_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._nc = await nats.connect(
            self.url,
            name=f"callboard-{self.node}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=2,
        )
        self._js = self._nc.jetstream(timeout=max(1.0, self.ttl / 3))
        js = self._nc.jetstream(timeout=10.0)  # setting up may wait behind other nodes doing the same
        subjects = [f"{self.stream}.ev.>"]
        with contextlib.suppress(JetStreamError):
            await js.add_stream(
                StreamConfig(name=self.stream, subjects=subjects, duplicate_window=120.0, max_age=86400.0)
            )
        self._kv = await js.create_key_value(
            KeyValueConfig(bucket=f"{self.stream}-leases", ttl=self.ttl, history=1)
        )
        for p in range(self.partitions):  # every partition's consumer exists before any event
            with contextlib.suppress(JetStreamError):
                await js.add_consumer(
                    self.stream,
                    ConsumerConfig(
                        durable_name=f"p{p}",
                        filter_subject=f"{self.stream}.ev.*.{p}",
                        ack_policy=AckPolicy.EXPLICIT,
                        deliver_policy=DeliverPolicy.ALL,
                        ack_wait=10.0,
                        max_ack_pending=20000,
                    ),
                )
        await self._nc.subscribe(f"{self.stream}.peer.*.*", cb=self._from_peer)
        loop = asyncio.get_running_loop()
        self._publisher = loop.create_task(self._publish_loop())
        self._peer_task = loop.create_task(self._peer_loop())
        self._fence_task = loop.create_task(self._fence_connections())
        self._task = loop.create_task(self._membership())
        log.info("cluster node %s joined (%d partitions, lease %.1fs)", self.node, self.partitions, self.ttl)

    async def stop(self) -> None:
        """Hand every partition and connection over cleanly: stop consuming, then delete the leases."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._drain_outgoing()
        await asyncio.gather(
            self.connections.release_all(self._kv),
            *(self._release(lease, drain=self.ttl / 2) for lease in list(self.leases.values())),
        )
        for task in (self._publisher, self._peer_task, self._fence_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._kv is not None:
            with contextlib.suppress(Exception):
                await self._kv.delete(f"node.{self.node}")
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    # ------------------------------------------------------------------ bots

    def attach(self, bot: str, sink: BotSink) -> None:
        self.sinks[bot] = sink

    def detach(self, bot: str) -> None:
        self.sinks.pop(bot, None)
        self.connections.unclaim(bot, self._kv)

    def claim_connection(self, bot: str, adapter: str, on_change: Callable[[bool], None]) -> None:
        """Run ``bot``'s connection only while this node holds its lease: ``on_change(True)``
        when it takes it (start the connection), ``on_change(False)`` when it loses it."""
        self.connections.claim(bot, adapter, on_change)

    def peers(self, bot: str) -> Callable[[bytes], None]:
        """A function handing ``data`` to ``bot``'s adapter on the other nodes (in order)."""
        queue = self._peer_out
        return lambda data: queue.put_nowait((bot, data))

    async def _peer_loop(self) -> None:
        nc = self._nc
        queue = self._peer_out
        while True:
            bot, data = await queue.get()
            try:
                await nc.publish(f"{self.stream}.peer.{bot}.{self.node}", data)
            except Exception as exc:  # best effort: the stored copy stays in the journal
                log.warning("cluster %s: peer message of %s dropped: %r", self.node, bot, exc)

    async def _from_peer(self, message: Any) -> None:
        _, _, bot, node = message.subject.rsplit(".", 3)
        if node == self.node:
            return
        sink = self.sinks.get(bot)
        if sink is not None:
            sink.from_peer(message.data)

    async def _fence_connections(self) -> None:
        """Stop a connection as soon as its lease runs out locally (well before the
        server can let another node take it), not at the next renewal round."""
        while True:
            await sleep(self.clock, self.ttl / 20)
            self.connections.expire()

    def owns(self, key: SessionKey) -> bool:
        lease = self.leases.get(partition_of(key, self.partitions))
        return lease is not None and self.clock.now() < lease.valid_until

    def fenced(self, bot: str, chat_type: str, chat_id: str) -> bool:
        return not self.owns(SessionKey(bot, chat_type, chat_id))

    def publish(self, seq: int, event: Event, key: SessionKey) -> None:
        """Queue a committed event for the stream (in order; retried until the stream has it)."""
        p = partition_of(key, self.partitions)
        bot = key.bot
        msg_id = f"{bot}:{event.dedup_key}" if event.dedup_key else f"{bot}#{seq}"
        headers = {"Nats-Msg-Id": msg_id, "Cb-Seq": str(seq), "Cb-Bot": bot}
        self._outgoing.put_nowait((f"{self.stream}.ev.{bot}.{p}", encode_event(event), headers))

    async def _publish_loop(self) -> None:
        """Publishes keep their order on the connection; their acks are awaited per batch,
        and a batch's failures are published again (``Nats-Msg-Id`` drops repeats)."""
        js = self._js
        queue = self._outgoing
        while True:
            self._idle.set()
            items = [await queue.get()]
            self._idle.clear()
            while not queue.empty() and len(items) < 512:
                items.append(queue.get_nowait())
            attempt = 0
            while items:
                futures = [js.publish_async(s, d, headers=h) for s, d, h in items]
                results = await asyncio.gather(*futures, return_exceptions=True)
                failed = [
                    item for item, r in zip(items, results, strict=True) if isinstance(r, BaseException)
                ]
                self.counters.published += len(items) - len(failed)
                if failed:
                    self.counters.publish_retries += len(failed)
                    log.warning("cluster %s: %d publishes failed; retrying", self.node, len(failed))
                    await sleep(self.clock, PUBLISH_RETRY.delay(attempt))
                    attempt += 1
                items = failed

    async def _drain_outgoing(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                while not self._outgoing.empty() or not self._idle.is_set():
                    await self._idle.wait()
                    await asyncio.sleep(0)

    # ------------------------------------------------------------------ leases

    async def _membership(self) -> None:
        """Renewals run on their own task, so a slow takeover never delays them."""
        period = self.ttl / 4
        await self._heartbeat()
        renewals = asyncio.get_running_loop().create_task(self._renewals(period))
        try:
            await sleep(self.clock, period)  # nodes starting together see each other before taking
            rounds = 0
            while True:
                rounds += 1
                try:
                    before = self.nodes
                    await self._balance()
                    if before - self.nodes:  # a node left: hand on what it committed, never published
                        await self._sweep(older_than=0.5)
                    elif rounds % 8 == 0:
                        await self._sweep(older_than=2 * self.ttl)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("cluster %s: membership round failed: %r", self.node, exc)
                await sleep(self.clock, period)
        finally:
            renewals.cancel()
            await asyncio.gather(renewals, return_exceptions=True)

    async def _renewals(self, period: float) -> None:
        while True:
            await sleep(self.clock, period)
            try:
                await self._heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster %s: heartbeat failed: %r", self.node, exc)
            self._expire()

    def _valid_from(self, sent: float) -> float:
        return sent + self.ttl * (1 - LEASE_MARGIN)

    async def _heartbeat(self) -> None:
        kv = self._kv
        await asyncio.wait_for(kv.put(f"node.{self.node}", b"1"), self.ttl / 3)

        renew_connections = self.connections.renew(kv)

        async def renew(lease: Lease) -> None:
            sent = self.clock.now()
            try:
                revision = await asyncio.wait_for(
                    kv.update(f"part.{lease.partition}", self.node.encode(), last=lease.revision),
                    self.ttl / 3,
                )
            except KeyWrongLastSequenceError:
                self._lost(lease, "taken by another node")
                return
            except Exception as exc:  # unreachable: the lease runs out locally first
                log.warning("cluster %s: lease %d not renewed: %r", self.node, lease.partition, exc)
                return
            lease.revision = revision
            lease.valid_until = self._valid_from(sent)

        await asyncio.gather(renew_connections, *(renew(lease) for lease in list(self.leases.values())))

    def _expire(self) -> None:
        now = self.clock.now()
        for lease in list(self.leases.values()):
            if now >= lease.valid_until:
                self._lost(lease, "not renewed in time (fenced)")

    def _lost(self, lease: Lease, why: str) -> None:
        if self.leases.get(lease.partition) is not lease:
            return
        del self.leases[lease.partition]
        self.counters.lost += 1
        if lease.task is not None:
            lease.task.cancel()
        log.warning(
            "cluster %s: lost partition %d (epoch %d): %s", self.node, lease.partition, lease.epoch, why
        )

    async def _balance(self) -> None:
        kv = self._kv
        try:
            keys = await asyncio.wait_for(kv.keys(), self.ttl / 3)
        except NoKeysError:
            keys = []
        self.nodes = {k[5:] for k in keys if k.startswith("node.")} | {self.node}
        await self.connections.balance(kv, set(keys), len(self.nodes))
        taken = {int(k[5:]) for k in keys if k.startswith("part.")}
        target = math.ceil(self.partitions / len(self.nodes))
        mine = len(self.leases)
        if mine < target:
            start = zlib.crc32(self.node.encode()) % self.partitions  # nodes start apart
            free = [
                p
                for p in ((start + i) % self.partitions for i in range(self.partitions))
                if p not in taken and p not in self.leases
            ]
            acquired: list[Lease] = []
            for p in free[: target - mine]:
                sent = self.clock.now()
                try:
                    epoch = await asyncio.wait_for(kv.create(f"part.{p}", self.node.encode()), self.ttl / 3)
                except KeyWrongLastSequenceError:
                    continue
                lease = Lease(p, epoch, epoch, self._valid_from(sent))
                self.leases[p] = lease
                acquired.append(lease)
            if acquired:
                await self._activate(acquired)
        elif mine > target and len(taken | set(self.leases)) >= self.partitions:
            # a node joined (everything is owned, this node holds more than its share):
            # hand one partition over per round
            lease = max(self.leases.values(), key=lambda item: item.partition)
            await self._release(lease)

    async def _release(self, lease: Lease, drain: float = DRAIN_LIMIT) -> None:
        """Clean handover: stop consuming, let what was taken be handled (for ``drain``
        seconds at most), then delete the lease."""
        if lease.task is not None:
            lease.task.cancel()
            await asyncio.gather(lease.task, return_exceptions=True)
        waited = 0.0
        while waited < drain and any(
            sink.busy(lambda key: partition_of(key, self.partitions) == lease.partition)
            for sink in self.sinks.values()
        ):
            await sleep(self.clock, 0.05)  # drain: this node's sessions finish what they took
            waited += 0.05
        await self.journal.flush()
        self.leases.pop(lease.partition, None)
        self.counters.released += 1
        with contextlib.suppress(Exception):
            await self._kv.delete(f"part.{lease.partition}")
        log.info("cluster %s: released partition %d (epoch %d)", self.node, lease.partition, lease.epoch)

    async def _activate(self, leases: list[Lease]) -> None:
        """Re-activate the partitions' sessions from the journal, then consume."""
        began = time.monotonic()
        top = await self.journal.query("SELECT COALESCE(MAX(seq), 0) FROM events")
        upto = max(int(row[0]) for row in top)  # a sharded journal answers a row per shard
        wanted = {lease.partition for lease in leases}
        replayed = 0
        for bot, sink in list(self.sinks.items()):
            pending = [
                item
                for item in await self.journal.pending(bot)
                if partition_of(item.event.session_key(), self.partitions) in wanted
            ]
            if pending:
                sink.replay(pending)
                replayed += len(pending)
        loop = asyncio.get_running_loop()
        for lease in leases:
            lease.replayed_upto = upto
            lease.task = loop.create_task(self._consume(lease))
            lease.task.add_done_callback(self._consumer_ended)
        self.counters.acquired += len(leases)
        self.counters.last_takeover_seconds = time.monotonic() - began
        log.info(
            "cluster %s: took partitions %s; replayed %d unfinished events",
            self.node,
            sorted(wanted),
            replayed,
        )

    async def _sweep(self, older_than: float) -> None:
        """Hand on unfinished events of owned partitions that are older than ``older_than``
        seconds and not in flight here: committed on a node that died before publishing
        them (a repeat of one in flight elsewhere is dropped by its session's seq check)."""
        if not self.leases:
            return
        owned = set(self.leases)
        horizon = self.journal.wall() - older_than
        for bot, sink in list(self.sinks.items()):
            rows = await self.journal.query(
                "SELECT seq FROM events WHERE bot=? AND done_at IS NULL AND received_at < ?", (bot, horizon)
            )
            old = {int(row[0]) for row in rows}
            if not old:
                continue
            stale = [
                item
                for item in await self.journal.pending(bot)
                if item.seq in old and partition_of(item.event.session_key(), self.partitions) in owned
            ]
            if stale:
                log.info(
                    "cluster %s: %d unfinished events of owned partitions handed on", self.node, len(stale)
                )
                sink.replay(stale)

    def _consumer_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster %s: a partition consumer failed: %r", self.node, task.exception())

    async def _consume(self, lease: Lease) -> None:
        p = lease.partition
        sub = await self._js.pull_subscribe_bind(durable=f"p{p}", stream=self.stream)
        lag_checked = 0.0
        try:
            while self.leases.get(p) is lease:
                if self.clock.now() >= lease.valid_until:  # fenced until a renewal lands
                    await sleep(self.clock, 0.05)
                    continue
                if self.clock.now() - lag_checked >= LAG_INTERVAL:
                    lag_checked = self.clock.now()
                    with contextlib.suppress(Exception):
                        info = await sub.consumer_info()
                        self.counters.lag[p] = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                try:
                    messages = await sub.fetch(batch=256, timeout=0.5)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                except Exception as exc:
                    log.warning("cluster %s: fetch on partition %d failed: %r", self.node, p, exc)
                    await sleep(self.clock, 0.25)
                    continue
                for index, message in enumerate(messages):
                    if self.leases.get(p) is not lease or self.clock.now() >= lease.valid_until:
                        for rest in messages[index:]:  # not taken: delivered again at once
                            with contextlib.suppress(Exception):
                                await rest.nak()
                        break
                    await self._take(lease, message)
        finally:
            self.counters.lag.pop(p, None)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _take(self, lease: Lease, message: Any) -> None:
        headers = message.headers or {}
        seq = int(headers.get("Cb-Seq", "0"))
        sink = self.sinks.get(headers.get("Cb-Bot", ""))
        if sink is None:  # a bot this node does not run (yet): try again later
            await message.nak(delay=1.0)
            return
        maybe_done = message.metadata.num_delivered > 1 or seq <= lease.replayed_upto
        if maybe_done and await self.journal.event_status(seq) != "pending":
            self.counters.skipped_done += 1
            await message.ack()
            return
        event = decode_event(message.data)
        sink.deliver(seq, event, event.session_key())
        self.counters.consumed += 1
        await message.ack()

    # ------------------------------------------------------------------ reporting

    def collectors(self) -> list[Collector]:
        return [ClusterCollector(self)]

    def add_routes(self, http: HttpServer) -> None:
        """GET /api/cluster (behind the admin token like every /api route)."""

        async def cluster(_: web.Request) -> web.StreamResponse:
            return web.Response(body=orjson.dumps(self.snapshot()), content_type="application/json")

        http.add("GET", "/api/cluster", cluster)

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        return {
            "node": self.node,
            "nodes": sorted(self.nodes),
            "partitions": self.partitions,
            "owned": {  # leases valid now (what sends are checked against)
                str(p): {"epoch": lease.epoch}
                for p, lease in sorted(self.leases.items())
                if self.clock.now() < lease.valid_until
            },
            "handovers": {"acquired": c.acquired, "lost": c.lost, "released": c.released},
            "published": c.published,
            "consumed": c.consumed,
            "skipped_done": c.skipped_done,
            "publish_retries": c.publish_retries,
            "publish_queue": self._outgoing.qsize(),
            "last_takeover_seconds": c.last_takeover_seconds,
            "consumer_lag": sum(c.lag.values()),  # stream messages not yet taken or acknowledged
            "connections": self.connections.snapshot(),
            "connection_handovers": dict(vars(self.connections.counters)),
        }


class ClusterCollector:
    """/metrics: partitions owned, lease epochs, handovers, publishing."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def collect(self) -> Iterable[Metric]:
        node = self.node
        c = node.counters
        yield GaugeMetricFamily(
            "callboard_cluster_nodes", "live nodes seen in the lease bucket", len(node.nodes)
        )
        yield GaugeMetricFamily(
            "callboard_cluster_partitions_owned", "partitions this node owns", len(node.leases)
        )
        epochs = GaugeMetricFamily(
            "callboard_cluster_lease_epoch", "epoch of each owned lease", labels=["partition"]
        )
        for p, lease in node.leases.items():
            epochs.add_metric([str(p)], lease.epoch)
        yield epochs
        handovers = CounterMetricFamily("callboard_cluster_handovers", "partition moves", labels=["kind"])
        handovers.add_metric(["acquired"], c.acquired)
        handovers.add_metric(["lost"], c.lost)
        handovers.add_metric(["released"], c.released)
        yield handovers
        yield CounterMetricFamily(
            "callboard_cluster_published", "events published to the stream", c.published
        )
        yield GaugeMetricFamily(
            "callboard_cluster_publish_queue", "events waiting to be published", node._outgoing.qsize()
        )
        lag = GaugeMetricFamily(
            "callboard_cluster_consumer_lag",
            "stream messages waiting on an owned partition",
            labels=["partition"],
        )
        for p, waiting in c.lag.items():
            lag.add_metric([str(p)], waiting)
        yield lag
        held = GaugeMetricFamily(
            "callboard_cluster_connection_held",
            "1 while this node holds the lease of a once-per-fleet connection (and runs it)",
            labels=["connection"],
        )
        epoch = GaugeMetricFamily(
            "callboard_cluster_connection_epoch", "epoch of each connection lease held", labels=["connection"]
        )
        for key, state in node.connections.snapshot().items():
            held.add_metric([key], 1.0 if state["here"] else 0.0)
            if state["here"]:
                epoch.add_metric([key], state["epoch"])
        yield held
        yield epoch
        moves = CounterMetricFamily(
            "callboard_cluster_connection_handovers", "connection lease moves", labels=["kind"]
        )
        for kind, count in vars(node.connections.counters).items():
            moves.add_metric([kind], count)
        yield moves
