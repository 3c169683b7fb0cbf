"""What the fakes share: an aiohttp application served on 127.0.0.1, and the test
controls of a fake platform (hold its calls, script their failures, wait for them)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from aiohttp import web

F = TypeVar("F")
C = TypeVar("C")


class LocalServer:
    """An aiohttp application on 127.0.0.1; ``port`` is the one it got (0 asks for any free one)."""

    def __init__(self) -> None:
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def serve(self, app: web.Application, port: int = 0, *, backlog: int = 128) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=backlog)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop_serving(self) -> None:
        """Close the listener and every open request (again: nothing)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class FakePlatform(LocalServer, Generic[F, C]):
    """A fake platform's server with the controls every test of an adapter uses: calls
    named in ``hold`` wait until ``release()``, ``fail`` queues the answers the next
    calls of a name get, ``wait_calls`` waits for answered ones (``F``: the fake's own
    kind of failure, ``C`` of recorded call)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[C] = []
        self.failures: dict[str, deque[F]] = {}
        self.held: set[str] = set()
        self._released = asyncio.Event()
        self._called = asyncio.Event()

    def call_key(self, name: str) -> str:
        """How the fake files a call's name (Telegram's methods are case-insensitive)."""
        return name

    def fail(self, name: str, *failures: F) -> None:
        """The next ``len(failures)`` calls named ``name`` get these answers."""
        self.failures.setdefault(self.call_key(name), deque()).extend(failures)

    def hold(self, *names: str) -> None:
        """Calls of these names wait until ``release()``."""
        self._released.clear()
        self.held.update(self.call_key(name) for name in names)

    def release(self) -> None:
        self.held.clear()
        self._released.set()

    def next_failure(self, key: str) -> F | None:
        """The scripted answer for this call of ``key``, if any (taken from the queue)."""
        queued = self.failures.get(key)
        return queued.popleft() if queued else None

    def answered(self, name: str) -> list[C]:
        """The calls named ``name`` the fake answered as a success."""
        raise NotImplementedError

    def call_done(self) -> None:
        """A call was answered: wakes ``wait_calls``."""
        self._called.set()
        self._called = asyncio.Event()

    async def wait_calls(self, name: str, count: int, timeout: float = 15.0) -> list[C]:
        """Until ``count`` calls named ``name`` were answered as a success; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.answered(name)
            if len(calls) >= count:
                return calls
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(calls)} {name} calls of {count}; last calls: {self.calls[-5:]}")
            called = self._called
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(called.wait(), min(remaining, 0.5))

    async def until(self, done: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
        """Until ``done()`` holds; a ``TimeoutError`` saying ``what()`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(what())
            await asyncio.sleep(0.01)
