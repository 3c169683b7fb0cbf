"""Shutdown: children before parents, every on_stop, drained mailboxes, forced stop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from callboard.engine import Actor, ActorSystem
from callboard.engine.dispatcher import MAX_PARKED
from tests.engine.helpers import Get, Note

STOPS: list[str] = []


class Node(Actor):
    def __init__(self, depth: int, fanout: int) -> None:
        self.depth = depth
        for i in range(fanout if depth else 0):
            self.context.spawn(Node, f"n{i}", depth - 1, fanout)

    async def receive(self, message: Any) -> Any:
        return None

    async def on_stop(self) -> None:
        STOPS.append(self.ref.path)


@pytest.fixture(autouse=True)
def _reset() -> None:
    STOPS.clear()


async def test_children_stop_before_parents() -> None:
    system = ActorSystem("s")
    system.spawn(Node, "a", 2, 2)
    system.spawn(Node, "b", 1, 3)
    await system.quiesce()
    await system.shutdown()
    assert len(STOPS) == 1 + 2 + 4 + 1 + 3
    for path in STOPS:
        parent = path.rsplit("/", 1)[0]
        if parent:
            assert STOPS.index(path) < STOPS.index(parent), f"{path} stopped after {parent}"
    # top-level actors stop in reverse spawn order
    assert STOPS.index("/b") < STOPS.index("/a")
    assert system.metrics.live_actors() == 0


async def test_shutdown_drains_mailboxes() -> None:
    system = ActorSystem("s")
    handled: list[int] = []

    class Slow(Actor):
        async def receive(self, message: Any) -> Any:
            await asyncio.sleep(0)
            handled.append(message)

    ref = system.spawn(Slow, "slow")
    for i in range(500):
        ref.tell(i)
    await system.shutdown()
    assert handled == list(range(500))


async def test_forced_shutdown_still_runs_on_stop() -> None:
    system = ActorSystem("s")
    stopped: list[str] = []

    class Stuck(Actor):
        async def receive(self, message: Any) -> Any:
            await asyncio.Event().wait()  # never returns

        async def on_stop(self) -> None:
            stopped.append(self.ref.path)

    ref = system.spawn(Stuck, "stuck")
    ref.tell(Note("hang"))
    await system.quiesce()
    await system.shutdown(timeout=0.2)
    assert stopped == ["/stuck"]
    assert system.metrics.live_actors() == 0
    assert not system.dispatcher.workers


async def test_no_tasks_left_after_shutdown() -> None:
    before = set(asyncio.all_tasks())
    system = ActorSystem("s")
    refs = [system.spawn(Node, f"n{i}", 0, 0) for i in range(1000)]
    for ref in refs:
        ref.tell(Note("x"))
    await system.quiesce()
    workers = set(asyncio.all_tasks()) - before
    assert len(workers) <= MAX_PARKED
    await system.shutdown()
    assert set(asyncio.all_tasks()) - before == set()


async def test_stop_during_on_start_pairs_hooks() -> None:
    system = ActorSystem("s")
    hooks: list[str] = []

    class Hooked(Actor):
        async def on_start(self) -> None:
            hooks.append("start")

        async def receive(self, message: Any) -> Any:
            return None

        async def on_stop(self) -> None:
            hooks.append("stop")

    ref = system.spawn(Hooked, "h")
    await ref.stop()  # stopped before it ever ran: start still precedes stop
    assert hooks == ["start", "stop"]
    await system.shutdown()


async def test_on_stopping_runs_while_children_live() -> None:
    """A parent can flush state through its children when a graceful stop
    begins; they stop only afterwards."""
    system = ActorSystem("s")
    flushed: list[Any] = []

    class Buffer(Actor):
        def __init__(self) -> None:
            self.items: list[Any] = []

        async def receive(self, message: Any) -> Any:
            if isinstance(message, Get):
                return self.items
            self.items.append(message)

    class Owner(Actor):
        def __init__(self) -> None:
            self.buffer = self.context.spawn(Buffer, "buffer")

        async def receive(self, message: Any) -> Any:
            self.buffer.tell(message)

        async def on_stopping(self) -> None:
            flushed.extend(await self.buffer.ask(Get()))

    owner = system.spawn(Owner, "owner")
    owner.tell(1)
    owner.tell(2)
    await system.shutdown()
    assert flushed == [1, 2]
