"""The operator's dashboard: ``/admin/`` (static page, no build step) and the data it shows.

- ``GET /api/overview``: one snapshot: engine figures, each bot's counters and connection, the
  last minutes of per-second samples (so a fresh page draws its sparklines at once), the actor
  tree, and each bot's effective config with secrets masked.
- ``GET /api/stream``: server-sent events: a ``sample`` every second and the ``tree`` every few
  seconds, pushed by ``DashboardSampler`` (an actor on the engine clock) to every open page.

The page itself holds no data and is open; everything it fetches sits behind the admin check
(the page sends the token it was given in its URL fragment or its login field).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from callboard.actors.config import FleetConfig
from callboard.actors.http import HttpServer
from callboard.actors.runtime import FleetStats
from callboard.engine.actor import Actor
from callboard.engine.journal_store import JournalStore
from callboard.engine.system import ActorSystem

#: seconds between samples, and how many are kept (5 minutes)
SAMPLE_EVERY = 1.0
HISTORY = 300
#: the tree is pushed every this many samples (it is larger and changes slowly)
TREE_EVERY = 3
#: children listed per node of the page's tree; the rest are counted (``more``)
TREE_CHILDREN = 500
#: a page that does not keep up loses samples rather than growing this queue
SUBSCRIBER_QUEUE = 64

_STATIC = {
    "": ("index.html", "text/html"),
    "app.js": ("app.js", "text/javascript"),
    "style.css": ("style.css", "text/css"),
}
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_COUNTERS = ("accepted", "duplicates", "runs", "failed_runs", "timed_out_runs", "sends", "send_failures")


class Samples:
    """Per-second figures for the dashboard: a bounded history and the open streams."""

    def __init__(
        self,
        system: ActorSystem,
        stats: FleetStats,
        journal: JournalStore,
        config_of: Callable[[], FleetConfig],
    ) -> None:
        self.system = system
        self.stats = stats
        self.journal = journal
        self.config_of = config_of
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.subscribers: set[asyncio.Queue[bytes | None]] = set()
        self.taken = 0

    def close(self) -> None:
        """End every open stream (a graceful stop must not wait for the pages)."""
        for queue in self.subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def take(self, now: float) -> None:
        sample = self.sample(now)
        self.history.append(sample)
        self.taken += 1
        if self.subscribers:
            self._push("sample", sample)
            if self.taken % TREE_EVERY == 0:
                self._push("tree", self.system.tree(TREE_CHILDREN))

    def sample(self, now: float) -> dict[str, Any]:
        metrics = self.system.metrics
        depth, largest = metrics.mailbox_depth()
        bots: dict[str, Any] = {}
        for bot_id, runtime in self.stats.runtimes.items():
            connected, detail = self.stats.connections.get(bot_id, (False, "unknown"))
            counters = runtime.counters
            bots[bot_id] = {
                "adapter": runtime.config.adapter.type,
                "connected": connected,
                "connection": detail,
                "sessions": runtime.live_sessions,
                "in_flight": runtime.in_flight.total,
                "refused": runtime.in_flight.refused,
                **{name: getattr(counters, name) for name in _COUNTERS},
            }
        return {
            "t": now,
            "engine": {
                "actors": metrics.live_actors(),
                "messages": metrics.messages,
                "mailbox_depth": depth,
                "mailbox_max": largest,
                "dead_letters": metrics.dead_letters,
                "journal_commits": self.journal.commits,
                "journal_problem": self.journal.storage_problem,
                "in_flight": self.stats.backlog.total,
                "in_flight_max": self.stats.backlog.max_events,
                "sandboxes": metrics.live_by_class["SandboxSessionActor"],
            },
            "bots": bots,
        }

    def overview(self, now: float) -> dict[str, Any]:
        config = self.config_of()
        return {
            "fleet": config.name,
            "latest": self.sample(now),
            "history": list(self.history),
            "tree": self.system.tree(TREE_CHILDREN),
            "config": {bot.id: bot.model_dump(mode="json") for bot in config.bots},
        }

    def _push(self, kind: str, data: Any) -> None:
        frame = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
        for queue in self.subscribers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(frame)


class _Tick:
    __slots__ = ()


class DashboardSampler(Actor):
    """Takes one sample a second on the engine clock. Supervised by the system root: a
    failure restarts it; losing it stops the figures, never the engine."""

    def __init__(self, samples: Samples) -> None:
        self.samples = samples

    async def on_start(self) -> None:
        self.context.schedule_once(SAMPLE_EVERY, _Tick(), key="tick")

    async def receive(self, message: Any) -> Any:
        if isinstance(message, _Tick):
            self.samples.take(self.context.system.clock.wall())
            self.context.schedule_once(SAMPLE_EVERY, _Tick(), key="tick")
            return None
        raise TypeError(f"unexpected message {message!r}")


def add_dashboard_routes(http: HttpServer, samples: Samples) -> None:
    async def page(request: web.Request) -> web.StreamResponse:
        name = request.path[len("/admin/") :]
        found = _STATIC.get(name)
        if found is None:
            raise web.HTTPNotFound(text=f"no dashboard file {name!r}")
        file, content_type = found
        body = resources.files("callboard.actors").joinpath(f"static/admin/{file}").read_bytes()
        return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "no-cache"})

    async def to_page(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/admin/")

    async def overview(request: web.Request) -> web.StreamResponse:
        data = samples.overview(samples.system.clock.wall())
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        samples.subscribers.add(queue)
        try:
            await response.write(b": connected\n\n")
            while not samples.system.closed:
                try:
                    frame = await asyncio.wait_for(queue.get(), timeout=15.0)
                except TimeoutError:
                    frame = b": keep-alive\n\n"
                if frame is None:
                    break
                await response.write(frame)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            samples.subscribers.discard(queue)
        return response

    http.add("GET", "/admin", to_page)
    for name in _STATIC:
        http.add("GET", f"/admin/{name}", page)
    http.allow_open("/admin", *(f"/admin/{name}" for name in _STATIC))
    http.add("GET", "/api/overview", overview)
    http.add("GET", "/api/stream", stream)
