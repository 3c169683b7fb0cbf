"""No process piles up per command: 50 commands (timeouts and kills included) against a real
container leave the engine host's `conmon` processes and the engine's exec sessions where
one resident agent puts them, and shutdown leaves nothing but what the engine's own exit
delay keeps for a while."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import ExecArgs, ReadArgs, WriteArgs
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, eventually, spawn_manager

pytestmark = pytest.mark.timeout(300)


def conmons(container_id: str) -> int:
    """Host processes of the container engine's monitor for this container."""
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"conmon") and container_id.encode() in argv:
            count += 1
    return count


async def test_fifty_commands_leave_no_processes_behind(
    engine: Engine, system: ActorSystem, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    if engine.service is None:
        pytest.skip("the engine runs elsewhere: its host's processes cannot be counted from here")
    tools = chat_tools(spawn_manager(system, fleet, settings()))
    assert (await tools.exec(ExecArgs(argv=["true"]))).ok  # the container and its agent start
    (container,) = engine.containers(fleet)
    started_with = conmons(container.id)
    sessions_with = len(engine.client.api.inspect_container(container.id).get("ExecIDs") or [])

    agents_lost = 0
    for i in range(50):
        if i % 10 == 3:
            timed = await tools.exec(ExecArgs(command="sleep 60 & sleep 61", timeout=0.5))
            assert timed.timed_out
        elif i % 10 == 5:
            killed = await tools.exec(ExecArgs(command="kill -9 $$"))
            assert killed.exit_code == 137
        elif i % 10 == 7:
            await tools.write(WriteArgs(path=f"f{i}.txt", content=str(i)))
            assert (await tools.read(ReadArgs(path=f"f{i}.txt"))).content == str(i)
        elif i == 49:
            everything = await tools.exec(ExecArgs(command="kill -9 -1"))  # takes the agent with it
            assert everything.exit_code == 137
            agents_lost += 1
        else:
            assert (await tools.exec(ExecArgs(argv=["echo", str(i)]))).stdout == f"{i}\n"
    assert (await tools.exec(ExecArgs(argv=["true"]))).ok  # a fresh agent after the last kill

    # Each agent is one exec (two monitor processes), however many commands it ran; losing
    # one costs a kill from outside (one exec) and a new agent (one exec).
    assert conmons(container.id) <= started_with + 2 * 2 * agents_lost
    sessions = engine.client.api.inspect_container(container.id).get("ExecIDs") or []
    assert len(sessions) <= sessions_with + 2 * agents_lost

    await system.shutdown(timeout=30)
    await eventually(lambda: not engine.containers(fleet), what="the container removed")
    # What remains waits out the engine's exit_command_delay (Podman: 300 s), per agent, not per command.
    assert conmons(container.id) <= started_with + 2 * 2 * agents_lost
