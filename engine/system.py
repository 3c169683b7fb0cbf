"""ActorSystem: the root of an actor tree, its registry, dead letters and shutdown."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from typing import Any

from callboard.engine.actor import Actor
from callboard.engine.cell import ActorCell, short_repr
from callboard.engine.clock import Clock, LoopClock, ManualClock
from callboard.engine.dispatcher import Dispatcher
from callboard.engine.errors import ActorDeadError, SystemShutDownError
from callboard.engine.metrics import RuntimeMetrics
from callboard.engine.ref import ActorRef
from callboard.engine.signals import Ask
from callboard.engine.supervision import SupervisorStrategy

log = logging.getLogger("callboard.engine")


class ActorSystem:
    """Owns every actor of one process; create it inside a running event loop.

    Paths look like ``/fleet/demo/sessions``; ``lookup(path)`` is a dict hit.
    """

    def __init__(
        self,
        name: str = "callboard",
        *,
        clock: Clock | None = None,
        ask_timeout: float = 30.0,
        dead_letter_log_interval: float = 5.0,
        resources: Mapping[str, object] | None = None,
    ) -> None:
        self.name = name
        #: live objects an embedding program hands to the actors (see ``resource``)
        self.resources: Mapping[str, object] = dict(resources or {})
        self.loop = asyncio.get_running_loop()
        self.clock: Clock = clock or LoopClock(self.loop)
        self.ask_timeout = ask_timeout
        self.closed = False
        self.dispatcher = Dispatcher(self.loop)
        self._cells: dict[str, ActorCell] = {}
        self.metrics = RuntimeMetrics(self._cells)
        self._guardian = ActorCell(self, None, "", "/", None, (), {}, SupervisorStrategy())
        self._dead_letter_log_interval = dead_letter_log_interval
        self._dead_letter_logged_at: float | None = None
        self._dead_letters_unlogged = 0
        if isinstance(self.clock, ManualClock):
            self.clock.add_settle_hook(self.quiesce)

    # ------------------------------------------------------------------ actors

    def resource(self, name: str) -> object:
        """A live object handed to the system at start (a test's queue, a benchmark's load
        source), for actors that cannot get it from configuration."""
        try:
            return self.resources[name]
        except KeyError:
            known = ", ".join(sorted(self.resources)) or "none"
            raise KeyError(f"no resource {name!r} was handed to the actor system (given: {known})") from None

    def spawn(
        self,
        cls: type[Actor],
        name: str | None = None,
        *args: Any,
        supervisor: SupervisorStrategy | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Start a top-level actor."""
        return self._guardian.spawn(cls, name, *args, supervisor=supervisor, **kwargs)

    def lookup(self, path: str) -> ActorRef | None:
        cell = self._cells.get(path)
        return cell.ref if cell is not None else None

    def register(self, cell: ActorCell) -> None:
        self._cells[cell.path] = cell
        self.metrics.spawned += 1
        self.metrics.live_by_class[cell.cls.__name__] += 1

    def unregister(self, cell: ActorCell) -> None:
        if self._cells.get(cell.path) is cell:
            del self._cells[cell.path]
            self.metrics.live_by_class[cell.cls.__name__] -= 1

    def tree(self, max_children: int | None = None) -> dict[str, Any]:
        """The live actor tree as plain data (for the admin API). With ``max_children``
        each node lists that many children at most and counts the rest in ``more``:
        a page needs no 100,000 sessions, and building them every few seconds costs."""

        def node(cell: ActorCell) -> dict[str, Any]:
            cells = cell.child_cells or {}
            shown = len(cells) if max_children is None else min(len(cells), max_children)
            children = itertools.islice(cells.values(), shown)
            more = len(cells) - shown
            data = {
                "name": cell.name,
                "path": cell.path,
                "class": cell.cls.__name__ if cell.cls is not None else "root",
                "mailbox": len(cell.mailbox or ()),
                "restarts": cell.restarts,
                "state": _state(cell),
                "children": [node(c) for c in children],
            }
            if more:
                data["more"] = more
            return data

        return node(self._guardian)

    # ------------------------------------------------------------------ dead letters

    def dead_letter(self, path: str, message: Any, why: str) -> None:
        """Count (and, rate-limited, log) a message nobody will handle."""
        self.metrics.dead_letters += 1
        if type(message) is Ask and not message.future.done():
            message.future.set_exception(ActorDeadError(path))
        self._log_undelivered(path, message, why)

    def drop(self, path: str, message: Any, error: Exception) -> None:
        """A mailbox policy (or a restart) discarded a message."""
        self.metrics.dropped += 1
        if type(message) is Ask and not message.future.done():
            message.future.set_exception(error)
        self._log_undelivered(path, message, str(error))

    def _log_undelivered(self, path: str, message: Any, why: str) -> None:
        now = self.clock.now()
        last = self._dead_letter_logged_at
        if last is not None and now - last < self._dead_letter_log_interval:
            self._dead_letters_unlogged += 1
            return
        suppressed, self._dead_letters_unlogged = self._dead_letters_unlogged, 0
        self._dead_letter_logged_at = now
        log.info(
            "undelivered message to %s (%s): %s%s",
            path,
            why,
            short_repr(message),
            f" (+{suppressed} more since last report)" if suppressed else "",
        )

    # ------------------------------------------------------------------ lifecycle

    async def quiesce(self, timeout: float = 5.0) -> None:
        """Wait until no actor is runnable and nothing moved for a few loop turns
        (for tests and benchmarks; an actor awaiting I/O counts as quiet)."""
        dispatcher = self.dispatcher
        deadline = self.loop.time() + timeout
        last: tuple[int, ...] | None = None
        stable = 0
        while stable < 3:
            await asyncio.sleep(0)
            state = (self.metrics.messages, len(dispatcher.runq), dispatcher.starting, dispatcher.active)
            if state == last and not dispatcher.runq and not dispatcher.starting:
                stable += 1
            else:
                stable = 0
            last = state
            if self.loop.time() > deadline:
                raise TimeoutError(f"actors still busy after {timeout}s ({len(dispatcher.runq)} queued)")

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every actor, children before parents, running every ``on_stop``.

        Actors finish the messages already queued. Whatever is still running
        after ``timeout`` is cancelled, and its ``on_stop`` still runs.
        """
        if self.closed:
            return
        self.closed = True
        graceful = asyncio.ensure_future(self._guardian._stop_children(graceful=True))
        done, _ = await asyncio.wait([graceful], timeout=timeout)
        if not done:
            log.warning("shutdown: actors still running after %.1fs; cancelling them", timeout)
            graceful.cancel()
            await self._force_stop()
        workers = self.dispatcher.cancel_all()
        if workers:
            await asyncio.wait(workers)

    async def _force_stop(self) -> None:
        workers = self.dispatcher.cancel_all()
        if workers:
            await asyncio.wait(workers, timeout=2.0)
        cells = sorted(self._cells.values(), key=lambda c: c.path.count("/"), reverse=True)
        for cell in cells:
            if cell.terminated:
                continue
            cell.closed = True
            if not cell.needs_start:
                try:
                    await asyncio.wait_for(cell._call_on_stop(), timeout=1.0)
                except (TimeoutError, Exception):
                    log.exception("%s: on_stop did not finish during forced shutdown", cell.path)
            cell.finalize("shutdown")
        self.dispatcher.runq.clear()
        self.dispatcher.active = 0

    def __repr__(self) -> str:
        return f"<ActorSystem {self.name} actors={len(self._cells)}>"


def _state(cell: ActorCell) -> str:
    if cell.terminated:
        return "terminated"
    if cell.closed:
        return "stopping"
    if cell.suspended:
        return "suspended"
    return "running" if cell.scheduled else "idle"


__all__ = ["ActorSystem", "SystemShutDownError"]
