"""pykka interop: an asyncio actor owning and supervising a ThreadingActor."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from callboard.engine import Actor, ActorSystem
from callboard.engine.threaded import ThreadedHost, ThreadedWorker
from tests.engine.helpers import Boom, Note

WORKERS: list[Blocking] = []


class Blocking(ThreadedWorker):
    """Stands in for a blocking SDK client."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self.calls = 0
        WORKERS.append(self)

    def handle(self, message: Any) -> Any:
        self.calls += 1
        if isinstance(message, Boom):
            raise ConnectionError("sdk exploded")
        if isinstance(message, float):
            time.sleep(message)  # blocks this thread only
        return (self.label, self.calls, threading.get_ident())


class Fast(Actor):
    async def receive(self, message: Any) -> Any:
        return message


async def test_worker_runs_on_its_own_thread(system: ActorSystem) -> None:
    host = system.spawn(ThreadedHost, "docker", Blocking, "w")
    label, calls, ident = await host.ask(Note("hello"))
    assert (label, calls) == ("w", 1)
    assert ident != threading.get_ident()


async def test_blocking_worker_does_not_block_the_loop(system: ActorSystem) -> None:
    host = system.spawn(ThreadedHost, "docker", Blocking, "w")
    fast = system.spawn(Fast, "fast")
    slow = asyncio.ensure_future(host.ask(0.3))
    started = time.perf_counter()
    for i in range(100):
        assert await fast.ask(i) == i
    assert time.perf_counter() - started < 0.25  # answered while the worker slept
    await slow


async def test_crashing_worker_is_restarted(system: ActorSystem) -> None:
    WORKERS.clear()
    host = system.spawn(ThreadedHost, "docker", Blocking, "w")
    assert (await host.ask(Note("a")))[1] == 1
    assert (await host.ask(Note("b")))[1] == 2
    first = WORKERS[-1]
    try:
        await host.ask(Boom())
    except ConnectionError:
        pass
    else:
        raise AssertionError("the worker's error should reach the caller")
    # the host was restarted by its supervisor with a fresh worker thread
    assert (await host.ask(Note("c")))[1] == 1
    assert len(WORKERS) == 2 and WORKERS[-1] is not first
    assert not first.actor_ref.is_alive()
    assert system.metrics.restarts["ThreadedHost"] == 1


async def test_stopping_host_stops_worker_thread() -> None:
    system = ActorSystem("s")
    WORKERS.clear()
    host = system.spawn(ThreadedHost, "docker", Blocking, "w")
    await host.ask(Note("x"))
    worker = WORKERS[-1]
    await system.shutdown()
    assert not worker.actor_ref.is_alive()
