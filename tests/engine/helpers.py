"""Small actors the runtime tests share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from callboard.engine import Actor

EVENTS: list[tuple[str, str]] = []


@dataclass(frozen=True, slots=True)
class Note:
    """A plain message that tests record and compare."""

    text: str


@dataclass(frozen=True, slots=True)
class Get:
    """Ask a ``Recorder`` for what it has recorded."""


@dataclass(frozen=True, slots=True)
class Boom:
    """Makes a ``Flaky`` (or any test actor that knows it) fail."""


@dataclass(frozen=True, slots=True)
class Block:
    """Makes a ``Gate`` wait inside ``receive`` until its event is set."""


class Recorder(Actor):
    """Records every message; answers asks with the list so far."""

    def __init__(self, log: list[Any] | None = None) -> None:
        self.log: list[Any] = log if log is not None else []

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Get):
            return list(self.log)
        self.log.append(message)
        return message


class Flaky(Actor):
    """Fails on ``Boom``; counts the messages this instance has handled."""

    instances: list[Flaky] = []

    def __init__(self, seen: list[Any] | None = None) -> None:
        self.count = 0
        self.seen = seen if seen is not None else []
        Flaky.instances.append(self)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Boom):
            raise RuntimeError("boom")
        if isinstance(message, BaseException):
            raise message
        self.count += 1
        self.seen.append(message)
        return self.count


class Gate(Actor):
    """Blocks inside receive on ``Block`` until the shared event is set."""

    def __init__(self, gate: asyncio.Event, log: list[Any]) -> None:
        self.gate = gate
        self.log = log

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Block):
            await self.gate.wait()
        self.log.append(message)
        return message
