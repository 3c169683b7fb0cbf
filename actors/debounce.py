"""DebounceWindow: collects one burst of messages for its session.

A trailing window (``window`` of quiet closes it) capped by ``max_wait`` from
the first message and by ``max_batch`` messages. Deadlines count from when
each message arrived, not from when the busy session forwarded it. One timer
is armed and re-checked when it fires (re-armed only if the deadline moved),
instead of being cancelled and re-armed per message. When due, the window
tells its session ``Due(name, generation)``; the session takes the burst with
an ask. A session that already flushed this window ignores a late ``Due``:
that is the generation fence.
"""

from __future__ import annotations

from typing import Any

from callboard.actors.messages import Add, Due, Inbound, TakeAll
from callboard.engine.actor import Actor
from callboard.engine.ref import ActorRef


class _Tick:
    __slots__ = ()


_TICK = _Tick()


class DebounceWindow(Actor):
    mailbox_capacity = None

    def __init__(
        self,
        session: ActorRef,
        window_name: str,
        generation: int,
        window: float,
        max_wait: float,
        max_batch: int,
    ) -> None:
        self.session = session
        self.window_name = window_name
        self.generation = generation
        self.window = window
        self.max_wait = max_wait
        self.max_batch = max_batch
        self.burst: list[Inbound] = []
        self.first_at = 0.0
        self.last_at = 0.0
        self.armed = False
        self.due_sent = False

    def _deadline(self) -> float:
        return min(self.last_at + self.window, self.first_at + self.max_wait)

    def _due(self) -> None:
        if not self.due_sent:
            self.due_sent = True
            self.session.tell(Due(self.window_name, self.generation))

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Add):
            inbound = message.inbound
            if not self.burst:
                self.first_at = inbound.arrived
            self.last_at = max(self.last_at, inbound.arrived)
            self.burst.append(inbound)
            if message.close_now or len(self.burst) >= self.max_batch:
                self._due()
            elif not self.armed and not self.due_sent:
                self._arm()
            return None
        if message is _TICK:
            self.armed = False
            if not self.due_sent:
                self._arm()
            return None
        if isinstance(message, TakeAll):
            burst, self.burst = self.burst, []
            self.context.stop()
            return burst
        raise TypeError(f"unexpected message {message!r}")

    def _arm(self) -> None:
        remaining = self._deadline() - self.context.system.clock.now()
        if remaining <= 0:
            self._due()
            return
        self.armed = True
        self.context.schedule_once(remaining, _TICK, key="tick")
