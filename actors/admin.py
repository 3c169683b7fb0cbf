"""Admin endpoints on the engine's HTTP server: health, readiness, metrics, actors.

``/healthz`` and ``/readyz`` are open (probes); the rest sit behind the admin
check (``actors.admin_auth``: token and Host allow-list). Readiness includes a
journal write probe: a read-only or full disk makes the engine unready, with
the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from callboard.actors.http import HttpServer
from callboard.actors.runtime import FleetStats
from callboard.engine.clock import Clock
from callboard.engine.journal import JournalClosed, StorageUnavailable
from callboard.engine.journal_store import JournalStore
from callboard.engine.system import ActorSystem

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: a journal write that takes longer than this makes /readyz fail
WRITE_PROBE_TIMEOUT = 5.0
#: a successful write probe is reused this long (an open endpoint must not force a sync per call)
WRITE_PROBE_FRESH = 1.0


class EngineCollector(Collector):
    """Reads the runtime and per-bot counters at scrape time."""

    def __init__(self, system: ActorSystem, stats: FleetStats, journal: JournalStore) -> None:
        self.system = system
        self.stats = stats
        self.journal = journal

    def collect(self) -> Any:
        metrics = self.system.metrics
        yield CounterMetricFamily(
            "callboard_actor_messages", "messages handled by actors", value=metrics.messages
        )
        yield CounterMetricFamily(
            "callboard_dead_letters", "messages to stopped actors", value=metrics.dead_letters
        )
        yield CounterMetricFamily(
            "callboard_mailbox_dropped", "messages dropped by mailbox policy", value=metrics.dropped
        )
        yield GaugeMetricFamily("callboard_actors", "live actors", value=metrics.live_actors())
        total, largest = metrics.mailbox_depth()
        yield GaugeMetricFamily("callboard_mailbox_depth", "queued messages over all actors", value=total)
        yield GaugeMetricFamily("callboard_mailbox_depth_max", "largest single mailbox", value=largest)
        for name, source in (("failures", metrics.failures), ("restarts", metrics.restarts)):
            family = CounterMetricFamily(
                f"callboard_actor_{name}", f"actor {name} by class", labels=["actor_class"]
            )
            for cls, count in sorted(source.items()):
                family.add_metric([cls], count)
            yield family
        yield CounterMetricFamily("callboard_journal_commits", "journal commits", value=self.journal.commits)
        yield CounterMetricFamily(
            "callboard_journal_operations", "journal operations committed", value=self.journal.batched_ops
        )
        names = (
            "accepted",
            "duplicates",
            "runs",
            "handled_events",
            "failed_runs",
            "timed_out_runs",
            "unrouted",
            "sends",
            "send_failures",
            "send_retries",
            "receipts_skipped",
        )
        families = {
            n: CounterMetricFamily(f"callboard_bot_{n}", f"per bot: {n}", labels=["bot"]) for n in names
        }
        sessions = GaugeMetricFamily("callboard_bot_sessions", "live sessions per bot", labels=["bot"])
        for bot_id, runtime in sorted(self.stats.runtimes.items()):
            for n in names:
                families[n].add_metric([bot_id], getattr(runtime.counters, n))
            sessions.add_metric([bot_id], runtime.live_sessions)
        yield from families.values()
        yield sessions
        usage = CounterMetricFamily(
            "callboard_bot_handler_usage",
            "per bot: handler usage (agent runs, tokens, tool calls, seconds; webhook deliveries...)",
            labels=["bot", "name"],
        )
        for bot_id, runtime in sorted(self.stats.runtimes.items()):
            for name, value in sorted(runtime.counters.usage.items()):
                usage.add_metric([bot_id, name], value)
        yield usage
        up = GaugeMetricFamily("callboard_bot_connected", "1 when the bot's connection is up", labels=["bot"])
        for bot_id, (connected, _) in sorted(self.stats.connections.items()):
            up.add_metric([bot_id], 1.0 if connected else 0.0)
        yield up


def add_admin_routes(
    http: HttpServer,
    system: ActorSystem,
    stats: FleetStats,
    journal: JournalStore,
    expected_bots: Callable[[], list[str]],
    metrics_open: bool = False,
    collectors: Sequence[Collector] = (),
) -> None:
    probe = WriteProbe(journal, system.clock)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(system, stats, journal))
    for collector in collectors:  # e.g. the cluster node's
        registry.register(collector)

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.StreamResponse:
        problems = []
        if not journal.is_open:
            problems.append("journal is not open")
        else:
            problems.extend(await probe.problems())
        if system.closed:
            problems.append("shutting down")
        for bot_id in expected_bots():
            connected, detail = stats.connections.get(bot_id, (False, "not started"))
            if not connected:
                problems.append(f"bot {bot_id}: {detail}")
        status = 200 if not problems else 503
        return web.json_response({"ready": not problems, "problems": problems}, status=status)

    async def metrics(request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    async def actors(request: web.Request) -> web.StreamResponse:
        return web.json_response(system.tree())

    async def bots(request: web.Request) -> web.StreamResponse:
        out = []
        for bot_id, runtime in sorted(stats.runtimes.items()):
            connected, detail = stats.connections.get(bot_id, (False, "unknown"))
            out.append(
                {
                    "id": bot_id,
                    "adapter": runtime.config.adapter.type,
                    "connected": connected,
                    "connection": detail,
                    "sessions": runtime.live_sessions,
                    "counters": {k: v for k, v in vars(runtime.counters).items() if k != "by_type"},
                    "events_by_type": dict(runtime.counters.by_type),
                    "manifest": runtime.api.manifest().model_dump(),
                }
            )
        return web.json_response(out)

    http.add("GET", "/healthz", healthz)
    http.add("GET", "/readyz", readyz)
    http.add("GET", "/metrics", metrics)
    http.add("GET", "/api/actors", actors)
    http.add("GET", "/api/bots", bots)
    http.allow_open("/healthz", "/readyz", *(["/metrics"] if metrics_open else []))


class WriteProbe:
    """/readyz's journal write: concurrent requests share one probe, and a success
    is reused for ``WRITE_PROBE_FRESH`` seconds."""

    def __init__(self, journal: JournalStore, clock: Clock) -> None:
        self.journal = journal
        self.clock = clock
        self.ok_at: float | None = None
        self.running: asyncio.Future[list[str]] | None = None

    async def problems(self) -> list[str]:
        """Why the journal cannot take writes now, or nothing."""
        problem = self.journal.storage_problem
        if problem is not None:
            return [problem]
        if self.ok_at is not None and self.clock.now() - self.ok_at < WRITE_PROBE_FRESH:
            return []
        if self.running is None:
            self.running = asyncio.ensure_future(self._probe())
            self.running.add_done_callback(self._done)
        return list(await asyncio.shield(self.running))

    def _done(self, _: asyncio.Future[list[str]]) -> None:
        self.running = None

    async def _probe(self) -> list[str]:
        try:
            async with asyncio.timeout(WRITE_PROBE_TIMEOUT):
                await self.journal.write_probe()
        except TimeoutError:
            return [f"journal write probe took longer than {WRITE_PROBE_TIMEOUT:g}s"]
        except (StorageUnavailable, JournalClosed) as exc:
            return [self.journal.storage_problem or str(exc)]
        self.ok_at = self.clock.now()
        return []
