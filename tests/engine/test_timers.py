"""Receive timeouts (passivation) and generation-fenced timers."""

from __future__ import annotations

import asyncio
from typing import Any

from callboard.engine import Actor, ActorSystem, ManualClock, Terminated
from tests.engine.helpers import Note


class Idle(Actor):
    def __init__(self, ttl: float, log: list[Any]) -> None:
        self.ttl = ttl
        self.log = log

    async def on_start(self) -> None:
        self.context.set_receive_timeout(self.ttl)

    async def receive(self, message: Any) -> Any:
        self.log.append(message)
        return message


class Watcher(Actor):
    def __init__(self, seen: list[Terminated]) -> None:
        self.seen = seen

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Terminated):
            self.seen.append(message)
        else:
            self.context.watch(message)


async def test_receive_timeout_passivates(manual: ActorSystem, clock: ManualClock) -> None:
    seen: list[Terminated] = []
    ref = manual.spawn(Idle, "s", 10.0, [])
    watcher = manual.spawn(Watcher, "w", seen)
    await watcher.ask(ref)
    await clock.advance(9.9)
    assert ref.is_alive
    ref.tell(Note("activity"))  # resets the idle period
    await clock.advance(9.9)
    assert ref.is_alive
    await clock.advance(0.2)
    assert not ref.is_alive
    assert [t.reason for t in seen] == ["idle"]


async def test_busy_actor_is_not_reaped(manual: ActorSystem, clock: ManualClock) -> None:
    gate = asyncio.Event()

    class Busy(Actor):
        async def on_start(self) -> None:
            self.context.set_receive_timeout(5.0)

        async def receive(self, message: Any) -> Any:
            await gate.wait()  # in-flight work, e.g. an LLM call

    ref = manual.spawn(Busy, "b")
    ref.tell(Note("work"))
    await clock.advance(60)
    assert ref.is_alive  # in-flight work is activity
    gate.set()
    await manual.quiesce()
    await clock.advance(4.9)
    assert ref.is_alive
    await clock.advance(0.2)
    assert not ref.is_alive


async def test_custom_receive_timeout_handler(manual: ActorSystem, clock: ManualClock) -> None:
    ticks: list[float] = []

    class Ticker(Actor):
        async def on_start(self) -> None:
            self.context.set_receive_timeout(1.0)

        async def receive(self, message: Any) -> Any:
            return None

        async def on_receive_timeout(self) -> None:
            ticks.append(clock.now())
            if len(ticks) == 3:
                self.context.set_receive_timeout(None)

    ref = manual.spawn(Ticker, "t")
    await clock.advance(10)
    assert ticks == [1.0, 2.0, 3.0]
    assert ref.is_alive


async def test_timer_delivers_once(manual: ActorSystem, clock: ManualClock) -> None:
    log: list[Any] = []

    class Timed(Actor):
        async def receive(self, message: Any) -> Any:
            if message == Note("arm"):
                self.context.schedule_once(2.0, Note("fired"), key="k")
            elif message == Note("re-arm"):
                self.context.schedule_once(5.0, Note("fired-late"), key="k")
            else:
                log.append((clock.now(), message))

    ref = manual.spawn(Timed, "t")
    ref.tell(Note("arm"))
    await clock.advance(1)
    ref.tell(Note("re-arm"))  # supersedes the first timer
    await clock.advance(10)
    assert log == [(6.0, Note("fired-late"))]


async def test_stale_timer_already_in_mailbox_is_fenced(manual: ActorSystem, clock: ManualClock) -> None:
    """The timer fires while the actor is busy, so its message waits in the
    mailbox; the actor then cancels (or supersedes) it: it must not arrive."""
    gate = asyncio.Event()
    log: list[Any] = []

    class Timed(Actor):
        async def receive(self, message: Any) -> Any:
            if message == Note("arm"):
                self.context.schedule_once(1.0, Note("cancelled-timer"), key="a")
                self.context.schedule_once(1.0, Note("superseded-timer"), key="b")
            elif message == Note("block-then-cancel"):
                await gate.wait()
                assert self.context.cancel_timer("a")
                self.context.schedule_once(3.0, Note("replacement"), key="b")
            else:
                log.append(message)

    ref = manual.spawn(Timed, "t")
    ref.tell(Note("arm"))
    await clock.advance(0.5)
    ref.tell(Note("block-then-cancel"))
    await clock.advance(1.0)  # both timers fire into the mailbox behind the blocked message
    assert len(ref._cell.mailbox or ()) == 2
    gate.set()
    await manual.quiesce()
    assert log == []
    assert manual.metrics.stale_timers == 2
    await clock.advance(3.0)
    assert log == [Note("replacement")]


async def test_stop_cancels_timers(manual: ActorSystem, clock: ManualClock) -> None:
    log: list[Any] = []

    class Timed(Actor):
        async def on_start(self) -> None:
            self.context.schedule_once(1.0, Note("tick"))

        async def receive(self, message: Any) -> Any:
            log.append(message)

    ref = manual.spawn(Timed, "t")
    await clock.advance(0)
    await ref.stop()
    await clock.advance(5)
    assert log == []
    assert clock.pending() == []
