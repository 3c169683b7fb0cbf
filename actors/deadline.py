"""RunDeadline: the deadline of a session's handler runs, kept by one watchdog timer.

``asyncio.timeout`` per run arms and cancels a loop timer every run (and builds
a context object each time); at thousands of runs a second that showed up in
profiles. Instead a run stores its deadline and the task running it, and one
timer per session checks them when it fires: past the deadline, it cancels the
task; otherwise it re-arms for the stored deadline; with no run in progress it
lapses until the next run arms it. Same idea as ``DebounceWindow``'s timer.

A run cancelled this way ends with ``end()`` true, and the session counts a
``CancelledError`` from it as a missed deadline, exactly where ``asyncio.timeout``
raised ``TimeoutError``. Any other cancellation (an interrupting message,
shutdown) is passed on, using the task's cancel count as ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio

from callboard.engine.clock import Clock, TimerHandle


class RunDeadline:
    """One session's handler deadline: ``begin`` a run, ``end`` it (in a ``finally``)."""

    __slots__ = ("_cancelling", "_clock", "_deadline", "_fired", "_loop", "_task", "_timer", "_timer_at")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        #: the running loop, looked up on the first run: ``asyncio.current_task()`` without
        #: it looks the loop up again, which costs more than the rest of ``begin``
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self._deadline = 0.0
        self._cancelling = 0
        self._fired = False
        self._timer: TimerHandle | None = None
        self._timer_at = 0.0

    def begin(self, timeout: float) -> None:
        """The current task starts a run that must end within ``timeout`` seconds."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None, "a run is a task"
        self._task = task
        self._cancelling = task.cancelling()
        self._fired = False
        self._deadline = deadline = self._clock.now() + timeout
        if self._timer is None or self._timer_at > deadline:
            self._arm(deadline)

    def end(self) -> bool:
        """The run is over; True when the watchdog cancelled it and nothing else
        did (its cancel is taken back). The timer lapses when it next fires."""
        task, self._task = self._task, None
        if not self._fired or task is None:
            return False
        self._fired = False
        return task.uncancel() <= self._cancelling

    def close(self) -> None:
        """The session stops: no timer outlives it."""
        self._task = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._clock.call_later(when - self._clock.now(), self._check)

    def _check(self) -> None:
        self._timer = None
        task = self._task
        if task is None or task.done():
            return  # idle: the next run arms it again
        if self._clock.now() < self._deadline:
            self._arm(self._deadline)
            return
        if not self._fired:
            self._fired = True
            task.cancel(msg="handler deadline")
