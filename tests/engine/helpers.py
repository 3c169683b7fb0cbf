"""Small actors the runtime tests share."""

from __future__ import annotations

import asyncio
from typing import Any

from callboard.engine import Actor

EVENTS: list[tuple[str, str]] = []


class Recorder(Actor):
    """Records every message; answers asks with the list so far."""

    def __init__(self, log: list[Any] | None = None) -> None:
        self.log: list[Any] = log if log is not None else []

    async def receive(self, message: Any) -> Any:
        if message == "get":
            return list(self.log)
        self.log.append(message)
        return message


class Flaky(Actor):
    """Fails on "boom"; counts the messages this instance has handled."""

    instances: list[Flaky] = []

    def __init__(self, seen: list[Any] | None = None) -> None:
        self.count = 0
        self.seen = seen if seen is not None else []
        Flaky.instances.append(self)

    async def receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        if isinstance(message, BaseException):
            raise message
        self.count += 1
        self.seen.append(message)
        return self.count


class Gate(Actor):
    """Blocks inside receive on "block" until the shared event is set."""

    def __init__(self, gate: asyncio.Event, log: list[Any]) -> None:
        self.gate = gate
        self.log = log

    async def receive(self, message: Any) -> Any:
        if message == "block":
            await self.gate.wait()
        self.log.append(message)
        return message
