"""A chatty managed process nobody is attached to, in a real container: its stdout is kept in
a bounded ring (the oldest dropped and counted in its status), callboard's memory stays flat
however much it writes, and the next attacher gets the newest output and the dropped count."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable

import pytest

from callboard.actors import sandbox_process
from callboard.actors.sandbox import SessionTools
from callboard.engine import ActorSystem
from callboard.engine.sandbox_processes import ProcessArgs
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.conftest import Engine
from tests.sandbox.helpers import chat_tools, eventually, spawn_manager

pytestmark = pytest.mark.timeout(180)

CHATTY = "import sys\nline = b'x' * 1023 + b'\\n'\nwhile True:\n    sys.stdout.buffer.write(line * 64)\n"
MIB = 1 << 20


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def test_unattached_output_is_bounded_and_the_drops_are_reported(
    engine: Engine, system: ActorSystem, fleet: str, settings: Callable[..., SandboxSettings]
) -> None:
    tools = chat_tools(spawn_manager(system, fleet, settings()))
    assert isinstance(tools, SessionTools)
    await tools.start_process(ProcessArgs(process_id="chatty", argv=["python3", "-c", CHATTY]))
    before = peak_rss()

    async def dropped_plenty() -> bool:
        return (await tools.get_process("chatty")).output_dropped > 64 * MIB

    await eventually(dropped_plenty, timeout=120, interval=0.5, what="64 MiB written and dropped")
    info = await tools.get_process("chatty")
    grown = peak_rss() - before
    print(f"dropped {info.output_dropped / MIB:.0f} MiB; peak RSS grew {grown / MIB:.1f} MiB")
    assert info.state == "running" and not info.attached
    assert 0 < info.output_buffered <= sandbox_process.UNATTACHED_BUFFER
    assert grown < 16 * MIB  # what passed through was at least four times that

    attachment = await tools.attach("chatty")
    assert attachment.dropped >= info.output_dropped
    first = await asyncio.wait_for(attachment.read(), 10)
    assert 0 < len(first) <= sandbox_process.ATTACHED_BUFFER and set(first) <= {ord("x"), ord("\n")}
    await attachment.close()
    await tools.stop_process("chatty")
