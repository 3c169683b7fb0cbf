"""Run by test_orphans_real.py: start two sandboxes, report, then wait to be SIGKILLed.

python -m tests.sandbox.orphan_child ENGINE_URL IMAGE FLEET
"""

from __future__ import annotations

import asyncio
import sys

from callboard.engine import ActorSystem, run
from callboard.engine.sandbox_api import ExecArgs
from callboard.sandbox.config import SandboxSettings
from tests.sandbox.helpers import chat_tools, spawn_manager


async def main(url: str, image: str, fleet: str) -> None:
    system = ActorSystem("orphan-child")
    manager = spawn_manager(system, fleet, SandboxSettings(engine_url=url, image=image))
    await asyncio.gather(*(chat_tools(manager, chat).exec(ExecArgs(argv=["true"])) for chat in ("1", "2")))
    print("ready", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    run(main(*sys.argv[1:4]))
