"""Small helpers the sandbox tests share."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callboard.actors.sandbox import SandboxStatus, sandbox_status, tools_for
from callboard.actors.sandbox_manager import SandboxManager
from callboard.engine import ActorRef, ActorSystem
from callboard.engine.sandbox_api import SandboxTools
from callboard.sandbox.config import SandboxPolicy, SandboxSettings

REPO = Path(__file__).resolve().parents[2]


def spawn_manager(
    system: ActorSystem, fleet: str, settings: SandboxSettings, *args: Any, name: str = "sandbox"
) -> ActorRef:
    return system.spawn(SandboxManager, name, fleet, settings, *args)


def chat_tools(manager: ActorRef, chat: str = "1", bot: str = "bot", **policy: Any) -> SandboxTools:
    """The sandbox of one private chat of ``bot`` under an enabled policy."""
    return tools_for(manager, SandboxPolicy(enabled=True, **policy), bot, "private", chat, f"user-{chat}")


async def status(manager: ActorRef) -> SandboxStatus:
    return await sandbox_status(manager)


async def eventually(
    condition: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> None:
    """Poll ``condition`` (sync or async) until it is true, in real time."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s")
        await asyncio.sleep(interval)
