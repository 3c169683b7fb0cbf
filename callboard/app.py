"""Running a fleet: journal, HTTP server, actor system, signals, reload."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callboard import logs
from callboard.actors.admin import add_admin_routes
from callboard.actors.admin_auth import AdminGuard, resolve_token, token_path
from callboard.actors.backlog import FleetBacklog
from callboard.actors.config import FleetConfig, JournalConfig
from callboard.actors.config_file import ConfigError, load_fleet
from callboard.actors.dashboard import DashboardSampler, Samples, add_dashboard_routes
from callboard.actors.fleet import ApplyConfig, FleetActor, Ready, ReloadResult
from callboard.actors.http import HttpServer
from callboard.actors.runs import add_run_routes
from callboard.actors.runtime import CLUSTER_RESOURCE, FleetStats
from callboard.engine.clock import Clock, LoopClock
from callboard.engine.gc_tuning import tune_for_serving
from callboard.engine.journal import Journal, JournalUnusable
from callboard.engine.journal_store import JournalStore
from callboard.engine.ref import ActorRef
from callboard.engine.system import ActorSystem

log = logging.getLogger("callboard")


@dataclass
class Running:
    """A started fleet (what ``start`` returns; tests drive it directly)."""

    config: FleetConfig
    system: ActorSystem
    journal: JournalStore
    http: HttpServer
    stats: FleetStats
    fleet: ActorRef
    dashboard: Samples
    #: cluster mode's node (actors/cluster.py), None on a single node
    cluster: Any = None

    @property
    def base_url(self) -> str:
        return self.http.base_url

    async def reload(self, config: FleetConfig) -> ReloadResult:
        result: ReloadResult = await self.fleet.ask(ApplyConfig(config))
        self.config = config
        return result

    async def stop(self) -> None:
        """Graceful stop within ``engine.shutdown_timeout``: no new connections,
        actors flush and drain (most of the budget), websockets are closed with
        1001, the journal is closed. Whatever overruns is cancelled."""
        loop = asyncio.get_running_loop()
        budget = self.config.engine.shutdown_timeout
        deadline = loop.time() + budget
        reserve = min(3.0, budget / 4)  # for the HTTP server and the journal
        await self.http.stop_listening()
        self.dashboard.close()
        try:
            async with asyncio.timeout(max(0.1, deadline - reserve - loop.time())):
                await self.system.shutdown(timeout=max(0.05, budget - reserve - 1.0))
        except TimeoutError:
            log.error("shutdown: actors did not stop within %.1fs; cancelled", budget)
        await self.http.close(timeout=max(0.1, deadline - loop.time() - reserve / 2))
        if self.cluster is not None:
            await self.cluster.stop()  # hands its partitions over
        await self.journal.close()


def make_journal(config: JournalConfig, clock: Clock | None = None) -> JournalStore:
    """The SQLite journal, the PostgreSQL one when ``url`` is set, sharded when it is a list."""
    if config.url is None:
        return Journal(
            config.path,
            synchronous=config.synchronous,
            retention_seconds=config.retention,
            dedup_window_seconds=config.dedup_window,
            clock=clock,
        )
    try:
        from callboard.engine.journal_pg import PgJournal
        from callboard.engine.journal_sharded import ShardedJournal
    except ImportError:
        raise SystemExit(
            "engine.journal: a postgresql:// journal needs the 'postgres' extra "
            "(pip install 'callboard[postgres]')"
        ) from None
    if isinstance(config.url, list):
        return ShardedJournal(
            config.urls,
            path=config.path,
            retention_seconds=config.retention,
            dedup_window_seconds=config.dedup_window,
            clock=clock,
            pool_size=config.pool_size,
        )
    return PgJournal(
        config.url.get_secret_value(),
        path=config.path,
        retention_seconds=config.retention,
        dedup_window_seconds=config.dedup_window,
        clock=clock,
        pool_size=config.pool_size,
    )


async def _join_cluster(config: FleetConfig, journal: JournalStore, clock: Clock | None) -> Any:
    """Cluster mode's node (actors/cluster.py), joined; None when running as one node."""
    settings = config.engine.cluster
    if settings is None:
        return None
    try:
        from callboard.actors.cluster import ClusterNode
    except ImportError:
        await journal.close()
        raise SystemExit(
            "engine.cluster needs the 'cluster' extra (pip install 'callboard[cluster]')"
        ) from None
    node = ClusterNode(
        settings.nats.get_secret_value(),
        settings.node,
        settings.partitions,
        journal,
        clock or LoopClock(asyncio.get_running_loop()),
        lease_ttl=settings.lease,
        stream=settings.stream,
    )
    try:
        await node.start()
    except Exception as exc:
        await journal.close()
        raise SystemExit(f"engine.cluster: cannot join through NATS: {type(exc).__name__}: {exc}") from None
    return node


async def start(
    config: FleetConfig,
    *,
    port: int | None = None,
    clock: Clock | None = None,
    resources: Mapping[str, object] | None = None,
) -> Running:
    """Open the journal, serve HTTP, start the fleet; ``port`` overrides the config (0: any).
    ``resources`` are live objects adapters may ask for by name (``AdapterHost.resource``)."""
    engine = config.engine
    journal = make_journal(engine.journal, clock)
    try:
        await journal.open()
    except JournalUnusable as exc:
        raise SystemExit(str(exc)) from None
    cluster = await _join_cluster(config, journal, clock)
    if cluster is not None:
        resources = {**(resources or {}), CLUSTER_RESOURCE: cluster}
    system = ActorSystem(config.name, clock=clock, resources=resources)
    http = HttpServer(engine.admin.host, engine.admin.port if port is None else port)
    token, _ = resolve_token(engine.admin, engine.journal.path)
    logs.hide(token)
    http.guard = AdminGuard(engine.admin, token).check
    backlog = FleetBacklog(engine.backlog.max_events, engine.backlog.shed_at)
    stats = FleetStats(system.metrics.live_actors, lambda: system.metrics.messages, backlog)
    running: Running | None = None

    def enabled_bots() -> list[str]:
        """The bots /readyz expects: the current file's, so a reload that removes one is seen."""
        current = running.config if running is not None else config
        return [b.id for b in current.bots if b.enabled]

    add_admin_routes(
        http,
        system,
        stats,
        journal,
        enabled_bots,
        metrics_open=engine.admin.metrics_open,
        collectors=cluster.collectors() if cluster is not None else (),
    )
    if cluster is not None:
        cluster.add_routes(http)
    add_run_routes(http, stats, journal)
    samples = Samples(system, stats, journal, lambda: running.config if running is not None else config)
    add_dashboard_routes(http, samples)
    try:
        await http.start()
    except OSError as exc:
        await journal.close()
        raise SystemExit(
            f"cannot listen on {engine.admin.host}:{engine.admin.port}: {exc.strerror}"
        ) from None
    fleet = system.spawn(FleetActor, "fleet", config, journal, http, stats)
    system.spawn(DashboardSampler, "dashboard", samples)
    running = Running(config, system, journal, http, stats, fleet, samples, cluster)
    await fleet.ask(Ready(), timeout=60)
    return running


def reload_refusal(running: FleetConfig, new: FleetConfig) -> str | None:
    """Why a reloaded file must not be applied, or None. A file that would stop every
    bot is far more often a truncated write or a wrong path than an intent; an
    operator who means it says so with ``allow_no_bots: true``."""
    if any(b.enabled for b in new.bots) or not any(b.enabled for b in running.bots):
        return None
    if new.allow_no_bots:
        return None
    return (
        "it would stop every bot (empty file or no enabled bots); "
        "set 'allow_no_bots: true' in the file to do that on purpose"
    )


async def serve(path: str | Path, *, announce: Callable[[str], Any] = print) -> None:
    """Run the fleet in ``path`` until SIGTERM/SIGINT; SIGHUP reloads the file."""
    config = load_fleet(path)
    logs.hide_secrets(config)
    logs.use_format(config.engine.logging.format)
    running = await start(config)
    tune_for_serving()  # start-up is done: freeze what it built, collect rarely
    for bot_id, runtime in running.stats.runtimes.items():
        for label, link in runtime.links.items():
            url = link if "://" in link else f"{running.base_url}{link}"
            announce(f"{label} for bot {bot_id!r}: {url}")
    announce(f"dashboard: {running.base_url}/admin/   (API: /healthz /readyz /metrics /api/actors /api/bots)")
    admin = config.engine.admin
    if admin.needs_token:
        where = (
            "engine.admin.token" if admin.token is not None else str(token_path(config.engine.journal.path))
        )
        announce(f"admin API: send 'Authorization: Bearer TOKEN' (the token is in {where})")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def reload() -> None:
        try:
            new = await asyncio.to_thread(load_fleet, path)  # a big file must not stall the loop
        except ConfigError as exc:
            log.error("reload refused, keeping the running fleet:\n%s", exc)
            return
        refusal = reload_refusal(running.config, new)
        if refusal is not None:
            log.error("reload of %s refused, keeping the running fleet: %s", path, refusal)
            return
        logs.hide_secrets(new)
        logs.use_format(new.engine.logging.format)
        await running.reload(new)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))
    try:
        await stop.wait()
        log.info("stopping: flushing open bursts and draining mailboxes")
    finally:
        await running.stop()
        log.info("stopped")
