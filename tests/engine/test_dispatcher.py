"""The worker pool never lets one actor's await hold up another actor."""

from __future__ import annotations

import asyncio
from typing import Any

from callboard.engine import Actor, ActorSystem
from tests.engine.helpers import Block, Gate, Get, Note, Recorder


async def test_queued_actor_not_stranded_behind_a_blocked_one(system: ActorSystem) -> None:
    gate = asyncio.Event()
    blocked = system.spawn(Gate, "a", gate, [])
    other = system.spawn(Recorder, "b")
    blocked.tell(Block())  # both land on the run queue before any worker runs
    other.tell(1)
    assert await asyncio.wait_for(other.ask(Get()), 1.0) == [1]
    gate.set()


async def test_tell_then_await_inside_receive(system: ActorSystem) -> None:
    gate = asyncio.Event()
    log: list[Any] = []

    class Forwarder(Actor):
        def __init__(self, target: Any) -> None:
            self.target = target

        async def receive(self, message: Any) -> Any:
            self.target.tell(message)
            await gate.wait()  # suspends right after telling

    sink = system.spawn(Recorder, "sink", log)
    fwd = system.spawn(Forwarder, "fwd", sink)
    fwd.tell(Note("x"))
    for _ in range(50):
        if log:
            break
        await asyncio.sleep(0.01)
    assert log == [Note("x")]
    gate.set()


async def test_many_concurrent_awaits(system: ActorSystem) -> None:
    """1,000 actors all suspended at once: each gets a worker, none waits for another."""
    gate = asyncio.Event()
    logs: list[list[Any]] = [[] for _ in range(1000)]
    refs = [system.spawn(Gate, f"g{i}", gate, logs[i]) for i in range(1000)]
    for ref in refs:
        ref.tell(Block())
    await system.quiesce()
    assert len(system.dispatcher.workers) >= 1000
    gate.set()
    await system.quiesce()
    assert all(log == [Block()] for log in logs)


async def test_asyncio_timeout_inside_receive(system: ActorSystem) -> None:
    class Timed(Actor):
        async def receive(self, message: Any) -> Any:
            try:
                async with asyncio.timeout(0.01):
                    await asyncio.Event().wait()
            except TimeoutError:
                return True
            return False

    ref = system.spawn(Timed, "t")
    assert await ref.ask(Note("go")) is True
    assert await ref.ask(Note("again")) is True  # the worker survived the cancellation


async def test_runs_on_uvloop() -> None:
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
