"""A managed process's actor on the manual clock, with a stand-in for the container's process
agent: the stop escalation's timings (stdin closed -> 5 s -> TERM -> 5 s -> KILL), restarts by
policy with backoff, and health checks. The real agent is in ``test_processes_real.py``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from callboard.actors.sandbox_process import (
    GetInfo,
    HealthExec,
    LinkRequest,
    ManagedProcess,
    ProcessRecord,
    StopProcess,
    strategy_for,
)
from callboard.engine import ActorSystem, ManualClock
from callboard.engine.actor import Actor
from callboard.engine.ref import ActorRef
from callboard.engine.sandbox_processes import ProcessArgs, ProcessInfo

pytestmark = pytest.mark.timeout(30)


class FakeLink:
    """What the process agent was told, and a way to make a process exit."""

    def __init__(self) -> None:
        self.told: list[tuple[str, Any]] = []
        self.listeners: dict[str, Any] = {}
        self.alive = True

    def start(self, ident: str, argv: list[str], cwd: str, env: dict[str, str], listener: Any) -> int:
        self.listeners[ident] = listener
        self.told.append(("start", ident))
        return 100 + len(self.listeners)

    def write(self, ident: str, data: bytes) -> None:
        self.told.append(("write", data))

    def close_stdin(self, ident: str) -> None:
        self.told.append(("close", ident))

    def signal(self, ident: str, sig: int) -> None:
        self.told.append(("signal", sig))

    def forget(self, ident: str) -> None:
        self.listeners.pop(ident, None)

    def exit(self, code: int) -> None:
        ident, listener = list(self.listeners.items())[-1]
        listener({"t": "exit", "id": ident, "code": code}, b"")

    def signals(self) -> list[int]:
        return [value for kind, value in self.told if kind == "signal"]

    def starts(self) -> int:
        return sum(1 for kind, _ in self.told if kind == "start")


@dataclass(frozen=True)
class SetHealth:
    code: int


class Session(Actor):
    """Stands in for the sandbox session host: hands out the link, answers health checks."""

    def __init__(self, link: FakeLink) -> None:
        self.link = link
        self.health = 0

    async def receive(self, message: Any) -> Any:
        if isinstance(message, LinkRequest):
            return self.link
        if isinstance(message, HealthExec):
            return self.health
        if isinstance(message, SetHealth):
            self.health = message.code
        if isinstance(message, ProcessArgs):
            record = ProcessRecord(message, list(message.env))
            ref = self.context.spawn(
                ManagedProcess, "proc", record, message.env, supervisor=strategy_for(message)
            )
            return ref, record
        return None


async def advance(clock: ManualClock, seconds: float) -> None:
    """Move the engine clock; then let the signal sends (on a worker thread) land."""
    await clock.advance(seconds)
    for _ in range(5):
        await asyncio.sleep(0.01)
        await clock.settle()


@pytest.fixture
async def clock() -> AsyncIterator[ManualClock]:
    yield ManualClock()


async def start(
    clock: ManualClock, args: ProcessArgs
) -> tuple[FakeLink, ActorRef, ProcessRecord, ActorSystem]:
    system = ActorSystem("process-test", clock=clock)
    link = FakeLink()
    session = system.spawn(Session, "session", link)
    ref, record = await session.ask(args)
    info: ProcessInfo = await ref.ask(GetInfo())
    assert info.state == "running"
    return link, ref, record, system


async def test_stop_escalates_on_the_engine_clock(clock: ManualClock) -> None:
    link, ref, record, system = await start(clock, ProcessArgs(argv=["server"]))
    stopped: asyncio.Future[ProcessInfo] = await ref.ask(StopProcess())
    assert link.told[-1][0] == "close" and record.state == "stopping"
    await advance(clock, 4.9)
    assert link.signals() == []
    await advance(clock, 0.2)  # t = 5.1: TERM went at 5.0
    assert link.signals() == [signal.SIGTERM]
    await advance(clock, 4.8)
    assert link.signals() == [signal.SIGTERM]
    await advance(clock, 0.2)  # t = 10.1: KILL went at 10.0
    assert link.signals() == [signal.SIGTERM, signal.SIGKILL]
    link.exit(137)
    info = await asyncio.wait_for(stopped, 5)
    assert info.state == "exited" and info.exit_code == 137 and link.starts() == 1
    await system.shutdown(timeout=5)


async def test_a_process_that_ends_on_stdin_close_gets_no_signal(clock: ManualClock) -> None:
    link, ref, _, system = await start(clock, ProcessArgs(argv=["server"]))
    stopped: asyncio.Future[ProcessInfo] = await ref.ask(StopProcess())
    await advance(clock, 1.0)
    link.exit(0)
    assert (await asyncio.wait_for(stopped, 5)).exit_code == 0
    await advance(clock, 20)
    assert link.signals() == []
    await system.shutdown(timeout=5)


async def test_restart_policy_and_backoff(clock: ManualClock) -> None:
    args = ProcessArgs(argv=["server"], restart="on-failure", max_restarts=2, restart_window=600)
    link, ref, record, system = await start(clock, args)
    link.exit(1)
    await advance(clock, 0.0)
    assert record.state == "starting" and link.starts() == 1  # waiting out the backoff
    await advance(clock, 1.0)
    assert record.state == "running" and link.starts() == 2 and record.info().restarts == 1
    link.exit(1)
    await advance(clock, 3.0)
    assert link.starts() == 3
    link.exit(1)  # the third failure within the window: given up
    await advance(clock, 30.0)
    assert link.starts() == 3 and not ref.is_alive
    await system.shutdown(timeout=5)


async def test_a_clean_exit_is_not_restarted_on_failure_policy(clock: ManualClock) -> None:
    link, ref, record, system = await start(clock, ProcessArgs(argv=["job"]))
    link.exit(0)
    await advance(clock, 30.0)
    assert record.state == "exited" and record.exit_code == 0 and link.starts() == 1 and not ref.is_alive
    await system.shutdown(timeout=5)


async def test_failing_health_checks_restart_the_process(clock: ManualClock) -> None:
    args = ProcessArgs(argv=["server"], health_argv=["check"], health_interval=10)
    link, _, record, system = await start(clock, args)
    await advance(clock, 30.0)  # three passing checks
    assert link.starts() == 1
    session = system.lookup("/session")
    assert session is not None
    await session.ask(SetHealth(1))
    for _ in range(3):
        await advance(clock, 10.0)
        await asyncio.sleep(0.05)
    await advance(clock, 1.0)
    assert link.starts() == 2 and "health checks failed" in (record.error or "")
    await system.shutdown(timeout=5)
