"""Session lifecycle against real containers: limits, reaping, concurrency, crashes, engine loss."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from callboard.engine import ActorRef, ActorSystem
from callboard.engine.sandbox_api import (
    ExecArgs,
    ReadArgs,
    SandboxFileNotFound,
    SandboxUnavailable,
    WriteArgs,
)
from callboard.sandbox.backend import SessionSpec
from callboard.sandbox.config import SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend, DockerSession
from callboard.sandbox.engine import EngineEndpoint
from callboard.sandbox.podman_service import PodmanService
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, eventually, spawn_manager, status

pytestmark = pytest.mark.timeout(180)

Settings = Callable[..., SandboxSettings]


async def test_max_sessions_bounds_containers_and_evicts_lru(
    engine: Engine, system: ActorSystem, fleet: str, settings: Settings
) -> None:
    manager = spawn_manager(system, fleet, settings(max_sessions=2))
    first = chat_tools(manager, "1")
    await first.write(WriteArgs(path="mine.txt", content="chat 1"))
    for chat in ("2", "3"):
        await chat_tools(manager, chat).exec(ExecArgs(argv=["true"]))
        assert len(engine.containers(fleet)) <= 2
    await eventually(lambda: len(engine.containers(fleet)) == 2, what="two containers")
    with pytest.raises(SandboxFileNotFound):  # chat 1 was the least recently used: evicted
        await first.read(ReadArgs(path="mine.txt"))
    assert len(engine.containers(fleet)) <= 2


async def test_idle_sandboxes_are_reaped(
    engine: Engine, system: ActorSystem, fleet: str, settings: Settings
) -> None:
    manager = spawn_manager(system, fleet, settings(idle_ttl=2))
    assert (await chat_tools(manager).exec(ExecArgs(argv=["true"]))).ok  # a container ran it
    await eventually(lambda: engine.containers(fleet) == [], timeout=20, what="idle container removed")
    await eventually(_no_sessions(manager), what="session passivated")


async def test_two_cold_starts_are_not_serialised(engine: Engine, system: ActorSystem, fleet: str) -> None:
    settings = SandboxSettings(engine_url=engine.url, image=engine.image)
    both_creating = threading.Barrier(2, timeout=20)

    class BarrierBackend(DockerBackend):
        def create_session(self, spec: SessionSpec) -> DockerSession:
            both_creating.wait()  # passes only if the other session's create is under way too
            return super().create_session(spec)

    manager = spawn_manager(
        system, fleet, settings, lambda: BarrierBackend(EngineEndpoint(engine.url, "t"), settings)
    )
    one, two = await asyncio.gather(
        chat_tools(manager, "1").exec(ExecArgs(argv=["hostname"])),
        chat_tools(manager, "2").exec(ExecArgs(argv=["hostname"])),
    )
    assert one.ok and two.ok
    assert len(engine.containers(fleet)) == 2


async def test_a_crashed_session_actor_restarts_on_a_fresh_container(
    engine: Engine, system: ActorSystem, fleet: str, settings: Settings
) -> None:
    tools = chat_tools(spawn_manager(system, fleet, settings()))
    await tools.write(WriteArgs(path="state.txt", content="before"))
    (original,) = engine.containers(fleet)
    engine.remove(original.id)  # pulled from under the actor
    with pytest.raises(SandboxUnavailable, match=r"gone|no such|not found|refused"):
        await tools.exec(ExecArgs(argv=["true"]))
    assert (await tools.exec(ExecArgs(argv=["echo", "back"]))).stdout == "back\n"
    (fresh,) = engine.containers(fleet)
    assert fresh.id != original.id
    with pytest.raises(SandboxFileNotFound):
        await tools.read(ReadArgs(path="state.txt"))
    assert system.metrics.restarts["SandboxSessionHost"] == 1


async def test_engine_down_is_a_clear_error_then_recovers(
    engine: Engine, system: ActorSystem, fleet: str, tmp_path: Path
) -> None:
    later = PodmanService(tmp_path / "later")
    settings = SandboxSettings(engine_url=later.url, image=engine.image, engine_retry_max=1)
    tools = chat_tools(spawn_manager(system, fleet, settings))
    with pytest.raises(SandboxUnavailable, match="unreachable"):
        await asyncio.wait_for(tools.exec(ExecArgs(argv=["true"])), timeout=20)  # an error, never a hang
    await eventually(
        lambda: system.metrics.restarts["JanitorHost"] >= 2, what="janitor retrying with backoff"
    )
    later.start()
    try:
        await eventually(_engine_up(system), timeout=30, what="engine seen again")
        assert (await tools.exec(ExecArgs(argv=["echo", "ok"]))).stdout == "ok\n"
    finally:
        await system.shutdown(timeout=30)
        later.stop()


def _no_sessions(manager: ActorRef) -> Callable[[], object]:
    async def check() -> bool:
        return (await status(manager)).sessions == 0

    return check


def _engine_up(system: ActorSystem) -> Callable[[], object]:
    async def check() -> bool:
        manager = system.lookup("/sandbox")
        assert manager is not None
        return (await status(manager)).state == "up"

    return check


async def test_shutdown_removes_every_container(engine: Engine, fleet: str, settings: Settings) -> None:
    system = ActorSystem("shutdown")
    manager = spawn_manager(system, fleet, settings())
    await asyncio.gather(*(chat_tools(manager, str(i)).exec(ExecArgs(argv=["true"])) for i in range(3)))
    assert len(engine.containers(fleet)) == 3
    await system.shutdown(timeout=30)
    assert engine.containers(fleet) == []
