"""Managed processes in a real container: started through the process agent (one exec for
all of them), restarted by their policy when killed inside the container, attached by one
caller at a time, stopped with the stdin -> TERM -> KILL escalation, and keeping their
sandbox from idle reaping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from callboard.actors.sandbox import SessionTools
from callboard.engine import ActorSystem
from callboard.engine.sandbox_api import ExecArgs, SandboxBusy, SandboxPolicyError, SandboxProcessNotFound
from callboard.engine.sandbox_processes import ProcessArgs, SandboxProcesses
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, eventually, spawn_manager

pytestmark = pytest.mark.timeout(180)

ECHO = (
    "import sys\nsys.stderr.write('up\\n')\n"
    "for line in sys.stdin:\n    sys.stdout.write(line.upper())\n    sys.stdout.flush()\n"
)


def processes(tools: object) -> SessionTools:
    assert isinstance(tools, SandboxProcesses) and isinstance(tools, SessionTools)
    return tools


async def read_until(attachment: object, want: bytes, timeout: float = 10.0) -> bytes:
    got = b""
    while want not in got:
        chunk = await asyncio.wait_for(attachment.read(), timeout)  # type: ignore[attr-defined]
        if not chunk:
            break
        got += chunk
    return got


async def test_killed_process_is_restarted_and_attach_is_exclusive(
    engine: Engine, system: ActorSystem, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    tools = processes(chat_tools(spawn_manager(system, fleet, settings())))
    info = await tools.start_process(
        ProcessArgs(
            process_id="echo",
            argv=["python3", "-u", "-c", ECHO],
            env={"API_TOKEN": "hunter2"},
            restart="always",
        )
    )
    assert info.state == "running" and info.pid is not None
    assert info.env_keys == ["API_TOKEN"] and "hunter2" not in info.model_dump_json()

    attachment = await tools.attach("echo")
    with pytest.raises(SandboxBusy, match="attached by another caller"):
        await tools.attach("echo")
    await attachment.write(b"hello\n")
    assert b"HELLO" in await read_until(attachment, b"HELLO")

    # Kill it inside the container: the agent reports the exit, the actor fails, and its
    # supervisor starts a fresh incarnation (same process agent: no new exec).
    execs_before = len(engine.client.api.inspect_container(engine.containers(fleet)[0].id)["ExecIDs"] or [])
    killed = await tools.exec(ExecArgs(command=f"kill -9 {info.pid}"))
    assert killed.ok, killed.stderr
    assert await asyncio.wait_for(attachment.read(), 10) == b""  # the attachment ends with it

    async def restarted() -> bool:
        now = await tools.get_process("echo")
        return now.state == "running" and now.restarts == 1 and now.pid != info.pid

    await eventually(restarted, what="the process restarted")
    again = await tools.attach("echo")  # the old attacher is gone: a new one may attach
    await again.write(b"again\n")
    assert b"AGAIN" in await read_until(again, b"AGAIN")
    after = await tools.get_process("echo")
    assert "up" in after.stderr_preview and after.exit_code is None
    execs_after = len(engine.client.api.inspect_container(engine.containers(fleet)[0].id)["ExecIDs"] or [])
    assert execs_after <= execs_before + 1  # the kill's exec only, nothing per restart
    await again.close()

    # Stop: stdin closed first, and this one exits on EOF without TERM or KILL.
    stopped = await tools.stop_process("echo")
    assert stopped.state == "exited" and stopped.exit_code == 0
    with pytest.raises(SandboxProcessNotFound):
        await tools.attach("echo")


async def test_stop_escalates_to_term_and_several_processes_run_side_by_side(
    engine: Engine, system: ActorSystem, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    tools = processes(chat_tools(spawn_manager(system, fleet, settings())))
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, lambda *a: exit(3))\nwhile True: time.sleep(1)"
    )
    one = await tools.start_process(ProcessArgs(process_id="one", argv=["python3", "-c", stubborn]))
    two = await tools.start_process(ProcessArgs(argv=["sleep", "300"], restart="never"))
    assert one.state == two.state == "running" and two.process_id == "default"
    assert (await tools.start_process(ProcessArgs(process_id="one", argv=["true"]))).pid == one.pid

    stopped = await tools.stop_process("one")  # ignores stdin EOF: TERM after 5 s, exits 3
    assert stopped.state == "exited" and stopped.exit_code == 3
    assert (await tools.get_process()).state == "running"
    listing = await tools.exec(ExecArgs(command="ps -eo args 2>/dev/null || ls /proc"))
    assert listing.ok


async def test_running_process_keeps_the_sandbox_from_idle_reaping(
    engine: Engine, system: ActorSystem, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    tools = processes(chat_tools(spawn_manager(system, fleet, settings(idle_ttl=1.0))))
    await tools.start_process(ProcessArgs(argv=["sleep", "300"]))
    (container,) = engine.containers(fleet)
    await asyncio.sleep(3)  # three idle TTLs in real time: the engine's clock drives the reaping
    assert [c.id for c in engine.containers(fleet)] == [container.id]
    await tools.stop_process()
    await eventually(lambda: not engine.containers(fleet), timeout=20, what="the idle sandbox reaped")


async def test_processes_need_the_exec_policy(
    engine: Engine, system: ActorSystem, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    tools = processes(chat_tools(spawn_manager(system, fleet, settings()), exec_allowed=False))
    with pytest.raises(SandboxPolicyError):
        await tools.start_process(ProcessArgs(argv=["sleep", "1"]))


async def test_capacity_eviction_spares_a_sandbox_with_running_processes(
    engine: Engine, system: ActorSystem, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    manager = spawn_manager(system, fleet, settings(max_sessions=2))
    serving = processes(chat_tools(manager, "a"))
    await serving.start_process(ProcessArgs(argv=["sleep", "300"]))  # a is the least recently used...
    idle = chat_tools(manager, "b")
    assert (await idle.exec(ExecArgs(argv=["true"]))).ok
    (a_container,) = [
        c.id for c in engine.containers(fleet) if "-private-a-" in c.labels["callboard.session"]
    ]
    assert (await chat_tools(manager, "c").exec(ExecArgs(argv=["true"]))).ok  # ...but b goes
    await eventually(lambda: len(engine.containers(fleet)) == 2, what="one sandbox evicted")
    assert a_container in [c.id for c in engine.containers(fleet)]
    assert (await serving.get_process()).state == "running"
