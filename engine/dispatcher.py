"""Dispatcher: a pool of worker tasks that run actors with queued messages.

Creating an asyncio task for every actor activation costs about 3-5 us plus GC
pressure, which dominates when 100k sessions each get a message. Instead a few
worker tasks pop runnable actors from one FIFO run queue and process up to
``THROUGHPUT`` messages of each. A worker that is suspended inside an actor's
``receive`` (awaiting I/O) would hold up the queue, so whenever the run queue
is non-empty and no worker is runnable, a parked worker is woken or a new one
started. The pool therefore grows to the number of actors awaiting at once,
and shrinks back to ``MAX_PARKED`` idle workers.

Inside ``receive``, ``asyncio.current_task()`` is the worker: ``asyncio.timeout``
and friends work, and a cancellation aimed at one actor is caught and absorbed
by that actor's cell without ending the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from callboard.engine.cell import ActorCell

log = logging.getLogger("callboard.engine")

#: Messages a worker handles before it yields to the event loop. Small, so I/O
#: (websocket acks, journal syncs) waits little behind actor work: against 64 it
#: cut ack p99 under steady load by half or more, at the same saturated
#: throughput; raw tells to a few busy actors pay for it (about 1M/s, not 2M/s).
THROUGHPUT = 16
#: Idle workers kept for the next burst.
MAX_PARKED = 16


class Dispatcher:
    __slots__ = (
        "active",
        "check_pending",
        "loop",
        "parked",
        "runq",
        "starting",
        "workers",
        "yielding",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.runq: deque[ActorCell] = deque()
        self.workers: set[asyncio.Task[None]] = set()
        self.parked: list[asyncio.Future[None]] = []
        self.starting = 0  # workers woken or created that have not run yet
        self.yielding = 0  # workers paused between batches, about to come back
        self.check_pending = False
        self.active = 0  # actors queued or being processed

    def schedule(self, cell: ActorCell) -> None:
        """Queue an idle actor; make sure some worker will reach it."""
        cell.scheduled = True
        self.active += 1
        self.runq.append(cell)
        self._ensure_worker()

    def requeue(self, cell: ActorCell) -> None:
        """Put back an actor that has more to do after its turn (already counted)."""
        self.runq.append(cell)

    def done(self, cell: ActorCell) -> None:
        cell.scheduled = False
        self.active -= 1

    def _ensure_worker(self) -> None:
        if self.check_pending or self.starting or self.yielding:
            return
        if asyncio.current_task(self.loop) in self.workers:  # the loop given: no lookup of it
            # A running worker will come back to the queue unless it suspends
            # in a receive; look again once it has yielded.
            self.check_pending = True
            self.loop.call_soon(self._check)
            return
        self._start_one()

    def _check(self) -> None:
        self.check_pending = False
        if self.runq and not self.starting and not self.yielding:
            self._start_one()

    def _start_one(self) -> None:
        self.starting += 1
        if self.parked:
            self.parked.pop().set_result(None)
            return
        task = self.loop.create_task(self._work())
        self.workers.add(task)

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        self.starting -= 1
        runq = self.runq
        handled = 0
        waiter: asyncio.Future[None] | None = None
        try:
            while True:
                while runq:
                    cell = runq.popleft()
                    if runq and not self.check_pending:
                        self.check_pending = True
                        self.loop.call_soon(self._check)
                    handled += await cell.run(me, THROUGHPUT)
                    if handled >= THROUGHPUT:
                        handled = 0
                        self.yielding += 1
                        try:
                            await asyncio.sleep(0)
                        finally:
                            self.yielding -= 1
                if len(self.parked) >= MAX_PARKED:
                    return
                waiter = self.loop.create_future()
                self.parked.append(waiter)
                await waiter
                waiter = None
                self.starting -= 1
        finally:
            self.workers.discard(me)
            if waiter is not None:
                if waiter in self.parked:
                    self.parked.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self.starting -= 1

    def cancel_all(self) -> list[asyncio.Task[None]]:
        """Forced shutdown: cancel every worker."""
        tasks = list(self.workers)
        for task in tasks:
            task.cancel()
        return tasks
