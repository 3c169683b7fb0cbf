"""SandboxManager logic against an in-memory backend: limits, reaping, sweeps, engine loss.

The same behaviours are tested against real containers in test_lifecycle_real.py;
here a ManualClock makes the timing ones deterministic.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import pytest

from callboard.actors.sandbox_manager import SandboxManager
from callboard.engine import ActorRef, ActorSystem, ManualClock
from callboard.engine.sandbox_api import ExecArgs, SandboxBusy, SandboxError, SandboxOff, SandboxUnavailable
from callboard.sandbox import engine as sandbox_engine
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.fakes import FakeBackend, FakeEngine
from tests.sandbox.helpers import chat_tools, eventually, status

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def real_time() -> AsyncIterator[ActorSystem]:
    system = ActorSystem("manager-test")
    yield system
    await system.shutdown(timeout=10)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def manual(clock: ManualClock) -> AsyncIterator[ActorSystem]:
    system = ActorSystem("manager-test", clock=clock)
    yield system
    await system.shutdown(timeout=10)


def start(system: ActorSystem, fake: FakeEngine, fleet: str = "fleet", **settings: object) -> ActorRef:
    return system.spawn(
        SandboxManager, "sandbox", fleet, SandboxSettings(**settings), partial(FakeBackend, fake)
    )


async def container_of(manager: ActorRef, chat: str, **args: object) -> str:
    result = await chat_tools(manager, chat).exec(ExecArgs(argv=["true"], **args))  # type: ignore[arg-type]
    return result.stdout.split()[0]


async def test_cold_starts_of_two_sessions_run_at_the_same_time(
    real_time: ActorSystem, fake: FakeEngine
) -> None:
    both_creating = threading.Barrier(2, timeout=10)
    fake.on_create = lambda spec: both_creating.wait()  # each create waits until the other one has begun
    manager = start(real_time, fake)
    first, second = await asyncio.gather(container_of(manager, "1"), container_of(manager, "2"))
    assert first != second
    assert fake.creates == 2


async def test_one_scope_one_container(real_time: ActorSystem, fake: FakeEngine) -> None:
    manager = start(real_time, fake)
    ids = await asyncio.gather(*(container_of(manager, "same") for _ in range(5)))
    assert len(set(ids)) == 1
    assert fake.creates == 1


async def test_max_sessions_evicts_the_least_recently_used_idle_one(
    real_time: ActorSystem, fake: FakeEngine
) -> None:
    manager = start(real_time, fake, max_sessions=2)
    a = await container_of(manager, "a")
    b = await container_of(manager, "b")
    assert await container_of(manager, "a") == a  # a is now the most recently used
    c = await container_of(manager, "c")
    await eventually(lambda: len(fake.containers) == 2, what="two containers")
    assert set(fake.containers) == {a, c}
    assert b not in fake.containers
    await eventually(_counts(manager, sessions=2, stopping=0), what="eviction finished")


async def test_at_the_limit_with_every_session_busy_the_caller_is_refused(
    real_time: ActorSystem, fake: FakeEngine
) -> None:
    manager = start(real_time, fake, max_sessions=1)
    busy = asyncio.ensure_future(chat_tools(manager, "a").exec(ExecArgs(argv=["sleep", "1"])))
    await eventually(lambda: fake.creates == 1, what="first session")
    with pytest.raises(SandboxBusy, match="all 1 sandbox sessions are busy"):
        await chat_tools(manager, "b").exec(ExecArgs(argv=["true"]))
    await busy
    assert await container_of(manager, "b")  # idle again: evicted to make room
    assert fake.creates == 2


async def test_idle_sessions_passivate_and_their_container_goes(
    manual: ActorSystem, clock: ManualClock, fake: FakeEngine
) -> None:
    manager = start(manual, fake, idle_ttl=600)
    await container_of(manager, "a")
    await clock.advance(599)
    assert len(fake.containers) == 1
    await clock.advance(2)
    await eventually(lambda: not fake.containers, what="container removed after the idle TTL")
    await eventually(_counts(manager, sessions=0), what="session gone from the manager")


async def test_sweeps_run_at_start_and_periodically_without_traffic(
    manual: ActorSystem, clock: ManualClock, fake: FakeEngine
) -> None:
    old = fake.add("fleet", "s-1", "an-older-process")
    other_fleet = fake.add("other", "s-1", "x")
    manager = start(manual, fake, sweep_interval=60)
    await eventually(lambda: old not in fake.containers, what="start-up sweep")
    live = await container_of(manager, "a")
    instance = next(c.instance for c in fake.containers.values() if c.id == live)
    stray = fake.add("fleet", "no-such-session", instance)  # e.g. a removal that failed
    await clock.advance(61)
    await eventually(lambda: stray not in fake.containers, what="periodic sweep")
    assert live in fake.containers
    assert other_fleet in fake.containers
    await eventually(_counts(manager, orphans_removed=2), what="both sweeps reported")


async def test_engine_down_fails_fast_and_recovers_with_backoff(
    manual: ActorSystem, clock: ManualClock, fake: FakeEngine
) -> None:
    fake.down = True
    manager = start(manual, fake, engine_retry_max=10)
    failures = manual.metrics.failures
    await eventually(lambda: failures["JanitorHost"] == 1, what="first probe failed")
    await eventually(_state(manager, "down"), what="engine reported down")
    with pytest.raises(SandboxUnavailable, match=r"unreachable.*retrying in the background"):
        await chat_tools(manager).exec(ExecArgs(argv=["true"]))
    assert fake.creates == 0  # refused at once, without trying the engine
    for attempt in range(2, 5):  # each retry waits out its backoff (at most engine_retry_max)
        assert clock.pending() and clock.pending()[0] - clock.now() <= 10 * 1.2
        await clock.advance(12)
        await eventually(lambda n=attempt: failures["JanitorHost"] == n, what=f"probe {attempt} failed")
    assert manual.metrics.restarts["JanitorHost"] == 3
    fake.down = False
    await clock.advance(12)
    await eventually(_state(manager, "up"), what="engine back up")
    assert await container_of(manager, "a")


async def test_a_crashed_session_restarts_on_a_fresh_container(
    real_time: ActorSystem, fake: FakeEngine
) -> None:
    manager = start(real_time, fake)
    first = await container_of(manager, "a")
    fake.containers.pop(first)  # the container vanished under the actor
    with pytest.raises(SandboxUnavailable, match="gone"):
        await container_of(manager, "a")
    second = await container_of(manager, "a")
    assert second != first
    assert real_time.metrics.restarts["SandboxSessionHost"] == 1


async def test_an_unhealthy_session_is_replaced_without_a_failure(
    real_time: ActorSystem, fake: FakeEngine
) -> None:
    manager = start(real_time, fake)
    first = await container_of(manager, "a")
    await chat_tools(manager, "a").exec(ExecArgs(argv=["wedge"]))
    assert first not in fake.containers  # removed right after the call that left it unhealthy
    assert await container_of(manager, "a") != first
    assert real_time.metrics.restarts["SandboxSessionHost"] == 0


async def test_off_without_any_engine(real_time: ActorSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(sandbox_engine, "DEFAULT_SOCKETS", ("/nonexistent/docker.sock",))
    manager = real_time.spawn(SandboxManager, "sandbox", "fleet", SandboxSettings())
    with pytest.raises(SandboxOff, match="no container engine configured"):
        await chat_tools(manager).exec(ExecArgs(argv=["true"]))
    assert (await status(manager)).state == "off"


async def test_unknown_profile_is_a_clear_error(real_time: ActorSystem, fake: FakeEngine) -> None:
    manager = start(real_time, fake)
    with pytest.raises(SandboxError, match="'gpu' is not defined"):
        await chat_tools(manager, profile="gpu").exec(ExecArgs(argv=["true"]))
    assert fake.creates == 0


async def test_shutdown_removes_every_container(fake: FakeEngine) -> None:
    system = ActorSystem("shutdown")
    manager = start(system, fake)
    await asyncio.gather(*(container_of(manager, str(i)) for i in range(5)))
    assert len(fake.containers) == 5
    await system.shutdown(timeout=10)
    assert fake.containers == {}


def _state(manager: ActorRef, wanted: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await status(manager)).state == wanted

    return check


def _counts(manager: ActorRef, **wanted: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        now = await status(manager)
        return all(getattr(now, name) == value for name, value in wanted.items())

    return check
