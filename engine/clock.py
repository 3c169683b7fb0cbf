"""Time source for the runtime.

Every delay the runtime waits on (timers, receive timeouts, restart backoff, ask
timeouts) goes through a ``Clock`` so tests can swap in ``ManualClock`` and move
time forward without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall(self) -> float:
        """Wall-clock seconds since the epoch, for timestamps that are stored
        (the journal's retention and dedup windows age by these)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle: ...


class LoopClock:
    """The real clock: the running event loop's monotonic time and timer heap."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()

    def now(self) -> float:
        return self._loop.time()

    def wall(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        return self._loop.call_later(max(0.0, delay), callback, *args)


class _ManualTimer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that only moves when a test calls ``advance``.

    After each due callback fires, ``advance`` awaits the settle hooks (an actor
    system registers its ``quiesce``) so actors react before time moves on.
    Its wall clock starts at the real time of construction and moves with it.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._epoch = time.time() - start
        self._heap: list[tuple[float, int, _ManualTimer]] = []
        self._seq = itertools.count()
        self._settle: list[Callable[[], Awaitable[None]]] = []

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._epoch + self._now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        timer = _ManualTimer(self._now + max(0.0, delay), callback, args)
        heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        return timer

    def add_settle_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._settle.append(hook)

    def pending(self) -> list[float]:
        """Due times of armed timers, soonest first (for assertions)."""
        return sorted(t.when for _, _, t in self._heap if not t.cancelled)

    async def settle(self) -> None:
        for hook in self._settle:
            await hook()

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await self.settle()
        while self._heap and self._heap[0][0] <= target:
            when, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback(*timer.args)
            await self.settle()
        self._now = target
        await self.settle()


async def sleep(clock: Clock, seconds: float) -> None:
    """Wait ``seconds`` on ``clock`` (a ``ManualClock`` in tests): retries and
    throttles wait through here, never on ``asyncio.sleep`` directly."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handle = clock.call_later(seconds, _wake, future)
    try:
        await future
    finally:
        handle.cancel()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
